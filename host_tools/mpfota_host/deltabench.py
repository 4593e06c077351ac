"""Delta-update figures for `mpfota bench` (format and choices: docs/delta.md).

All on the ESP8266 MicroPython v1.9.4 -> v1.10 pair (shared/corpus/firmware), in one run:

    delta.patch_bytes             this format (bsdiff matching, 4 raw-DEFLATE streams), raw pair
    delta.patch_percent           the same, % of the new image
    delta.bsdiff4_bytes           bsdiff4.diff (BSDIFF40: bz2 x 3), raw pair
    delta.detools_bytes           detools sequential bsdiff + LZMA (its default), raw pair
    delta.apply_throughput_ratio  plain slot copy time / delta apply time, the same output size
                                  on the virtual board (both: sector erase + program, hashes,
                                  read-back, image check; the apply also hashes the base and
                                  CRCs the patch), best of --repeat runs each, alternated
    delta.apply_ms, delta.copy_ms the two times
    delta.min_heap_kb             smallest `micropython -X heapsize` (KiB) with which the whole
                                  apply completes (device modules compiled with mpy-cross),
                                  found by bisection
    delta.baseline_heap_kb        the same for booting and importing mpfota.delta only
    delta.working_heap_kb         min_heap_kb - baseline_heap_kb: what applying itself needs
"""

from __future__ import annotations

import io
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from . import delta, image, paths, vboard
from .devicerun import DeviceRunner
from .errors import UserError

CORPUS = paths.REPO.parent / "shared" / "corpus" / "firmware"
PAIR = ("esp8266-v1.9.4.bin", "esp8266-v1.10.bin")
SLOT_SIZE = 640 * 1024

# Device side, written into the work directory: micropython deltabench_dev.py MODE [ARG]
#   place HOSTFILE  copy the patch onto the board's filesystem (/.mpfota/patch.bin)
#   delta           apply it into the spare slot and verify (no switch)
#   copy N          copy N bytes of the running slot into the spare slot and verify
#   baseline        boot and import mpfota.delta, nothing else
DEVICE_SCRIPT = """
import sys
import time
mode = sys.argv[1]
data = None
if mode == "place":
    with open(sys.argv[2], "rb") as f:
        data = f.read()
import bootrom
bootrom.boot()
if data is not None:
    import os
    try:
        os.mkdir("/.mpfota")
    except OSError:
        pass
    with open("/.mpfota/patch.bin", "wb") as f:
        f.write(data)
from mpfota import delta
from mpfota.slot import Slot
t0 = time.ticks_ms()
n = 0
if mode == "delta":
    n = delta.apply(switch=False).to_size
elif mode == "copy":
    n = int(sys.argv[2])
    s = Slot()
    run = s.running
    pos = 0
    while pos < n:
        mv = s.space()
        k = min(len(mv), n - pos)
        run.readblocks(pos // 4096, mv[:k], pos % 4096)
        if pos == 0:
            mv[31] = 0x20  # a version byte: else the same-image guard refuses the copy
        s.advance(k)
        pos += k
    s.verify(n)
print("elapsed_ms:", time.ticks_diff(time.ticks_ms(), t0))
print("bytes:", n)
"""


def size_figures(old: bytes, new: bytes) -> Iterator[tuple[str, str]]:
    patch = delta.make_patch(old, new)
    yield ("delta.patch_bytes", str(len(patch.data)))
    yield ("delta.patch_percent", f"{100 * len(patch.data) / len(new):.2f}")
    import bsdiff4

    yield ("delta.bsdiff4_bytes", str(len(bsdiff4.diff(old, new))))
    import detools

    out = io.BytesIO()
    detools.create_patch(io.BytesIO(old), io.BytesIO(new), out, compression="lzma")
    yield ("delta.detools_bytes", str(len(out.getvalue())))


def apply_figures(old: bytes, new: bytes, repeat: int) -> Iterator[tuple[str, str]]:
    old_img, new_img = image.make_image(old, "1.9.4"), image.make_image(new, "1.10")
    with tempfile.TemporaryDirectory(prefix="mpfota-deltabench-") as tmp:
        work = Path(tmp)
        board = work / "bench-board"  # not "board": the script directory is on sys.path
        vboard.init(board, slot_size=SLOT_SIZE, fs_size=256 * 1024, core_image=old_img)
        (work / "patch.bin").write_bytes(delta.make_patch(old_img, new_img).data)
        script = work / "deltabench_dev.py"
        script.write_text(DEVICE_SCRIPT)
        dev = DeviceRunner(work, script)
        if dev.run(board, "place", str(work / "patch.bin")) is None:
            raise UserError("could not place the patch on the bench board")
        best: dict[str, int] = {}
        for _ in range(repeat):
            for mode, args in (("copy", [str(len(new_img))]), ("delta", [])):
                ms = dev.run(board, mode, *args)
                if ms is None:
                    raise UserError(f"delta bench: {mode} failed")
                best[mode] = min(ms, best.get(mode, ms))
        yield ("delta.apply_throughput_ratio", f"{best['copy'] / max(best['delta'], 1):.2f}")
        yield ("delta.apply_ms", str(best["delta"]))
        yield ("delta.copy_ms", str(best["copy"]))
        heap = dev.min_heap_kb(board, "delta")
        base = dev.min_heap_kb(board, "baseline")
        yield ("delta.min_heap_kb", str(heap))
        yield ("delta.baseline_heap_kb", str(base))
        yield ("delta.working_heap_kb", str(heap - base))


def delta_figures(repeat: int = 3) -> Iterator[tuple[str, str]]:
    """(name, value) pairs; nothing (and a note on stderr) when the corpus is not there."""
    old_path, new_path = CORPUS / PAIR[0], CORPUS / PAIR[1]
    if not (old_path.is_file() and new_path.is_file()):
        print(f"delta figures skipped: {CORPUS} has no {PAIR[0]} / {PAIR[1]}", file=sys.stderr)
        return
    old, new = old_path.read_bytes(), new_path.read_bytes()
    yield from size_figures(old, new)
    yield from apply_figures(old, new, repeat)
