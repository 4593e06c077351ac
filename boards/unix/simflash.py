# Simulated NOR flash in a file, for the virtual board.
#
# It behaves like the SPI NOR chips of real boards: erase works on whole 4 KiB sectors and sets
# every byte to 0xFF; programming can only turn 1 bits into 0 bits, so programming over bytes
# that are not erased is refused (on a real chip it silently corrupts them). Every program and
# erase is one "flash operation"; the power can be cut after operation N, which leaves the file
# exactly as it was after N operations and makes every later operation raise PowerCut.
from micropython import const

SECTOR = const(4096)
_CHECK = const(256)  # bytes compared at a time when checking that a range is erased
_EIO = const(5)
_EINVAL = const(22)


class PowerCut(BaseException):
    # BaseException: application code that catches Exception must not swallow a power cut.
    pass


class SimFlash:
    def __init__(self, path, size, cut_after=0):
        self._f = open(path, "r+b")
        self.size = size
        self.cut_after = cut_after  # 0: never cut
        self.ops = 0
        self.programs = 0
        self.erases = 0
        self.dead = False
        self._scratch = bytearray(_CHECK)
        self._erased = memoryview(b"\xff" * _CHECK)

    def _check(self, addr, n):
        if self.dead:
            raise PowerCut()
        if addr < 0 or n < 0 or addr + n > self.size:
            raise OSError(_EINVAL, "flash access out of range: 0x%x+%d" % (addr, n))

    def _done(self):
        self.ops += 1
        if self.cut_after and self.ops >= self.cut_after:
            self.dead = True
            raise PowerCut()

    def read(self, addr, buf):
        n = len(buf)
        self._check(addr, n)
        self._f.seek(addr)
        self._f.readinto(buf)

    def program(self, addr, data):
        n = len(data)
        self._check(addr, n)
        scratch = memoryview(self._scratch)
        pos = 0
        while pos < n:
            k = min(_CHECK, n - pos)
            self._f.seek(addr + pos)
            self._f.readinto(scratch[:k])
            if scratch[:k] != self._erased[:k]:
                raise OSError(_EIO, "program over unerased bytes at 0x%x" % (addr + pos))
            pos += k
        self._f.seek(addr)
        self._f.write(data)
        self._f.flush()
        self.programs += 1
        self._done()

    def erase(self, addr):
        # Erase the sector that starts at addr.
        self._check(addr, SECTOR)
        if addr % SECTOR:
            raise OSError(_EINVAL, "erase address 0x%x is not sector aligned" % addr)
        self._f.seek(addr)
        for _ in range(SECTOR // _CHECK):
            self._f.write(self._erased)
        self._f.flush()
        self.erases += 1
        self._done()

    def close(self):
        self._f.close()
