# The mpfota delta format 2 (docs/delta.md, "Streamed patches"): a patch applied as it arrives,
# in constant memory, with nothing staged on the filesystem, resumable at sector boundaries.
#
# Pure logic, no board access: it runs under MicroPython (fed by the network, reading the base
# from the running slot, writing through the slot door) and under CPython (the host generator
# checks every patch with it; the tests drive it with hypothesis).
#
# A patch is a 92-byte header and `units` units back to back. A unit is an 18-byte unit header
# and one raw DEFLATE stream of its own (so that the apply can restart at any unit):
#   ops     varint x, varint y, varint zigzag(z): x bytes are old[pos..] + diff, then y literal
#           bytes, then pos += x + z
#   entries read when the diff needs one: varint zeros << 3 | code, then nonzero diff bytes:
#           code 1..3 that many follow; 0: a second varint holds the count (any), they follow;
#           4..7: the run in that place of the cache of the last RUN_CACHE short runs (1..4
#           bytes, most recently used first), nothing follows (relocations repeat a few runs)
#   bytes   the nonzero diff bytes and the literal bytes, where the apply reaches them
# A unit rebuilds `out_len` bytes of the new image from `old_pos` on; its packed bytes carry a
# CRC-32 (a damaged patch is refused before its unit is applied) and so do its output bytes (a
# wrong base shows up in the first unit that reads a differing byte).
import binascii
import struct

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

MAGIC = b"MPFD"
VERSION = const(2)
HEADER_SIZE = const(92)
UNIT_SIZE = const(18)
MIN_WBITS = const(9)
MAX_WBITS = const(15)
MAX_VARINT_BYTES = const(4)  # 28 bits: every size and seek of a slot image fits
RAW_BUF = const(512)  # decoded bytes held at a time
RUN_CACHE = const(4)  # short diff runs an entry can repeat by number (codes 4..7)
_MAX_IMAGE = const(1 << 30)  # larger images are refused: positions stay well inside 32 bits

# The interpreter's state (Applier.st, array "I"; _work_py and deltarun.work), by index:
_POS = const(0)  # next decoded byte in raw
_END = const(1)  # end of the decoded bytes in raw
_ZEROS = const(2)  # zero diff bytes left in the current entry
_NONZERO = const(3)  # nonzero diff bytes left in it
_RUN = const(4)  # a short run's bytes not added yet, lowest first
_SHORT = const(5)  # 1: the nonzero bytes come from _RUN
_CACHE = const(6)  # the cached short runs (RUN_CACHE), then their lengths (RUN_CACHE)
_X = const(14)  # base bytes of the current op not asked for yet
_Y = const(15)  # its literal bytes not written yet
_Z = const(16)  # its seek, applied at the next op (signed, as 32 bits)
_OLD = const(17)  # the next base position (signed, as 32 bits)
_OPS = const(18)  # output bytes of the unit no op has claimed yet
_BASE_SIZE = const(19)  # bytes of the base image
_I = const(20)  # output position in the sector buffer
_K = const(21)  # where this call's output ends
_AVAIL = const(22)  # base bytes are in out[_I:_AVAIL] (the diff not added yet)
_REQ = const(23)  # refusals: the op's length
# ... and the Applier's own numbers after them:
_FILL = const(24)  # bytes of the current header, unit header or unit taken so far
_LEFT = const(25)  # output bytes of the unit not written yet
_PCRC = const(26)  # CRC-32 of the unit's packed bytes so far
_OCRC = const(27)  # CRC-32 of its output so far
_SRC = const(28)  # size of the unit buffer
_CKPT = const(29)  # patch offset of a checkpoint not given to the sink yet (0: none)
ST_LEN = const(30)
_ROOM_WBITS = const(10)  # the window of the decoder the room is made for (the generator's)
# raw[:RAW_TAIL] holds the unread tail of the decoded bytes (at most 11: part of an op header or
# an entry), in front of the bytes decoded next.
RAW_TAIL = const(16)

# What the interpreter returns.
_FULL = const(0)  # the output range is full
_MORE = const(1)  # (inside) decode more bytes into raw
_BASE = const(2)  # (inside) read base bytes
_E_VARINT = const(-1)
_E_EMPTY = const(-2)
_E_OP = const(-3)
_E_SEEK = const(-4)
_E_END = const(-5)  # more() found no more decoded bytes

# magic, version, wbits, unit_max (largest packed unit), sector_log2 (checkpoint grain),
# 3 reserved, from_size, from_sha256, to_size, to_sha256, units; then the header CRC-32.
_HEAD = "<4sBBHBBHI32sI32sI"
_UNIT = "<HIiII"  # packed length, out_len, old_pos, CRC-32 of the packed bytes, of the output

# Phases of the Applier.
_HEADER = const(0)
_UNIT_HEAD = const(1)
_UNIT_BODY = const(2)
_APPLY = const(3)
_DONE = const(4)


class PatchError(ValueError):
    # A malformed or inapplicable patch; the message says why. wrong_base: it was made for
    # another base image (the device reports mpfota.errors.BASE).
    def __init__(self, msg, wrong_base=False):
        super().__init__(msg)
        self.wrong_base = wrong_base


def _crc32(data, crc=0):
    return binascii.crc32(data, crc) & 0xFFFFFFFF


class Header:
    def __init__(self, wbits, unit_max, sector, from_size, from_sha256, to_size, to_sha256,
                 units):
        self.wbits = wbits
        self.unit_max = unit_max  # bytes of the largest unit's DEFLATE data: the unit buffer
        self.sector = sector  # units that end on a multiple of this are checkpoints
        self.from_size = from_size
        self.from_sha256 = from_sha256
        self.to_size = to_size
        self.to_sha256 = to_sha256
        self.units = units


def pack_header(h):
    log2 = 0
    while 1 << log2 < h.sector:
        log2 += 1
    out = struct.pack(_HEAD, MAGIC, VERSION, h.wbits, h.unit_max, log2, 0, 0, h.from_size,
                      h.from_sha256, h.to_size, h.to_sha256, h.units)
    return out + struct.pack("<I", _crc32(out))


def parse_header(data):
    if len(data) < HEADER_SIZE:
        raise PatchError("truncated: %d bytes, a patch header has %d" % (len(data), HEADER_SIZE))
    if bytes(data[:4]) != MAGIC:
        raise PatchError("not an mpfota delta patch (magic %r)" % bytes(data[:4]))
    (_, version, wbits, unit_max, log2, r1, r2, from_size, from_sha, to_size, to_sha,
     units) = struct.unpack_from(_HEAD, data, 0)
    if version != VERSION:
        raise PatchError("unsupported format version %d (this reader reads %d)"
                         % (version, VERSION))
    (want,) = struct.unpack_from("<I", data, HEADER_SIZE - 4)
    if _crc32(memoryview(data)[:HEADER_SIZE - 4]) != want:
        raise PatchError("header CRC mismatch (corrupt patch)")
    if r1 or r2 or not MIN_WBITS <= wbits <= MAX_WBITS or not 9 <= log2 <= 16:
        raise PatchError("unsupported layout (window %d, sector 2^%d)" % (wbits, log2))
    if not from_size or not to_size or not units or not unit_max:
        raise PatchError("empty base, result or unit")
    if units > to_size:
        raise PatchError("more units (%d) than result bytes" % units)
    return Header(wbits, unit_max, 1 << log2, from_size, bytes(from_sha), to_size,
                  bytes(to_sha), units)


def pack_unit(packed_len, out_len, old_pos, packed_crc, out_crc):
    return struct.pack(_UNIT, packed_len, out_len, old_pos, packed_crc, out_crc)


def _work_py(out, raw, st, base, more):
    # Work through the decoded bytes raw[st[_POS]:st[_END]] of a unit, writing out[st[_I]:
    # st[_K]]: op headers, entries (the run cache at st[_CACHE:]), nonzero diff bytes added to
    # the base bytes in out, literal bytes copied. base(pos, i, n) puts the n base bytes at pos
    # into out[i:i + n]; more() decodes bytes into raw[RAW_TAIL:] and returns how many (the
    # unread tail, part of an op header or an entry, is moved to end at raw[RAW_TAIL] first).
    # Returns _FULL once out is full up to st[_K], an _E_* code (< 0) for a bad stream.
    # deltarun.work is the viper twin: the two must stay step for step the same (signed values
    # kept as 32-bit patterns in st, wrapped the same).
    pos = st[_POS]
    end = st[_END]
    zeros = st[_ZEROS]
    nonzero = st[_NONZERO]
    run = st[_RUN]
    short = st[_SHORT]
    x = st[_X]
    y = st[_Y]
    z = (st[_Z] ^ 0x80000000) - 0x80000000
    old = (st[_OLD] ^ 0x80000000) - 0x80000000
    ops = st[_OPS]
    size = st[_BASE_SIZE]
    i = st[_I]
    k = st[_K]
    avail = st[_AVAIL]
    at = 0
    r = _FULL
    while i < k:
        if r:
            if r == _MORE:
                # The unread tail goes to raw[RAW_TAIL - len:RAW_TAIL], more bytes after it.
                j = RAW_TAIL - (end - pos)  # end >= RAW_TAIL: the tail moves down (or stays)
                end = j
                while j < RAW_TAIL:
                    raw[j] = raw[pos]
                    pos += 1
                    j += 1
                pos = end
                n = more()
                if n <= 0:
                    r = _E_END
                    break
                end = RAW_TAIL + n
            else:
                base(at, i, avail - i)  # the base bytes into out[i:avail]
            r = _FULL
        if i < avail:
            # Base bytes are in out[i:avail]: add the diff the entries describe.
            if zeros:
                s = avail - i
                if zeros < s:
                    s = zeros
                zeros -= s
                i += s
            elif nonzero and short:
                # A short run's bytes come from the register, lowest byte first.
                while nonzero and i < avail:
                    out[i] = (out[i] + run) & 0xFF
                    run >>= 8
                    nonzero -= 1
                    i += 1
            elif nonzero:
                s = avail - i
                if nonzero < s:
                    s = nonzero
                if end - pos < s:
                    s = end - pos
                    if not s:
                        r = _MORE
                        continue
                for j in range(s):
                    out[i + j] = (out[i + j] + raw[pos + j]) & 0xFF
                pos += s
                i += s
                nonzero -= s
            else:
                # An entry: one varint, or two when its code is 0, and then a short run's
                # bytes; taken only when all of that is in raw.
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
                    if shift == 7 * MAX_VARINT_BYTES:
                        complete = 2
                        break
                if complete == 2:
                    r = _E_VARINT
                    break
                if not complete:
                    r = _MORE
                    continue
                code = v & 7
                n = code
                hit = -1
                if code >= 4:
                    hit = code - 4
                    n = st[_CACHE + RUN_CACHE + hit]
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
                        if shift == 7 * MAX_VARINT_BYTES:
                            complete = 2
                            break
                    if complete == 2:
                        r = _E_VARINT
                        break
                    if not complete:
                        r = _MORE
                        continue
                if hit < 0 and 0 < n <= 4 and end - p < n:
                    r = _MORE
                    continue
                zeros = v >> 3
                nonzero = n
                if not zeros and not nonzero:
                    r = _E_EMPTY  # an entry that covers nothing would never end
                    break
                short = 0
                if hit >= 0:
                    run = st[_CACHE + hit]
                elif n <= 4 and n:
                    run = 0
                    for j in range(n):
                        run |= raw[p + j] << (8 * j)
                    p += n
                    hit = RUN_CACHE - 1  # a new run: the oldest one goes
                if hit >= 0:
                    # Move to front: the runs most recently used get the smallest codes.
                    for j in range(hit, 0, -1):
                        st[_CACHE + j] = st[_CACHE + j - 1]
                        st[_CACHE + RUN_CACHE + j] = st[_CACHE + RUN_CACHE + j - 1]
                    st[_CACHE] = run
                    st[_CACHE + RUN_CACHE] = n
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
            r = _BASE
            continue
        elif y:
            s = k - i
            if y < s:
                s = y
            if end - pos < s:
                s = end - pos
                if not s:
                    r = _MORE
                    continue
            out[i:i + s] = raw[pos:pos + s]
            pos += s
            i += s
            y -= s
        else:
            # The next op: three varints, taken only when all of them are in raw.
            p = pos
            got = nx = ny = v = shift = 0
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
                    v = shift = 0
                else:
                    shift += 7
                    if shift == 7 * MAX_VARINT_BYTES:
                        got = 4
                        break
            if got == 4:
                r = _E_VARINT
                break
            if got < 3:
                r = _MORE
                continue
            t = nx + ny
            if not t or t > ops:
                st[_REQ] = t
                r = _E_OP
                break
            # The seek of the op before takes effect now (32 bits, as in viper).
            old = ((old + z) & 0xFFFFFFFF ^ 0x80000000) - 0x80000000
            if nx and (old < 0 or old > size - nx):
                st[_REQ] = nx
                r = _E_SEEK
                break
            ops -= t
            x = nx
            y = ny
            z = (v >> 1) ^ -(v & 1)
            pos = p
    st[_POS] = pos
    st[_END] = end
    st[_ZEROS] = zeros
    st[_NONZERO] = nonzero
    st[_RUN] = run
    st[_SHORT] = short
    st[_X] = x
    st[_Y] = y
    st[_Z] = z & 0xFFFFFFFF
    st[_OLD] = old & 0xFFFFFFFF
    st[_OPS] = ops
    st[_I] = i
    st[_AVAIL] = avail
    return r


try:
    from mpfota.deltarun import work
except (ImportError, SyntaxError, ValueError):  # CPython; a port without viper fails to
    # compile it; an .mpy of another architecture is refused with ValueError
    work = _work_py
else:
    if not globals().get("KEEP_TWIN"):
        # A board with viper never runs the twin: its bytecode (1.5 KB of RAM) goes. The
        # device tests load this module again from its source with KEEP_TWIN set.
        del _work_py


def _unit_source(size):
    # One buffer for the DEFLATE data of a unit, kept for the whole patch: a BytesIO, because
    # the decoder reads its source a byte at a time and a native stream makes that cheap.
    import io

    try:
        return io.BytesIO(size)  # MicroPython: preallocated
    except TypeError:  # CPython
        return io.BytesIO()


def take_blocks(unit_max, decoder):
    # The Applier's blocks of more than a few hundred bytes, taken together (for
    # Applier(blocks=...), with the same unit_max): a caller takes them first, while the
    # heap's one large hole is whole. The unit buffer (unit_max bytes), the decoded-bytes
    # buffer, and room for the first decoder: a decoder of the empty unit buffer, made to take
    # its state and window (their true size on any port: 2.4 KB at w10 on a 64-bit one) and
    # dropped just before the first real decoder is made, which then finds a hole its size.
    src = _unit_source(unit_max)
    raw = bytearray(RAW_TAIL + RAW_BUF)
    room = decoder(src, _ROOM_WBITS)
    try:
        room.readinto(raw)  # nothing to read: it ends in EOFError once its blocks are made
    except (OSError, EOFError):
        pass
    return [src, room, raw]


class Applier:
    """Rebuild the new image from the base and a patch that arrives in pieces.

    feed(mv) takes patch bytes and returns how many it used: it stops once a unit is complete,
    and step() then applies up to one sector of it per call (True while there is more), so a
    caller can yield to the event loop in between (apply_stream does). want() says how many
    bytes feed() takes next before it stops (so a caller may read them into a scratch area
    that step() then overwrites). end() says the patch is over. The sink takes the output the
    way the slot door does: space() is the free part of its sector buffer, advance(n) takes n
    bytes written there (a full sector goes to flash); check(header), when the sink has it,
    may refuse the patch's sizes before anything is made; checkpoint(state) is about a unit
    ending on a sector boundary, where state = (patch offset, output offset, next unit) is
    what resume() needs to carry on from there: it comes once the next unit's bytes are all
    in, before that unit is applied (nothing is written in between). read_old(pos, mv) fills
    mv with base bytes (or read_old is the base's partition: readblocks(block, buf, offset),
    ioctl(5, 0) its block size); decoder(src, wbits) reads the raw DEFLATE data in src
    (deflate.DeflateIO on the board). Anything wrong raises PatchError."""

    def __init__(self, sink, read_old, decoder, unit_max=0, blocks=None):
        # unit_max: take the large blocks (take_blocks()) now, while the heap is still in one
        # piece, with a unit buffer of unit_max bytes (the patch header may ask for a bigger
        # one later), unless `blocks` gives them. The numbers live in st and the unit header
        # in head: an instance of more than 17 attributes has a dict the heap's small holes
        # cannot hold (12 more cost 4 KiB of heap).
        import array

        if blocks is None and unit_max:
            blocks = take_blocks(unit_max, decoder)
        if blocks is not None:
            # The room for the first decoder is dropped just before that decoder is made:
            # later the heap may only have small holes left, and a decoder's blocks must each
            # be in one piece. When the decoder finds no such hole the collection its
            # allocation starts frees the room for it.
            self.src, self.room, self.raw = blocks
        else:
            self.src = self.room = None
            self.raw = bytearray(RAW_TAIL + RAW_BUF)
        self.st = array.array("I", [0] * ST_LEN)  # the interpreter's state, then _FILL.._CKPT
        self.st[_SRC] = unit_max
        self.head = bytearray(HEADER_SIZE)  # the patch header, then each unit header
        self.sink = sink
        self.decoder = decoder
        self.dec = None
        self.out = None  # the sector buffer space step() fills
        self.cb_base = self._base_call(read_old)  # the interpreter's calls: for every op,
        self.cb_more = self._more_call()  # for every RAW_BUF decoded bytes
        self.h = None
        self.header = None  # the patch header, for resume records (head is reused)
        self.phase = _HEADER
        self.patch_at = 0  # patch bytes used
        self.out_at = 0  # output bytes written to the sink
        self.unit = 0  # units applied

    def resume(self, header, state):
        # Carry on from a checkpoint: header = the patch's first HEADER_SIZE bytes, state as
        # given to sink.checkpoint(); feed() then takes the patch from state[0] on.
        self._start(header)
        self.patch_at, self.out_at, self.unit = state
        if not 0 < self.out_at < self.h.to_size or self.out_at % self.h.sector:
            raise PatchError("checkpoint at output %d does not fit this patch" % self.out_at)

    def _start(self, header):
        h = parse_header(header)
        if h.from_size >= _MAX_IMAGE or h.to_size >= _MAX_IMAGE:
            raise PatchError("unsupported layout (images of %d and %d bytes)"
                             % (h.from_size, h.to_size))
        check = getattr(self.sink, "check", None)
        if check is not None:
            check(h)  # the sink refuses what it cannot hold, before any output is made
        self.h = h
        self.header = bytes(header[:HEADER_SIZE])
        st = self.st
        if h.unit_max > st[_SRC]:
            self.src = None
            self.src = _unit_source(h.unit_max)
            st[_SRC] = h.unit_max
        self.phase = _UNIT_HEAD
        st[_FILL] = 0

    # --- taking patch bytes ----------------------------------------------------------------

    def want(self):
        # How many patch bytes feed() takes before it stops (0 while a unit is being applied;
        # 1 after the last unit: any byte more is refused).
        phase = self.phase
        fill = self.st[_FILL]
        if phase == _HEADER:
            return HEADER_SIZE - fill
        if phase == _UNIT_HEAD:
            return UNIT_SIZE - fill
        if phase == _UNIT_BODY:
            return struct.unpack_from("<H", self.head, 0)[0] - fill
        return 1 if phase == _DONE else 0

    def feed(self, mv, n=None):
        # Take patch bytes from mv (its first n when given); returns how many were used.
        if n is None:
            n = len(mv)
        st = self.st
        used = 0
        while used < n:
            phase = self.phase
            fill = st[_FILL]
            if phase == _HEADER or phase == _UNIT_HEAD:
                want = HEADER_SIZE if phase == _HEADER else UNIT_SIZE
                k = min(want - fill, n - used)
                self.head[fill:fill + k] = mv[used:used + k]
                st[_FILL] = fill + k
                used += k
                if fill + k == want:
                    if phase == _HEADER:
                        self._start(self.head)
                    else:
                        self._open_unit()
            elif phase == _UNIT_BODY:
                packed = struct.unpack_from("<H", self.head, 0)[0]
                k = min(packed - fill, n - used)
                part = mv[used:used + k] if used or k < len(mv) else mv
                self.src.write(part)
                st[_PCRC] = _crc32(part, st[_PCRC])
                st[_FILL] = fill + k
                used += k
                if fill + k == packed:
                    self._begin_apply()
                    break
            elif phase == _DONE:
                raise PatchError("patch longer than announced (data after the last unit)")
            else:
                break  # applying: step() first
        self.patch_at += used
        return used

    def end(self):
        # The patch stream is over: it must have ended exactly after the last unit.
        if self.phase != _DONE:
            raise PatchError("patch cut short: stream ended at byte %d, in unit %d of %d"
                             % (self.patch_at, self.unit + 1, self.h.units if self.h else 0))

    def _open_unit(self):
        # The unit header is in head (kept there until the unit is applied).
        h = self.h
        packed, left = struct.unpack_from("<HI", self.head, 0)
        if not 0 < packed <= h.unit_max or not left:
            raise PatchError("unit %d: bad unit header (%d packed bytes, %d out)"
                             % (self.unit, packed, left))
        if left > h.to_size - self.out_at:
            raise PatchError("output longer than announced (%d bytes)" % h.to_size)
        st = self.st
        st[_LEFT] = left
        st[_PCRC] = 0
        st[_FILL] = 0
        self.src.seek(0)
        self.phase = _UNIT_BODY

    def _begin_apply(self):
        st = self.st
        _, left, old, want = struct.unpack_from("<HIiI", self.head, 0)
        if st[_PCRC] != want:
            raise PatchError("unit %d: CRC mismatch (corrupt patch)" % self.unit)
        for i in range(_FILL):
            st[i] = 0
        st[_OLD] = old & 0xFFFFFFFF
        st[_OPS] = left
        st[_BASE_SIZE] = self.h.from_size
        st[_OCRC] = 0
        self.src.seek(0)
        # The new decoder's state and window (2.4 KB at w10, each block in one piece) take the
        # hole the last one leaves (or the room, for the first): its object is made while the
        # last one is still held and nothing else long-lived is made before its blocks (when
        # the heap is short, the collection that allocation starts frees the hole just for
        # them).
        self.dec = self.decoder(self.src, self.h.wbits)
        self.room = None
        if st[_CKPT]:
            # The checkpoint of the unit before, given only now: the transient objects of a
            # resume record (a journal write) find the hole of the last decoder free, where
            # they would find no hole while it is held.
            ck = st[_CKPT]
            st[_CKPT] = 0
            self.sink.checkpoint((ck, self.out_at, self.unit))
        try:
            n = self.cb_more()  # the first decoded bytes: the decoder's blocks are made here
        except (OSError, EOFError) as e:
            raise PatchError("unit %d: corrupt stream data (%r)" % (self.unit, e))
        st[_POS] = st[_END] = RAW_TAIL
        st[_END] += n
        self.phase = _APPLY

    # --- applying --------------------------------------------------------------------------

    def step(self):
        # Fill the sink's sector buffer (or end the unit); False when the unit is done.
        if self.phase != _APPLY:
            return False
        mv = self.sink.space()
        st = self.st
        left = st[_LEFT]
        k = len(mv)
        if k > left:
            k = left
            mv = mv[:k]
        st[_I] = 0
        st[_K] = k
        st[_AVAIL] = 0
        self.out = mv
        try:
            r = work(mv, self.raw, st, self.cb_base, self.cb_more)
            if r:
                self._refuse(r)
            st[_OCRC] = _crc32(mv, st[_OCRC])
            self.sink.advance(k)
            self.out_at += k
            st[_LEFT] = left - k
            if left == k:
                self._end_unit()
        except (OSError, EOFError) as e:
            raise PatchError("unit %d: corrupt stream data (%r)" % (self.unit, e))
        return self.phase == _APPLY

    def _base_call(self, read_old):
        # The interpreter's call for base bytes: n of them from pos into out[i:i + n]. A
        # partition is read with readblocks() straight (one call less per op).
        rb = getattr(read_old, "readblocks", None)
        if rb is not None:
            bs = read_old.ioctl(5, 0)  # block size

            def base(pos, i, n):
                rb(pos // bs, self.out[i:i + n], pos % bs)
        else:
            def base(pos, i, n):
                read_old(pos, self.out[i:i + n])
        return base

    def _more_call(self):
        # The interpreter's call for decoded bytes, after the tail it kept in raw.
        fresh = memoryview(self.raw)[RAW_TAIL:]  # made once: no view per call

        def more():
            return self.dec.readinto(fresh)

        return more

    def _refuse(self, r):
        st = self.st
        if r == _E_VARINT:
            raise PatchError("unit %d: bad varint (longer than %d bytes)"
                             % (self.unit, MAX_VARINT_BYTES))
        if r == _E_EMPTY:
            raise PatchError("unit %d: bad varint or empty run (a diff entry covering nothing)"
                             % self.unit)
        if r == _E_END:
            raise PatchError("unit %d: ops stream ended early (truncated)" % self.unit)
        if r == _E_OP:
            raise PatchError("unit %d: op of %d bytes, the unit has %d left"
                             % (self.unit, st[_REQ], st[_OPS]))
        old = (st[_OLD] ^ 0x80000000) - 0x80000000
        raise PatchError("seek out of range: base position %d + %d, base has %d bytes"
                         % (old, st[_REQ], self.h.from_size))

    def _end_unit(self):
        st = self.st
        if st[_ZEROS] or st[_NONZERO]:
            raise PatchError("unit %d: runs stream goes past the end of the unit" % self.unit)
        if st[_POS] != st[_END] or self.cb_more():
            raise PatchError("unit %d: longer than announced (data after its last op)"
                             % self.unit)
        (want,) = struct.unpack_from("<I", self.head, 14)  # the unit's output CRC
        if st[_OCRC] != want:
            raise PatchError("unit %d: output CRC mismatch: made for another base image (the "
                             "running image is not this patch's base)" % self.unit, True)
        self.unit += 1  # self.dec is held until the next unit's decoder is made
        h = self.h
        if self.out_at == h.to_size:
            if self.unit != h.units:
                raise PatchError("output complete after %d of %d units" % (self.unit, h.units))
            self.phase = _DONE
            self.dec = self.src = None  # 6.5 KB for what comes after (verify, the journal)
            return
        if self.unit == h.units:
            raise PatchError("output shorter than announced: %d of %d bytes"
                             % (self.out_at, h.to_size))
        self.phase = _UNIT_HEAD
        st[_FILL] = 0
        if self.out_at % h.sector == 0:
            st[_CKPT] = self.patch_at  # given to the sink when the next decoder is made


async def apply_stream(ap, stream, progress=None):
    # Feed `stream` (an asyncio stream: await readinto(mv, n), at most n bytes into mv) through
    # Applier `ap`, yielding to the event loop after every sector applied; progress(out,
    # total) after every unit. The patch bytes are read straight into the free part of the
    # sink's sector buffer, no more than feed() takes before the unit is complete: they are in
    # the unit buffer before step() writes output there. Returns the patch offset reached.
    import asyncio

    sink = ap.sink
    while True:
        mv = sink.space()
        want = ap.want()
        n = await stream.readinto(mv, want if want < len(mv) else len(mv))
        if not n:
            break
        ap.feed(mv, n)
        if ap.phase == _APPLY:
            while ap.step():
                await asyncio.sleep(0)
            if progress:
                progress(ap.out_at, ap.h.to_size)
    ap.end()
    return ap.patch_at
