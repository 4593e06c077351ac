# The mpfota delta patch format (docs/delta.md): header parsing and the one-pass apply loop.
#
# Pure logic, no board access: it runs under MicroPython (device/mpfota/delta.py feeds it
# deflate.DeflateIO streams, the running slot and the slot writer) and under CPython (the host
# generator checks every patch with it; the fuzz tests drive it with hypothesis).
#
# A patch is a 140-byte header and four raw-DEFLATE streams:
#   ctrl   varint triples (x diff bytes, y extra bytes, zigzag(z) seek of the old position)
#   runs   where the diff bytes are not zero: varint (zeros << 2 | n), n = 1..3 nonzero bytes,
#          or n = 0 and a second varint holding (nonzero - 4); zeros after the last run are
#          implicit
#   diff   the nonzero diff bytes only (new = old + diff, mod 256)
#   extra  literal bytes
import struct

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

MAGIC = b"MPFD"
VERSION = const(1)
STREAMS = const(4)
CTRL = const(0)
RUNS = const(1)
DIFF = const(2)
EXTRA = const(3)
STREAM_NAMES = ("ctrl", "runs", "diff", "extra")
HEADER_SIZE = const(140)
MIN_WBITS = const(9)
MAX_WBITS = const(15)
MAX_VARINT_BYTES = const(5)
CODING_DEFLATE = const(0)

# magic, version, stream count, flags, from_size, from_sha256, to_size, to_sha256, triples,
# body CRC-32; then per stream: wbits, coding, reserved, packed length, raw length; header CRC.
_FIXED = "<4sBBHI32sI32sII"
_FIXED_SIZE = const(88)
BODY_CRC_AT = const(84)  # offset of the body CRC-32 in the header
_STREAM = "<BBHII"
_STREAM_SIZE = const(12)


class PatchError(ValueError):
    # A malformed or inapplicable patch; the message says why (the device turns it into
    # FotaError(-9, ...), the host tools into a one-line UserError).
    pass


def _crc32(data, crc=0):
    import binascii

    return binascii.crc32(data, crc) & 0xFFFFFFFF


class Header:
    def __init__(self, from_size, from_sha256, to_size, to_sha256, triples, body_crc, streams):
        self.from_size = from_size
        self.from_sha256 = from_sha256  # 32 bytes
        self.to_size = to_size
        self.to_sha256 = to_sha256  # 32 bytes
        self.triples = triples
        self.body_crc = body_crc
        self.streams = streams  # [(wbits, packed_len, raw_len)] in stream order

    @property
    def total_size(self):
        return HEADER_SIZE + sum(s[1] for s in self.streams)

    def offset(self, i):
        # Offset of stream i in the patch file.
        return HEADER_SIZE + sum(s[1] for s in self.streams[:i])


def pack_header(h):
    # The 140 header bytes for Header h (used by the host generator and the tests).
    out = struct.pack(_FIXED, MAGIC, VERSION, STREAMS, 0, h.from_size, h.from_sha256,
                      h.to_size, h.to_sha256, h.triples, h.body_crc)
    for wbits, packed, raw in h.streams:
        out += struct.pack(_STREAM, wbits, CODING_DEFLATE, 0, packed, raw)
    return out + struct.pack("<I", _crc32(out))


def parse_header(data):
    # Header from the first HEADER_SIZE bytes of a patch; PatchError when it is not one.
    if len(data) < HEADER_SIZE:
        raise PatchError("truncated: %d bytes, a patch header has %d" % (len(data), HEADER_SIZE))
    if bytes(data[:4]) != MAGIC:
        raise PatchError("not an mpfota delta patch (magic %r)" % bytes(data[:4]))
    (_, version, nstreams, flags, from_size, from_sha, to_size, to_sha, triples,
     body_crc) = struct.unpack_from(_FIXED, data, 0)
    if version != VERSION:
        raise PatchError("unsupported format version %d (this client reads %d)"
                         % (version, VERSION))
    (want,) = struct.unpack_from("<I", data, HEADER_SIZE - 4)
    if _crc32(memoryview(data)[:HEADER_SIZE - 4]) != want:
        raise PatchError("header CRC mismatch (corrupt patch)")
    if nstreams != STREAMS or flags:
        raise PatchError("unsupported layout: %d streams, flags 0x%x" % (nstreams, flags))
    if from_size == 0 or to_size == 0:
        raise PatchError("empty base or result image")
    streams = []
    pos = _FIXED_SIZE
    for i in range(STREAMS):
        wbits, coding, reserved, packed, raw = struct.unpack_from(_STREAM, data, pos)
        pos += _STREAM_SIZE
        if coding != CODING_DEFLATE or reserved:
            raise PatchError("%s stream: unknown coding %d" % (STREAM_NAMES[i], coding))
        if not MIN_WBITS <= wbits <= MAX_WBITS:
            raise PatchError("%s stream: window bits %d out of %d..%d"
                             % (STREAM_NAMES[i], wbits, MIN_WBITS, MAX_WBITS))
        if packed == 0:
            raise PatchError("%s stream: empty" % STREAM_NAMES[i])
        streams.append((wbits, packed, raw))
    # Cheap bounds that every well-formed patch meets (each is checked again while applying).
    if streams[EXTRA][2] > to_size or streams[DIFF][2] > to_size:
        raise PatchError("streams announce more bytes than the result has")
    if triples * 3 > streams[CTRL][2] or streams[CTRL][2] > triples * 3 * MAX_VARINT_BYTES:
        raise PatchError("control stream length does not fit %d triples" % triples)
    return Header(from_size, bytes(from_sha), to_size, bytes(to_sha), triples, body_crc,
                  streams)


class Reader:
    # Buffered reads from one decompressed stream, limited to its announced raw length.
    def __init__(self, stream, name, raw_len, size=64):
        self.s = stream
        self.name = name
        self.left = raw_len  # raw bytes not yet pulled from the stream
        self.buf = bytearray(size)
        self._mv = memoryview(self.buf)
        self.pos = 0
        self.end = 0

    def _fill(self):
        n = min(len(self.buf), self.left)
        if n <= 0:
            raise PatchError("%s stream: read past its announced length" % self.name)
        got = self.s.readinto(self._mv[:n])
        if not got:
            raise PatchError("%s stream: ended early (truncated)" % self.name)
        self.left -= got
        self.pos = 0
        self.end = got

    def more(self):
        return self.pos < self.end or self.left > 0

    def varint(self):
        # Fast path: a one-byte varint already in the buffer (most of them).
        pos = self.pos
        if pos < self.end:
            b = self.buf[pos]
            if b < 0x80:
                self.pos = pos + 1
                return b
        return self._varint()

    def _varint(self):
        v = 0
        shift = 0
        for _ in range(MAX_VARINT_BYTES):
            if self.pos == self.end:
                self._fill()
            b = self.buf[self.pos]
            self.pos += 1
            v |= (b & 0x7F) << shift
            if b < 0x80:
                return v
            shift += 7
        raise PatchError("%s stream: bad varint (longer than %d bytes)"
                         % (self.name, MAX_VARINT_BYTES))

    def add_into(self, mv, i, n):
        # mv[i:i+n] += the next n bytes of this stream (mod 256).
        buf = self.buf
        pos = self.pos
        if pos + n <= self.end:  # fast path: all in the buffer
            for j in range(pos, pos + n):
                mv[i] = (mv[i] + buf[j]) & 0xFF
                i += 1
            self.pos = pos + n
            return
        while n:
            if self.pos == self.end:
                self._fill()
            pos = self.pos
            k = min(n, self.end - pos)
            for j in range(k):
                mv[i + j] = (mv[i + j] + buf[pos + j]) & 0xFF
            self.pos = pos + k
            i += k
            n -= k

    def read_into(self, mv):
        # Fill mv exactly, straight from the stream (used for the extra bytes).
        n = len(mv)
        if self.pos != self.end or n > self.left:
            raise PatchError("%s stream: shorter than the control stream says" % self.name)
        got = 0
        while got < n:
            k = self.s.readinto(mv[got:])
            if not k:
                raise PatchError("%s stream: ended early (truncated)" % self.name)
            got += k
        self.left -= n

    def finish(self):
        # Everything announced was used, and the stream really ends there.
        if self.more():
            raise PatchError("%s stream: %d bytes left over" % (self.name,
                             self.left + self.end - self.pos))
        if self.s.readinto(self._mv[:1]):
            raise PatchError("%s stream: longer than announced" % self.name)


def apply_streams(h, readers, read_old, out, progress=None):
    # Rebuild the new image: readers = [ctrl, runs, diff, extra] Readers; read_old(pos, mv)
    # fills mv with old bytes from pos; out has space() -> memoryview, advance(n) (the slot
    # writer's API). Raises PatchError on anything the header does not allow.
    ctrl, runs, diff, extra = readers
    more_runs = runs.more
    next_run = runs.varint
    add = diff.add_into
    to_size = h.to_size
    from_size = h.from_size
    old = 0  # read position in the old image
    done = 0  # bytes produced
    zeros = 0  # left in the current run of zero diff bytes
    nonzero = 0  # left in the current run of nonzero diff bytes
    for _ in range(h.triples):
        x = ctrl.varint()
        y = ctrl.varint()
        z = ctrl.varint()
        z = (z >> 1) ^ -(z & 1)
        if x + y > to_size - done:
            raise PatchError("output longer than announced (%d bytes)" % to_size)
        if x and (old < 0 or old + x > from_size):
            raise PatchError("seek out of range: old position %d + %d, base has %d bytes"
                             % (old, x, from_size))
        while x:
            mv = out.space()
            k = min(x, len(mv))
            read_old(old, mv[:k])
            i = 0
            while i < k:
                if not zeros and not nonzero:
                    if more_runs():
                        v = next_run()
                        zeros = v >> 2
                        nonzero = v & 3
                        if not nonzero:
                            nonzero = next_run() + 4
                    else:
                        zeros = to_size  # no more changes: the rest of the diff is zeros
                s = k - i
                if zeros:
                    if zeros < s:
                        s = zeros
                    zeros -= s
                else:
                    if nonzero < s:
                        s = nonzero
                    nonzero -= s
                    add(mv, i, s)
                i += s
            out.advance(k)
            old += k
            x -= k
            done += k
        while y:
            mv = out.space()
            k = min(y, len(mv))
            extra.read_into(mv[:k])
            out.advance(k)
            y -= k
            done += k
        old += z
        if progress:
            progress(done, to_size)
    if done != to_size:
        raise PatchError("output shorter than announced: %d of %d bytes" % (done, to_size))
    if nonzero:
        raise PatchError("runs stream: changes beyond the end of the diff")
    for r in readers:
        r.finish()
    return done
