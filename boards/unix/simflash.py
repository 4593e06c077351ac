# Simulated NOR flash in a file, for the virtual board.
#
# It behaves like the SPI NOR chips of real boards: erase works on whole 4 KiB sectors and sets
# every byte to 0xFF; programming can only turn 1 bits into 0 bits, so programming over bytes
# that are not erased is refused (on a real chip it silently corrupts them). Every program and
# erase is one "flash operation"; the power can be cut after operation N, which leaves the file
# exactly as it was after N operations and makes every later operation raise PowerCut.
#
# Torn cuts (MPFOTA_TORN=model:seed, or torn=): the power fails *during* operation N, which is
# then applied only partly, as a real chip may leave it (docs/reliability.md):
#   prefix  a program writes only its first k bytes; an erase erases only the first k bytes
#   half    a program writes a random half of its bytes; an erase erases a random half of the
#           sector's 256-byte pages, the others stay as they were
#   bits    a program clears only some of the bits of every byte (half-programmed cells); an
#           erase leaves a random run of pages as garbage (bits only partly set back to 1)
# k and the random parts come from the seed, so a torn cut is reproducible.
import os

from micropython import const

SECTOR = const(4096)
_CHECK = const(256)  # bytes compared at a time when checking that a range is erased
_EIO = const(5)
_EINVAL = const(22)
TORN_MODELS = ("prefix", "half", "bits")


class PowerCut(BaseException):
    # BaseException: application code that catches Exception must not swallow a power cut.
    pass


class _Noise:
    # xorshift32: the same bytes from the same seed on every port (no dependency on `random`).
    def __init__(self, seed):
        self.x = (seed & 0xFFFFFFFF) or 0x9E3779B9

    def next(self):
        x = self.x
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.x = x
        return x

    def below(self, n):
        return self.next() % n if n > 0 else 0


def parse_torn(text):
    # "model:seed" -> (model, seed); None for "" / None. ValueError for anything else.
    if not text:
        return None
    model, _, seed = text.partition(":")
    if model not in TORN_MODELS:
        raise ValueError("MPFOTA_TORN: unknown model %r (known: %s)"
                         % (model, ", ".join(TORN_MODELS)))
    return model, int(seed or "0")


class SimFlash:
    def __init__(self, path, size, cut_after=0, torn=None):
        self._f = open(path, "r+b")
        self.size = size
        self.cut_after = cut_after  # 0: never cut
        self.torn = parse_torn(os.getenv("MPFOTA_TORN")) if torn is None else parse_torn(torn)
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

    def _tearing(self):
        # True when this operation is the cut one and must be applied only partly.
        return bool(self.torn and self.cut_after and self.ops + 1 >= self.cut_after)

    def _done(self):
        self.ops += 1
        if self.cut_after and self.ops >= self.cut_after:
            self.dead = True
            raise PowerCut()

    def read(self, addr, buf):
        # _check only when it will raise: the delta applier reads thousands of small pieces.
        if self.dead or addr < 0 or addr + len(buf) > self.size:
            self._check(addr, len(buf))
        f = self._f
        f.seek(addr)
        f.readinto(buf)

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
        if self._tearing():
            data = self._torn_program(data)
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
        if self._tearing():
            self._torn_erase(addr)
        else:
            self._f.seek(addr)
            for _ in range(SECTOR // _CHECK):
                self._f.write(self._erased)
        self._f.flush()
        self.erases += 1
        self._done()

    # --- torn operations (the bytes are erased before a program: 0xFF where nothing lands) ---

    def _torn_program(self, data):
        model, seed = self.torn
        rnd = _Noise(seed)
        n = len(data)
        out = bytearray(b"\xff" * n)
        if model == "prefix":
            k = rnd.below(n)
            out[:k] = data[:k]
        elif model == "half":
            for i in range(n):
                if rnd.next() & 1:
                    out[i] = data[i]
        else:  # bits: only some of the bits that go to 0 got there
            for i in range(n):
                out[i] = 0xFF ^ ((~data[i] & 0xFF) & rnd.next())
        return out

    def _torn_erase(self, addr):
        model, seed = self.torn
        rnd = _Noise(seed)
        old = bytearray(SECTOR)
        self._f.seek(addr)
        self._f.readinto(old)
        pages = SECTOR // _CHECK
        if model == "prefix":
            k = rnd.below(SECTOR)
            old[:k] = b"\xff" * k
        elif model == "half":
            for p in range(pages):
                if rnd.next() & 1:
                    old[p * _CHECK:(p + 1) * _CHECK] = self._erased
        else:  # bits: a run of pages partly set back to 1, the rest erased
            first = rnd.below(pages)
            last = first + 1 + rnd.below(pages - first)
            for i in range(SECTOR):
                p = i // _CHECK
                old[i] = old[i] | (rnd.next() & 0xFF) if first <= p < last else 0xFF
        self._f.seek(addr)
        self._f.write(old)

    def close(self):
        self._f.close()
