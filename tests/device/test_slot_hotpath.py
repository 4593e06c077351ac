# The door's hot path (mpfota.slot.Slot.pour): no allocation per read beyond the stream's own,
# and resume checkpoints spaced by bytes and, on the default download path, by time.
import vb

TIMEOUT = 120
READS = 768  # 3 MiB in 4 KiB reads


class _Source:
    # `size` bytes from nowhere: readinto(mv, n) claims n bytes (the buffer keeps what it held),
    # so all that is allocated per read is this coroutine; `tick` advances the fake clock.
    def __init__(self, size, clock=None):
        self.left = size
        self.clock = clock

    async def readinto(self, mv, n=None):
        n = min(len(mv) if n is None else n, self.left)
        self.left -= n
        if self.clock is not None:
            self.clock[0] += 100
        return n


def _allocated(coro):
    import asyncio

    import micropython

    before = micropython.mem_total()
    got = asyncio.run(coro)
    return got, micropython.mem_total() - before


def test_pour_allocates_nothing_per_read(big_vboard):
    vb.boot()
    import hashlib

    from mpfota import slot

    size = READS * slot.SECTOR
    s = slot.Slot(md5=False)

    async def reference():
        # The same reads, digest and sector writes, written straight.
        src = _Source(size)
        sha = hashlib.sha256()
        for i in range(READS):
            n = await src.readinto(s.mv, slot.SECTOR)
            sha.update(s.mv)
            s.spare.writeblocks(i, s.mv)
        return n

    _, ref = _allocated(reference())
    got, engine = _allocated(s.pour(_Source(size), size))
    assert got == size
    # A slice of the buffer per read would be 32 bytes each (more on a 64-bit port): the only
    # allowance is fixed work (the ten progress log lines), not anything per read.
    print("allocated per read: engine %d, reference %d" % (engine // READS, ref // READS))
    assert engine - ref < READS * 8, (engine, ref, (engine - ref) / READS)


def _pour_with_clock(every_ms):
    import asyncio

    from mpfota import slot

    clock = [0]
    slot.ticks_ms = lambda: clock[0]
    s = slot.Slot(md5=False)
    saved = []
    size = 64 * slot.SECTOR
    asyncio.run(s.pour(_Source(size, clock), size, None, 2 * slot.SECTOR,
                       lambda: saved.append(s.flushed), every_ms))
    return saved


def test_checkpoints_every_n_bytes_and_not_more_often_than_every_ms(vboard):
    # Each 4 KiB read takes 100 ms of the fake clock: every 8 KiB is 200 ms.
    vb.boot()
    assert _pour_with_clock(0) == [8192 * i for i in range(1, 33)]
    assert _pour_with_clock(1000) == [40960 * i for i in range(1, 7)]


async def test_default_download_checkpoints_by_time_and_an_explicit_one_by_bytes(
        big_vboard, update_server):
    vb.boot()
    from mpfota import download, journal, slot

    clock = [0]
    slot.ticks_ms = lambda: clock[0]  # a link so fast that no time passes
    offsets = []
    crcs = []
    put = journal.put

    def spy(section, value, heal=False):
        if section == "dl" and value is not None:
            offsets.append(value["offset"])
            crcs.append(value["crc"])
        put(section, value, heal)

    journal.put = spy
    img = update_server["images"]["core-huge"]
    url = update_server["base"] + img["path"]
    await download.fetch(url, sha256=img["sha256"], switch=False)
    assert offsets == [], "on a fast link no resume record at all: %r" % offsets

    def slow(done, total):
        clock[0] += 50  # 50 ms per read: a second passes every 20 reads

    del offsets[:]
    del crcs[:]
    await download.fetch(url, sha256=img["sha256"], switch=False, progress=slow)
    assert offsets and offsets[0] >= download.CHECKPOINT, offsets
    # The CRC each record keeps (read back from flash, then kept on the way) is the prefix's.
    import binascii

    import board

    _, spare = board.ota_slots()
    buf = bytearray(offsets[-1])
    spare.readblocks(0, buf)
    for at, crc in zip(offsets, crcs):
        assert binascii.crc32(memoryview(buf)[:at]) == crc, (at, offsets)
    del offsets[:]
    await download.fetch(url, sha256=img["sha256"], switch=False, checkpoint=65536)
    assert offsets == [65536, 131072, 196608, 262144], offsets
