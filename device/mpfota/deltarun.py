# The streamed delta apply's interpreter (deltastream._work_py) in viper: ops, entries, the run
# cache, nonzero diff bytes and literal bytes of a unit's decoded stream, worked through until the
# output range is full, calling back for base bytes and for more decoded bytes. Step for step the
# same as the Python version, which CPython and ports without viper use; the tests run both on
# the same patches. st: see deltastream (the _POS.._AVAIL indices; the cache from st[6], its
# lengths from st[10]: deltastream.RUN_CACHE = 4). Signed values (the base position and the
# pending seek) are kept as 32-bit patterns: the (v ^ s) - s below sign-extends them on a 64-bit
# port and changes nothing on a 32-bit one.
import micropython


@micropython.viper
def work(out: ptr8, raw: ptr8, st: ptr32, base, more) -> int:
    sgn = 1
    sgn <<= 31  # at run time: a folded constant this large would be an object
    pos = st[0]
    end = st[1]
    zeros = st[2]
    nonzero = st[3]
    run = st[4]
    short = st[5]
    x = st[14]
    y = st[15]
    z = (st[16] ^ sgn) - sgn
    old = (st[17] ^ sgn) - sgn
    ops = st[18]
    size = st[19]
    i = st[20]
    k = st[21]
    avail = st[22]
    at = 0
    r = 0
    while i < k:
        if r:
            if r == 1:
                # Decoded bytes ran out: the unread tail (part of an op or an entry) goes to
                # end at raw[16] (deltastream.RAW_TAIL), and more() decodes after it.
                j = 16 - (end - pos)  # end >= 16: the tail moves down (or stays)
                end = j
                while j < 16:
                    raw[j] = raw[pos]
                    pos += 1
                    j += 1
                pos = end
                n = int(more())
                if n <= 0:
                    r = -5
                    break
                end = 16 + n
            else:
                base(at, i, avail - i)  # the base bytes into out[i:avail]
            r = 0
        if i < avail:
            # Base bytes are in out[i:avail]: add the diff the entries describe.
            if zeros:
                s = avail - i
                if zeros < s:
                    s = zeros
                zeros -= s
                i += s
            elif nonzero and short:
                while nonzero and i < avail:
                    out[i] = out[i] + run
                    run = run >> 8
                    nonzero -= 1
                    i += 1
            elif nonzero:
                s = avail - i
                if nonzero < s:
                    s = nonzero
                if end - pos < s:
                    s = end - pos
                    if not s:
                        r = 1
                        continue
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
                        complete = 2
                        break
                if complete == 2:
                    r = -1
                    break
                if not complete:
                    r = 1
                    continue
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
                            complete = 2
                            break
                    if complete == 2:
                        r = -1
                        break
                    if not complete:
                        r = 1
                        continue
                if hit < 0 and 0 < n and n <= 4 and end - p < n:
                    r = 1
                    continue
                zeros = v >> 3
                nonzero = n
                if not zeros and not nonzero:
                    r = -2
                    break
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
        elif x:
            # The op's next base bytes, read into out[i:i + s] at the top of the loop.
            s = k - i
            if x < s:
                s = x
            at = old
            old += s
            x -= s
            avail = i + s
            r = 2
            continue
        elif y:
            s = k - i
            if y < s:
                s = y
            if end - pos < s:
                s = end - pos
                if not s:
                    r = 1
                    continue
            j = 0
            while j < s:
                out[i + j] = raw[pos + j]
                j += 1
            pos += s
            i += s
            y -= s
        else:
            # The next op: three varints, taken only when all of them are in raw.
            p = pos
            got = 0
            nx = 0
            ny = 0
            v = 0
            shift = 0
            while p < end:
                b = raw[p]
                p += 1
                v |= (b & 0x7F) << shift
                if b < 0x80:
                    if got == 0:
                        nx = v
                    elif got == 1:
                        ny = v
                    got += 1
                    if got == 3:
                        break
                    v = 0
                    shift = 0
                else:
                    shift += 7
                    if shift == 28:
                        got = 4
                        break
            if got == 4:
                r = -1
                break
            if got < 3:
                r = 1
                continue
            t = nx + ny
            if not t or t > ops:
                st[23] = t
                r = -3
                break
            st[17] = old + z  # 32 bits, as the Python twin wraps it
            old = (st[17] ^ sgn) - sgn
            if nx and (old < 0 or old > size - nx):
                st[23] = nx
                r = -4
                break
            ops -= t
            x = nx
            y = ny
            z = (v >> 1) ^ (0 - (v & 1))
            pos = p
    st[0] = pos
    st[1] = end
    st[2] = zeros
    st[3] = nonzero
    st[4] = run
    st[5] = short
    st[14] = x
    st[15] = y
    st[16] = z
    st[17] = old
    st[18] = ops
    st[20] = i
    st[22] = avail
    return r
