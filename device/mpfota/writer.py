# Streams an update into the spare core slot, one sector at a time, with one fixed buffer.
#
# Bytes land in the sector buffer (the HTTP client reads straight into `space()`), and every full
# sector is erased and programmed in one writeblocks() call. MD5 (what the LuatOS platforms use),
# SHA-256 and a CRC-32 are computed on the way. The CRC state is a plain integer, so it can be
# saved with a checkpoint and used after a power cut to check that the prefix already in flash
# is what was written (hash objects cannot be saved: the prefix is re-hashed from flash).
import binascii
import hashlib
from micropython import const

from mpfota.errors import FOTA_ERROR, FotaError  # noqa: F401  (re-exported for callers)

SECTOR = const(4096)


def _hex(digest):
    return binascii.hexlify(digest).decode()


class SlotWriter:
    def __init__(self, part, buf=None):
        self.part = part
        self.capacity = part.ioctl(4, 0) * part.ioctl(5, 0)
        self.buf = buf if buf is not None else bytearray(SECTOR)
        if len(self.buf) != SECTOR:
            raise ValueError("the sector buffer must be 4096 bytes")
        self._mv = memoryview(self.buf)
        self._block_per_sector = SECTOR // part.ioctl(5, 0)
        self.restart()

    def restart(self):
        # Start again at offset 0 (nothing is erased until a sector is full).
        self.flushed = 0  # bytes programmed into flash (a multiple of SECTOR until finish)
        self.fill = 0  # bytes waiting in the sector buffer
        self.crc = 0
        self.md5 = hashlib.md5()
        self.sha256 = hashlib.sha256()

    @property
    def written(self):
        return self.flushed + self.fill

    def resume(self, offset, crc):
        # Continue after `offset` bytes already in flash: re-hash them and check their CRC.
        # Returns False (and restarts at 0) when the prefix is not what was written.
        self.restart()
        if offset % SECTOR or offset > self.capacity:
            return False
        mv = self._mv
        block = 0
        while self.flushed < offset:
            self.part.readblocks(block, self.buf)
            self._digest(mv)
            self.flushed += SECTOR
            block += self._block_per_sector
        if self.crc != crc:
            self.restart()
            return False
        return True

    def _digest(self, data):
        self.md5.update(data)
        self.sha256.update(data)
        self.crc = binascii.crc32(data, self.crc)

    def space(self):
        # The free part of the sector buffer, for readinto(); call advance(n) afterwards.
        return self._mv[self.fill:]

    def advance(self, n):
        if self.written + n > self.capacity:
            raise FotaError(FOTA_ERROR, "update larger than the slot (%d bytes)" % self.capacity)
        self.fill += n
        if self.fill == SECTOR:
            self._flush()

    def write(self, data):
        # Copy bytes in (for callers that hold their own chunk, as fota.run does).
        mv = memoryview(data)
        pos = 0
        while pos < len(mv):
            k = min(SECTOR - self.fill, len(mv) - pos)
            self._mv[self.fill:self.fill + k] = mv[pos:pos + k]
            pos += k
            self.advance(k)
        return pos

    def _flush(self):
        data = self._mv[:self.fill]
        self._digest(data)
        # writeblocks without offset erases the sector first (esp32.Partition semantics).
        self.part.writeblocks(self.flushed // self.part.ioctl(5, 0), data)
        self.flushed += self.fill
        self.fill = 0

    def drop_partial(self):
        # Forget the bytes waiting in the sector buffer (never hashed, never written); returns
        # the offset to fetch again from.
        self.fill = 0
        return self.flushed

    def finish(self):
        if self.fill:
            self._flush()

    def verify(self, length=None, md5=None, sha256=None):
        # After finish(): length, expected digests, then read the slot back and compare.
        n = self.flushed
        if n == 0:
            raise FotaError(FOTA_ERROR, "empty update")
        if length is not None and n != length:
            raise FotaError(FOTA_ERROR, "length %d, expected %d" % (n, length))
        got_md5 = _hex(self.md5.digest())
        got_sha = self.sha256.digest()
        if md5 and got_md5 != md5.lower():
            raise FotaError(FOTA_ERROR, "md5 %s, expected %s" % (got_md5, md5.lower()))
        if sha256 and _hex(got_sha) != sha256.lower():
            raise FotaError(FOTA_ERROR, "sha256 %s, expected %s" % (_hex(got_sha), sha256.lower()))
        if self._read_back(n) != got_sha:
            raise FotaError(FOTA_ERROR, "read-back of the slot does not match what was written")
        return got_md5, _hex(got_sha)

    def _read_back(self, n):
        check = hashlib.sha256()
        mv = self._mv
        bs = self.part.ioctl(5, 0)
        pos = 0
        while pos < n:
            k = min(SECTOR, n - pos)
            self.part.readblocks(pos // bs, mv[:k])
            check.update(mv[:k])
            pos += k
        return check.digest()
