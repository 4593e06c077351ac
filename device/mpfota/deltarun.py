# The inner loop of the streamed delta apply (deltastream._add_runs_py) in viper: adding the
# nonzero diff bytes to the base bytes is most of the apply's work, about one run per 30 output
# bytes. Step for step the same as the Python version, which CPython and ports without viper
# use; the tests run both on the same patches.
import micropython


@micropython.viper
def add_runs(out: ptr8, i: int, k: int, raw: ptr8, st: ptr32) -> int:
    pos = st[0]
    end = st[1]
    zeros = st[2]
    nonzero = st[3]
    while i < k:
        if zeros:
            s = k - i
            if zeros < s:
                s = zeros
            zeros -= s
            i += s
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
            n = v & 3
            if not n:
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
            zeros = v >> 2
            nonzero = n
            if not zeros and not nonzero:
                return -1
            pos = p
    st[0] = pos
    st[2] = zeros
    st[3] = nonzero
    return i
