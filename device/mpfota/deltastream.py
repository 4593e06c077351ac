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
RAW_BUF = const(256)  # decoded op bytes held at a time
RUN_CACHE = const(4)  # short diff runs an entry can repeat by number (codes 4..7)
_CACHE = const(6)  # where they start in the run state (Applier.st)
ST_LEN = const(6 + 2 * RUN_CACHE)

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
    # A malformed or inapplicable patch; the message says why.
    pass


def _crc32(data, crc=0):
    import binascii

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


def _add_runs_py(out, i, k, raw, st):
    # out[i:k] += the diff that the entries and bytes in raw[st[0]:st[1]] describe; st holds
    # [raw position, raw end, zeros left, nonzero left, short run, short run on, cached runs
    # x RUN_CACHE, their lengths x RUN_CACHE]. Returns the new i: k when done, less when raw
    # ran out (refill it and call again), -1 on a bad entry. deltarun.py has the viper twin;
    # the two must stay step for step the same.
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
            # A short run's bytes come from the register, lowest byte first.
            while nonzero and i < k:
                out[i] = (out[i] + run) & 0xFF
                run >>= 8
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
            for j in range(s):
                out[i + j] = (out[i + j] + raw[pos + j]) & 0xFF
            pos += s
            i += s
            nonzero -= s
        else:
            # An entry: one varint, or two when its code is 0, and then a short run's bytes;
            # taken only when all of that is in raw.
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
                    return -1
            if not complete:
                break
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
                        return -1
                if not complete:
                    break
            if hit < 0 and 0 < n <= 4 and end - p < n:
                break
            zeros = v >> 3
            nonzero = n
            if not zeros and not nonzero:
                return -1  # an entry that covers nothing would never end
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
    st[0] = pos
    st[2] = zeros
    st[3] = nonzero
    st[4] = run
    st[5] = short
    return i


try:
    from mpfota.deltarun import add_runs
except (ImportError, SyntaxError):  # CPython; a port without viper fails to compile it
    add_runs = _add_runs_py


def _unit_source(size):
    # One buffer for the DEFLATE data of a unit, kept for the whole patch: a BytesIO, because
    # the decoder reads its source a byte at a time and a native stream makes that cheap.
    import io

    try:
        return io.BytesIO(size)  # MicroPython: preallocated
    except TypeError:  # CPython
        return io.BytesIO()


class Applier:
    """Rebuild the new image from the base and a patch that arrives in pieces.

    feed(mv) takes patch bytes and returns how many it used: it stops once a unit is complete,
    and step() then applies up to one sector of it per call (True while there is more), so a
    caller can yield to the event loop in between (apply_stream does). end() says the patch
    is over. The sink takes the output the way the slot door does: space() is the free part
    of its sector buffer, advance(n) takes n bytes written there (a full sector goes to
    flash); checkpoint(state) comes after a unit ending on a sector boundary, where state =
    (patch offset, output offset, next unit) is what resume() needs to carry on from there.
    read_old(pos, mv) fills mv with base bytes; decoder(src, wbits) reads the raw DEFLATE data
    in src (deflate.DeflateIO on the board). Anything wrong raises PatchError."""

    def __init__(self, sink, read_old, decoder, unit_max=0):
        # unit_max: allocate the unit buffer now, while the heap is still in one piece (the
        # patch header may ask for a bigger one later).
        import array

        self.sink = sink
        self.read_old = read_old
        self.decoder = decoder
        self.h = None
        self.head = bytearray(HEADER_SIZE)  # the patch header, then each unit header
        self.fill = 0
        self.phase = _HEADER
        self.patch_at = 0  # patch bytes used
        self.out_at = 0  # output bytes written to the sink
        self.unit = 0  # units applied
        self.src = _unit_source(unit_max) if unit_max else None
        self.src_size = unit_max
        self.raw = bytearray(RAW_BUF)
        self.rmv = memoryview(self.raw)
        self.st = array.array("I", [0] * ST_LEN)  # the run state (_add_runs_py)

    def resume(self, header, state):
        # Carry on from a checkpoint: header = the patch's first HEADER_SIZE bytes, state as
        # given to sink.checkpoint(); feed() then takes the patch from state[0] on.
        self._start(header)
        self.patch_at, self.out_at, self.unit = state
        if not 0 < self.out_at < self.h.to_size or self.out_at % self.h.sector:
            raise PatchError("checkpoint at output %d does not fit this patch" % self.out_at)

    def _start(self, header):
        self.h = parse_header(header)
        self.header = bytes(header[:HEADER_SIZE])  # for resume records (self.head is reused)
        if self.h.unit_max > self.src_size:
            self.src = _unit_source(self.h.unit_max)
            self.src_size = self.h.unit_max
        self.phase = _UNIT_HEAD
        self.fill = 0

    # --- taking patch bytes ----------------------------------------------------------------

    def feed(self, mv):
        n = len(mv)
        used = 0
        while used < n:
            phase = self.phase
            if phase == _HEADER or phase == _UNIT_HEAD:
                want = HEADER_SIZE if phase == _HEADER else UNIT_SIZE
                k = min(want - self.fill, n - used)
                self.head[self.fill:self.fill + k] = mv[used:used + k]
                self.fill += k
                used += k
                if self.fill == want:
                    if phase == _HEADER:
                        self._start(self.head)
                    else:
                        self._open_unit()
            elif phase == _UNIT_BODY:
                k = min(self.packed - self.fill, n - used)
                part = mv[used:used + k]
                self.src.write(part)
                self.pcrc = _crc32(part, self.pcrc)
                self.fill += k
                used += k
                if self.fill == self.packed:
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
        h = self.h
        (self.packed, self.left, old, self.pcrc_want,
         self.ocrc_want) = struct.unpack_from(_UNIT, self.head, 0)
        if not 0 < self.packed <= h.unit_max or not self.left:
            raise PatchError("unit %d: bad unit header (%d packed bytes, %d out)"
                             % (self.unit, self.packed, self.left))
        if self.left > h.to_size - self.out_at:
            raise PatchError("output longer than announced (%d bytes)" % h.to_size)
        self.old = old
        self.src.seek(0)
        self.pcrc = 0
        self.fill = 0
        self.phase = _UNIT_BODY

    def _begin_apply(self):
        if self.pcrc != self.pcrc_want:
            raise PatchError("unit %d: CRC mismatch (corrupt patch)" % self.unit)
        self.src.seek(0)
        self.dec = self.decoder(self.src, self.h.wbits)
        st = self.st
        for i in range(ST_LEN):
            st[i] = 0
        self.x = self.y = self.z = 0
        self.ocrc = 0
        self.fill = 0
        self.phase = _APPLY

    # --- applying --------------------------------------------------------------------------

    def step(self):
        # Fill the sink's sector buffer (or end the unit); False when the unit is done.
        if self.phase != _APPLY:
            return False
        try:
            mv = self.sink.space()
            k = min(len(mv), self.left)
            mv = mv[:k]
            self._produce(mv)
            self.ocrc = _crc32(mv, self.ocrc)
            self.sink.advance(k)
            self.out_at += k
            self.left -= k
            if not self.left:
                self._end_unit()
        except (OSError, EOFError) as e:
            raise PatchError("unit %d: corrupt stream data (%r)" % (self.unit, e))
        return self.phase == _APPLY

    def _produce(self, mv):
        i = 0
        k = len(mv)
        while i < k:
            if not self.x and not self.y:
                self._next_op(k - i)
            if self.x:
                s = min(self.x, k - i)
                self.read_old(self.old, mv[i:i + s])
                j = i
                while True:
                    j = add_runs(mv, j, i + s, self.raw, self.st)
                    if j == i + s:
                        break
                    if j < 0:
                        raise PatchError("unit %d: bad varint or empty run" % self.unit)
                    self._refill()
                self.old += s
                self.x -= s
            else:
                s = min(self.y, k - i)
                self._literal(mv[i:i + s])
                self.y -= s
            i += s

    def _next_op(self, room):
        # The next op's header; the seek of the op before takes effect now.
        self.old += self.z
        x = self._varint()
        y = self._varint()
        z = self._varint()
        self.z = (z >> 1) ^ -(z & 1)
        if x + y > self.left or not x + y:
            raise PatchError("unit %d: op of %d bytes, the unit has %d left"
                             % (self.unit, x + y, self.left))
        if x and (self.old < 0 or self.old + x > self.h.from_size):
            raise PatchError("seek out of range: base position %d + %d, base has %d bytes"
                             % (self.old, x, self.h.from_size))
        self.x = x
        self.y = y

    def _refill(self):
        # Keep the unread tail of raw (part of an entry), then decode more after it.
        st = self.st
        raw = self.raw
        keep = st[1] - st[0]
        for i in range(keep):
            raw[i] = raw[st[0] + i]
        n = self.dec.readinto(self.rmv[keep:])
        if not n:
            raise PatchError("unit %d: ops stream ended early (truncated)" % self.unit)
        st[0] = 0
        st[1] = keep + n

    def _varint(self):
        st = self.st
        v = 0
        shift = 0
        while True:
            if st[0] == st[1]:
                self._refill()
            b = self.raw[st[0]]
            st[0] += 1
            v |= (b & 0x7F) << shift
            if b < 0x80:
                return v
            shift += 7
            if shift == 7 * MAX_VARINT_BYTES:
                raise PatchError("unit %d: bad varint (longer than %d bytes)"
                                 % (self.unit, MAX_VARINT_BYTES))

    def _literal(self, mv):
        # Literal bytes: what raw already holds, then straight from the decoder.
        st = self.st
        k = min(st[1] - st[0], len(mv))
        mv[:k] = self.rmv[st[0]:st[0] + k]
        st[0] += k
        while k < len(mv):
            n = self.dec.readinto(mv[k:])
            if not n:
                raise PatchError("unit %d: ops stream ended early (truncated)" % self.unit)
            k += n

    def _end_unit(self):
        st = self.st
        if st[2] or st[3]:  # zeros or nonzero bytes left
            raise PatchError("unit %d: runs stream goes past the end of the unit" % self.unit)
        if st[0] != st[1] or self.dec.readinto(self.rmv[:1]):
            raise PatchError("unit %d: longer than announced (data after its last op)"
                             % self.unit)
        if self.ocrc != self.ocrc_want:
            raise PatchError("unit %d: output CRC mismatch: made for another base image (the "
                             "running image is not this patch's base)" % self.unit)
        self.dec = None
        self.unit += 1
        h = self.h
        if self.out_at == h.to_size:
            if self.unit != h.units:
                raise PatchError("output complete after %d of %d units" % (self.unit, h.units))
            self.phase = _DONE
            return
        if self.unit == h.units:
            raise PatchError("output shorter than announced: %d of %d bytes"
                             % (self.out_at, h.to_size))
        self.phase = _UNIT_HEAD
        self.fill = 0
        if self.out_at % h.sector == 0:
            self.sink.checkpoint((self.patch_at, self.out_at, self.unit))


async def apply_stream(ap, stream, buf, progress=None):
    # Feed `stream` (an asyncio stream: await readinto(mv)) through Applier `ap`, reading into
    # `buf`, yielding to the event loop after every sector applied; progress(out, total) after
    # every unit. Returns the patch offset reached.
    import asyncio

    mv = memoryview(buf)
    while True:
        n = await stream.readinto(mv)
        if not n:
            break
        off = 0
        while off < n:
            off += ap.feed(mv[off:n])
            if ap.phase == _APPLY:
                while ap.step():
                    await asyncio.sleep(0)
                if progress:
                    progress(ap.out_at, ap.h.to_size)
    ap.end()
    return ap.patch_at
