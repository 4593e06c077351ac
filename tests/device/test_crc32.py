# mpfota.crc32 (CRC-32 four bytes a step, in viper) against binascii.crc32, and the door's use
# of it for the resume CRC of a raw download: the fast one when there is room for its table,
# binascii.crc32 when there is not, the same records either way.
import vb

TIMEOUT = 60


def _noise(n, seed):
    rng = vb.Rng(seed)
    return bytearray(rng.next(256) for _ in range(n))


def test_same_values_as_binascii_at_every_alignment_length_and_start():
    import binascii

    from mpfota import crc32

    f = crc32.fast()
    assert f(b"123456789") == 0xCBF43926  # the check value of CRC-32
    assert f(b"") == 0
    data = memoryview(_noise(4200, 7))
    for start in range(8):
        for n in (0, 1, 2, 3, 4, 5, 7, 8, 9, 255, 4096, 4191 - start):
            piece = data[start:start + n]
            for crc in (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xDEADBEEF):
                assert f(piece, crc) == binascii.crc32(piece, crc), (start, n, crc)
    # Chained over pieces of any size, it is the CRC of the whole.
    crc = 0
    for at in range(0, 4200, 1000):
        crc = f(data[at:at + 1000], crc)
    assert crc == binascii.crc32(data)


def test_a_table_of_another_size_is_refused():
    from mpfota import crc32

    try:
        crc32.fast(bytearray(1024))
    except ValueError as e:
        assert "4096" in str(e), e
    else:
        raise AssertionError("a 1 KiB table must be refused")


class _Source:
    # A stream of `data`, as many bytes a read as asked for.
    def __init__(self, data):
        self.data = memoryview(data)
        self.at = 0

    async def readinto(self, mv, n=None):
        n = min(len(mv) if n is None else n, len(self.data) - self.at)
        mv[:n] = self.data[self.at:self.at + n]
        self.at += n
        return n


def _pour_with_checkpoints(data):
    # A pour with a record every 16 KiB (the CRC on the way from the start), each record's CRC
    # checked against the prefix in flash; returns the Slot.
    import asyncio
    import binascii

    from mpfota import slot

    s = slot.Slot(md5=False)
    crcs = []

    def record():
        s._crc_flushed()
        crcs.append((s.flushed, s.crc))

    asyncio.run(s.pour(_Source(data), len(data), None, 4 * slot.SECTOR, record))
    back = bytearray(s.flushed)  # the last partial sector waits in the buffer until verify()
    s.spare.readblocks(0, back)
    assert back == data[:s.flushed]
    assert len(crcs) == len(data) // (4 * slot.SECTOR), (crcs, len(data))
    for at, crc in crcs:
        assert crc == binascii.crc32(memoryview(back)[:at]), at
    return s


def test_the_door_keeps_the_resume_crc_with_the_fast_function(vboard):
    vb.boot()
    import binascii

    s = _pour_with_checkpoints(_noise(96 * 1024 + 100, 3))
    assert s.crc_fn is not None and s.crc_fn is not binascii.crc32, s.crc_fn
    from mpfota.errors import IMAGE, FotaError

    try:
        s.verify()  # noise is no bootable image: refused, after the table was let go
    except FotaError as e:
        assert e.reason == IMAGE, e
    assert s.crc_fn is None, "verify() lets the table go"


def test_without_room_for_the_table_the_door_keeps_binascii_crc32(vboard):
    vb.boot()
    import binascii
    import sys

    from mpfota import slot

    sys.modules.pop("mpfota.crc32", None)

    def no_room(n):
        raise MemoryError("memory allocation failed, allocating %d bytes" % n)

    slot.bytearray = no_room  # found before the built-in: the table's allocation fails
    try:
        s = _pour_with_checkpoints(_noise(64 * 1024, 5))
    finally:
        del slot.bytearray
    assert s.crc_fn is binascii.crc32
    assert "mpfota.crc32" not in sys.modules, "no table, no module"
