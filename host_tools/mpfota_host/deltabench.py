"""Delta-update figures for `mpfota bench` (format and choices: docs/delta.md).

On the ESP8266 MicroPython v1.9.4 -> v1.10 pair (shared/corpus/firmware), in one run:

    delta.patch_bytes             format 2 (streamed: units of <= 4096 B, w10), raw pair
    delta.patch_percent           the same, % of the new image
    delta.v1_patch_bytes          format 1 (four streams, stored before it is applied)
    delta.bsdiff4_bytes           bsdiff4.diff (BSDIFF40: bz2 x 3), raw pair
    delta.detools_bytes           detools sequential bsdiff + LZMA (its default), raw pair
    delta.pyboard_patch_bytes     format 2 on the pyboard rebuild pair (a small change that
                                  shifts the rest of the image); bsdiff4: pyboard_bsdiff4_bytes
    delta.apply_throughput_ratio  plain slot copy time / streamed apply time, the same output
                                  size on the virtual board, the patch served over loopback
                                  HTTP (both: sector erase + program, hashes, read-back, image
                                  check), best of --repeat runs each, alternated
    delta.apply_ms, delta.copy_ms the two times
    delta.staged_bytes            bytes the streamed apply adds to files on the board's
                                  filesystem, the journal aside (0: the patch is never stored)
    delta.min_heap_kb             smallest `micropython -X heapsize` (KiB) with which the whole
                                  streamed apply completes (device modules compiled with
                                  mpy-cross), found by bisection and checked for the 4 sizes
                                  above it (as download.min_heap_kb); with a resume record every
                                  64 KiB of output (as a slow link makes them: the timed run is
                                  too fast for the default one-a-second gate)
    delta.baseline_heap_kb        the same for booting and importing mpfota.deltafetch only
    delta.working_heap_kb         min_heap_kb - baseline_heap_kb: what applying itself needs
    delta.http_heap_kb            the same for only downloading the patch (no apply), read into
                                  the door's sector buffer as deltafetch reads it: the part of
                                  working_heap_kb that is the HTTP request, not the applier
    delta.romfs_working_heap_kb   working_heap_kb with the device modules in the board's ROMFS
                                  partition (`mpfota romfs`): their bytecode out of the heap
                                  and out of the way, as on a board with them in ROMFS or frozen
"""

from __future__ import annotations

import io
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from . import delta, deltastream, image, paths, romfsimage, vboard
from .devicerun import DeviceRunner, compiled, serve
from .errors import UserError

CORPUS = paths.REPO.parent / "shared" / "corpus" / "firmware"
PAIR = ("esp8266-v1.9.4.bin", "esp8266-v1.10.bin")
PYBOARD = ("pybv11-1f5d945af.bin", "pybv11-1f5d945af-dirty.bin")
SLOT_SIZE = 640 * 1024

# Device side, written into the work directory: micropython deltabench_dev.py MODE [ARG]
#   stream URL [staged] [checkpoints]  apply the patch at URL into the spare slot as it
#               downloads, verify (no switch); with "staged", report the bytes it added to
#               files; with "checkpoints", a resume record every 64 KiB of output (no time gate)
#   copy N      copy N bytes of the running image into the spare slot (its version renamed,
#               or the door refuses the image the board runs) and verify
#   get URL     download the patch at URL into the door's sector buffer, as deltafetch reads
#               it, and drop it (the HTTP part of the streamed apply alone)
#   baseline    boot and import mpfota.deltafetch, nothing else
DEVICE_SCRIPT = """
import sys
import time
mode = sys.argv[1]
import bootrom
bootrom.boot()
import os
from mpfota import deltafetch, journal


def stored(path, sizes):
    # {file: bytes} of every file under path but the journal (its few records are not staging)
    for name, kind, *_ in os.ilistdir(path):
        full = path.rstrip("/") + "/" + name
        if kind == 0x4000:
            stored(full, sizes)
        elif "journal" not in name:
            sizes[full] = os.stat(full)[6]
    return sizes


journal.put("dl", None)  # a run cut short by a small heap leaves no resume point behind
staged = "staged" in sys.argv  # the walk costs heap of its own: not in the heap runs
before = stored("/", {}) if staged else None
t0 = time.ticks_ms()
n = 0
if mode == "stream":
    import asyncio
    every = 65536 if "checkpoints" in sys.argv else None
    n = asyncio.run(deltafetch.fetch(sys.argv[2], switch=False, checkpoint=every)).to_size
elif mode == "get":
    import asyncio
    from mpfota import http, slot


    async def get():
        chunk = memoryview(slot._BUF)
        resp = await http.request("GET", sys.argv[2], bytearray(512))
        while await resp.readinto(chunk):
            pass
        await resp.aclose()


    asyncio.run(get())
elif mode == "copy":
    from mpfota.slot import Slot
    n = int(sys.argv[2])
    slot = Slot()
    mv = slot.space()
    pos = 0
    while pos < n:
        mv = slot.space()
        k = min(len(mv), n - pos)
        slot.running.readblocks(pos // 4096, mv[:k], pos % 4096)
        if pos == 0:
            mv[12:32] = b"copy" + bytes(16)  # another version of the same body
        slot.advance(k)
        pos += k
    slot.verify(n)
print("elapsed_ms:", time.ticks_diff(time.ticks_ms(), t0))
print("bytes:", n)
if staged:
    after = stored("/", {})
    print("staged:", sum(max(n - before.get(f, 0), 0) for f, n in after.items()))
"""


def size_figures(old: bytes, new: bytes) -> Iterator[tuple[str, str]]:
    patch = deltastream.make_stream_patch(old, new)
    yield ("delta.patch_bytes", str(len(patch.data)))
    yield ("delta.patch_percent", f"{100 * len(patch.data) / len(new):.2f}")
    yield ("delta.v1_patch_bytes", str(len(delta.make_patch(old, new).data)))
    import bsdiff4

    yield ("delta.bsdiff4_bytes", str(len(bsdiff4.diff(old, new))))
    import detools

    out = io.BytesIO()
    detools.create_patch(io.BytesIO(old), io.BytesIO(new), out, compression="lzma")
    yield ("delta.detools_bytes", str(len(out.getvalue())))


def pyboard_figures() -> Iterator[tuple[str, str]]:
    old_path, new_path = CORPUS / PYBOARD[0], CORPUS / PYBOARD[1]
    if not (old_path.is_file() and new_path.is_file()):
        return
    old, new = old_path.read_bytes(), new_path.read_bytes()
    yield ("delta.pyboard_patch_bytes", str(len(deltastream.make_stream_patch(old, new).data)))
    import bsdiff4

    yield ("delta.pyboard_bsdiff4_bytes", str(len(bsdiff4.diff(old, new))))


def apply_figures(old: bytes, new: bytes, repeat: int) -> Iterator[tuple[str, str]]:
    old_img, new_img = image.make_image(old, "1.9.4"), image.make_image(new, "1.10")
    with tempfile.TemporaryDirectory(prefix="mpfota-deltabench-") as tmp:
        work = Path(tmp)
        www = work / "www"
        www.mkdir()
        (www / "patch.bin").write_bytes(deltastream.make_stream_patch(old_img, new_img).data)
        server, base = serve(www)
        try:
            board = work / "bench-board"  # not "board": the script directory is on sys.path
            vboard.init(board, slot_size=SLOT_SIZE, fs_size=256 * 1024, core_image=old_img)
            script = work / "deltabench_dev.py"
            script.write_text(DEVICE_SCRIPT)
            dev = DeviceRunner(work, script)
            url = f"{base}/patch.bin"
            best: dict[str, int] = {}
            staged = 0
            for _ in range(repeat):
                for mode, args in (("copy", [str(len(new_img))]), ("stream", [url, "staged"])):
                    run = dev.measure(board, mode, *args)
                    if not run.ok or run.ms is None:
                        raise UserError(f"delta bench: {mode} failed")
                    best[mode] = min(run.ms, best.get(mode, run.ms))
                    if mode == "stream":
                        staged = max(staged, _staged(run.stdout))
            yield ("delta.apply_throughput_ratio", f"{best['copy'] / max(best['stream'], 1):.2f}")
            yield ("delta.apply_ms", str(best["stream"]))
            yield ("delta.copy_ms", str(best["copy"]))
            yield ("delta.staged_bytes", str(staged))
            heap = dev.min_heap_kb(board, "stream", url, "checkpoints")
            base_heap = dev.min_heap_kb(board, "baseline")
            yield ("delta.min_heap_kb", str(heap))
            yield ("delta.baseline_heap_kb", str(base_heap))
            yield ("delta.working_heap_kb", str(heap - base_heap))
            yield ("delta.http_heap_kb", str(dev.min_heap_kb(board, "get", url) - base_heap))
            rom_board = work / "bench-board-romfs"
            vboard.init(rom_board, slot_size=SLOT_SIZE, fs_size=256 * 1024, core_image=old_img,
                        romfs=romfsimage.of_folder(compiled(work, paths.DEVICE)))
            from_rom = DeviceRunner(work, script, [compiled(work, paths.BOARDS / "unix")])
            heap, base_heap = (from_rom.min_heap_kb(rom_board, *run) for run in
                               (("stream", url, "checkpoints"), ("baseline",)))
            yield ("delta.romfs_working_heap_kb", str(heap - base_heap))
        finally:
            server.shutdown()


def _staged(stdout: str) -> int:
    for line in stdout.splitlines():
        if line.startswith("staged:"):
            return int(line.split()[1])
    raise UserError("delta bench: the device script did not report the staged bytes")


def delta_figures(repeat: int = 3) -> Iterator[tuple[str, str]]:
    """(name, value) pairs; nothing (and a note on stderr) when the corpus is not there."""
    old_path, new_path = CORPUS / PAIR[0], CORPUS / PAIR[1]
    if not (old_path.is_file() and new_path.is_file()):
        print(f"delta figures skipped: {CORPUS} has no {PAIR[0]} / {PAIR[1]}", file=sys.stderr)
        return
    old, new = old_path.read_bytes(), new_path.read_bytes()
    yield from size_figures(old, new)
    yield from pyboard_figures()
    yield from apply_figures(old, new, repeat)
