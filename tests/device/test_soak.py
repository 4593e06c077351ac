# Soak: 1,000 periodic update checks in accelerated time (libfota2.every with a 1 ms period
# instead of hours) against the reference server (mpfota_host.server.FotaServer, fixture
# board_fota) answering "already the latest" (code 27). After every check: gc.collect(), then
# gc.mem_free() and the number of open file descriptors of this process (os.listdir on
# /proc/self/fd, mounted with os.VfsPosix). The heap and the descriptors must not grow: the
# first and the last hundred checks are compared. docs/reliability.md, "Soak".
import vb

TIMEOUT = 240
HEAPSIZE = "256K"

CHECKS = 1000
HEAP_SLACK = 512  # bytes: fragmentation noise allowed between the two hundreds


async def test_thousand_periodic_checks_leak_no_heap_and_no_descriptor(vboard, board_fota):
    vb.boot()
    import asyncio
    import gc
    import os

    import libfota2

    os.mount(os.VfsPosix("/proc/self/fd"), "/fd")

    def fds():
        return len(os.listdir("/fd"))

    opts = {"url": board_fota["base"] + "/upgrade?", "project_key": board_fota["project"],
            "firmware_name": board_fota["firmware"],
            # core 2.0.0, script 001.x.000: the release has no package for this core: code 27
            "version": "2.0.0.001.000"}
    heap = [0] * CHECKS  # preallocated: the samples must not grow the heap themselves
    fd = [0] * CHECKS
    n = [0]
    codes = {}
    done = asyncio.Event()
    handle = []

    def cb(code):
        codes[code] = codes.get(code, 0) + 1
        i = n[0]
        if i >= CHECKS:
            return
        gc.collect()
        heap[i] = gc.mem_free()
        fd[i] = fds()
        n[0] = i + 1
        if (i + 1) % 100 == 0:
            print("check", i + 1, heap[i], fd[i])
        if i + 1 == CHECKS:
            handle[0].stop()
            done.set()

    handle.append(libfota2.every(cb, opts, period_ms=1, jitter=0.0, retry_ms=1, first_ms=0))
    await asyncio.wait_for_ms(done.wait(), 200000)
    assert codes == {libfota2.RECEIVE_ERROR: CHECKS}, codes  # every answer: "already latest"
    first = heap[:100]
    last = heap[-100:]
    grow = sum(first) // 100 - sum(last) // 100
    print("soak.checks:", n[0])
    print("soak.heap_free_first100:", sum(first) // 100)
    print("soak.heap_free_last100:", sum(last) // 100)
    print("soak.heap_growth_bytes:", grow)
    print("soak.fds_first_last:", fd[0], fd[-1], "max", max(fd))
    assert grow <= HEAP_SLACK, "the heap shrank by %d bytes over %d checks" % (grow, CHECKS)
    assert min(last) >= min(first) - HEAP_SLACK, (min(first), min(last))
    assert max(fd[-100:]) <= max(fd[:100]), "file descriptors leak: %r -> %r" % (fd[:5], fd[-5:])
    os.umount("/fd")
