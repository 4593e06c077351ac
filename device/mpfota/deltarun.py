# The inner loop of the streamed delta apply (deltastream._add_runs_py) in viper: adding the
# nonzero diff bytes to the base bytes is most of the apply's work, about one run per 30 output
# bytes. Step for step the same as the Python version, which CPython and ports without viper
# use; the tests run both on the same patches. st: see _add_runs_py (cache from st[6], its
# lengths from st[10]: deltastream.RUN_CACHE = 4).
import micropython


@micropython.viper
def add_runs(out: ptr8, i: int, k: int, raw: ptr8, st: ptr32) -> int:
    pos = st[0]
    end = st[1]
    zeros = st[2]
    nonzero = st[3]
    run = st[4]
    short = st[5]
    while i < k:
        if zeros:
            s = k - i
            if zeros < s:
                s = zeros
            zeros -= s
            i += s
        elif nonzero and short:
            while nonzero and i < k:
                out[i] = out[i] + run
                run = run >> 8
                nonzero -= 1
                i += 1
        elif nonzero:
            s = k - i
            if nonzero < s:
                s = nonzero
            if end - pos < s:
                s = end - pos
                if not s:
                    break
            j = 0
            while j < s:
                out[i + j] = out[i + j] + raw[pos + j]
                j += 1
            pos += s
            i += s
            nonzero -= s
        else:
            p = pos
            v = 0
            shift = 0
            complete = 0
            while p < end:
                b = raw[p]
                p += 1
                v |= (b & 0x7F) << shift
                if b < 0x80:
                    complete = 1
                    break
                shift += 7
                if shift == 28:  # deltastream.MAX_VARINT_BYTES varint bytes
                    return -1
            if not complete:
                break
            code = v & 7
            n = code
            hit = -1
            if code >= 4:
                hit = code - 4
                n = st[10 + hit]
            elif not code:
                shift = 0
                complete = 0
                while p < end:
                    b = raw[p]
                    p += 1
                    n |= (b & 0x7F) << shift
                    if b < 0x80:
                        complete = 1
                        break
                    shift += 7
                    if shift == 28:
                        return -1
                if not complete:
                    break
            if hit < 0 and 0 < n and n <= 4 and end - p < n:
                break
            zeros = v >> 3
            nonzero = n
            if not zeros and not nonzero:
                return -1
            short = 0
            if hit >= 0:
                run = st[6 + hit]
            elif n <= 4 and n:
                run = 0
                j = 0
                while j < n:
                    run |= raw[p + j] << (8 * j)
                    j += 1
                p += n
                hit = 3
            if hit >= 0:
                j = hit
                while j > 0:
                    st[6 + j] = st[5 + j]
                    st[10 + j] = st[9 + j]
                    j -= 1
                st[6] = run
                st[10] = n
                short = 1
            pos = p
    st[0] = pos
    st[2] = zeros
    st[3] = nonzero
    st[4] = run
    st[5] = short
    return i
