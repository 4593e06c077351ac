"""`mpfota bench`: speed and memory figures, measured side by side in one run.

Delta figures: see docs/delta.md (deltabench.py); peer figures (--peer DIR): peerbench.py.
Download figures (virtual board, loopback HTTP, device modules compiled with mpy-cross):

    download.code_kb                  KiB of .mpy of the device modules loaded by a core update
                                      through libfota2 (raw image, an app without lsys); the
                                      board and MicroPython's frozen modules are not counted
    download.modules                  how many they are
    download.slot_reads               full reads of the spare slot after the write, in that
                                      update (the door verifies in one read: 1)
    download.module_kb.<module>       each of them, largest first
    download.throughput_ratio.<size>  a straight reference loop doing the same work (HTTP GET,
                                      SHA-256, sector erase + program, SHA-256 read-back)
                                      / the engine; best of --repeat runs of each, alternated
    download.cpu_ratio.<size>         the same ratio in CPU time of the device process (boot
                                      included): steadier than wall time on a busy machine
    download.min_heap_kb.<size>       smallest `micropython -X heapsize` (KiB) from which the
                                      whole download path completes: found by bisection, and
                                      the 4 sizes above it complete too (devicerun.STABLE_KB)
    download.baseline_heap_kb         the same for booting and importing the modules only
                                      (bytecode of .mpy files lives in the heap on the unix
                                      port; frozen or ROMFS code on a board does not)
    download.working_heap_kb.<size>   min_heap_kb - baseline_heap_kb: what the download itself
                                      needs (buffers, streams, state), constant in the size
    download.buffers_heap_kb          the same for allocating the download's 4 KiB + 1 KiB
                                      buffers alone after the imports: much more than 5, as
                                      the imports leave the heap in holes (bytecode between
                                      freed loader blocks); working_heap_kb - this is the rest
    download.romfs_min_heap_kb.<size> min_heap_kb with the device modules in the board's ROMFS
                                      partition (`mpfota romfs`), bytecode out of the heap as
                                      on a board with them in ROMFS or frozen; the image, which
                                      the virtual board reads into the heap at boot, subtracted

Each phase is announced on stderr as it starts ("bench: ..."); stdout holds only the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from . import image, paths, romfsimage, vboard
from .devicerun import DeviceRunner, compiled, serve
from .errors import UserError

SIZES = {"1MB": 1 << 20, "16MB": 16 << 20}
BENCH_DEVICE = paths.TESTS / "bench"


def phase(text: str) -> None:
    """Say on stderr what the bench does next (some phases take tens of seconds)."""
    print(f"bench: {text}", file=sys.stderr, flush=True)


def module_file(mpy: Path, name: str) -> Path | None:
    """The compiled file of module `name` under `mpy` (a module or a package), or None."""
    rel = Path(*name.split("."))
    for cand in (mpy / rel.with_suffix(".mpy"), mpy / rel / "__init__.mpy"):
        if cand.is_file():
            return cand
    return None


def code_figures(bench: DeviceRunner, mpy: Path, board: Path, url: str
                 ) -> Iterator[tuple[str, str]]:
    """download.code_kb / .modules / .module_kb.<name> of a libfota2 raw-image core update."""
    phase("code loaded by a libfota2 raw-image core update")
    run = bench.measure(board, "libfota2", url)
    if not run.ok:
        last = (run.stdout.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"the libfota2 core update on the virtual board failed: {last}")
    sizes = {}
    reads = "?"
    for line in run.stdout.splitlines():
        if line.startswith("slot_reads: "):
            reads = line.split()[1]
        if line.startswith("module: "):
            name = line[8:].strip()
            f = module_file(mpy, name)
            if f is not None:
                sizes[name] = f.stat().st_size
    yield ("download.slot_reads", reads)
    yield ("download.code_kb", f"{sum(sizes.values()) / 1024:.1f}")
    yield ("download.modules", str(len(sizes)))
    for name, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
        yield (f"download.module_kb.{name}", f"{size / 1024:.1f}")


def download_figures(work: Path, base: str, www: Path, sizes: list[str], repeat: int
                     ) -> Iterator[tuple[str, str]]:
    bench = DeviceRunner(work, BENCH_DEVICE / "dlbench.py")
    from_rom = DeviceRunner(work, BENCH_DEVICE / "dlbench.py",
                            [compiled(work, paths.BOARDS / "unix")])
    rom = romfsimage.of_folder(compiled(work, paths.DEVICE))
    baseline = None
    for name in sizes:
        size = SIZES[name]
        body = os.urandom(size - image.HEADER_SIZE)
        (www / f"{name}.img").write_bytes(image.make_image(body, "9.9.9"))
        url = f"{base}/{name}.img"
        if baseline is None:
            board = work / "board-code"
            vboard.init(board, slot_size=size + 64 * 1024, fs_size=256 * 1024)
            yield from code_figures(bench, compiled(work, paths.DEVICE), board, url)
        board = work / f"board-{name}"
        vboard.init(board, slot_size=size + 64 * 1024, fs_size=256 * 1024)
        wall: dict[str, int] = {}
        cpu: dict[str, int] = {}
        phase(f"download {name}: {repeat} run(s) of the reference loop and of the engine")
        for _ in range(repeat):
            for mode in ("reference", "engine"):
                run = bench.measure(board, mode, url)
                if not run.ok or run.ms is None:
                    last = (run.stdout.strip().splitlines() or ["no output"])[-1]
                    raise UserError(f"{mode} download of {name} failed: {last}")
                wall[mode] = min(wall.get(mode, run.ms), run.ms)
                cpu[mode] = min(cpu.get(mode, run.cpu_ms), run.cpu_ms)
        ratio = wall["reference"] / max(wall["engine"], 1)
        yield (f"download.throughput_ratio.{name}", f"{ratio:.2f}")
        yield (f"download.engine_ms.{name}", str(wall["engine"]))
        yield (f"download.reference_ms.{name}", str(wall["reference"]))
        yield (f"download.cpu_ratio.{name}", f"{cpu['reference'] / max(cpu['engine'], 1):.2f}")
        phase(f"download {name}: smallest heap (bisection)")
        heap = bench.min_heap_kb(board, "engine", url, low=8)
        if baseline is None:
            phase("smallest heap of boot + imports, and of the buffers alone (bisection)")
            baseline = bench.min_heap_kb(board, "baseline", url, low=8)
            yield ("download.baseline_heap_kb", str(baseline))
            buffers = bench.min_heap_kb(board, "buffers", url, low=8)
            yield ("download.buffers_heap_kb", str(buffers - baseline))
        yield (f"download.min_heap_kb.{name}", str(heap))
        yield (f"download.working_heap_kb.{name}", str(heap - baseline))
        phase(f"download {name}: smallest heap with the modules in ROMFS (bisection)")
        vboard.install_romfs(board, rom)
        heap = from_rom.min_heap_kb(board, "engine", url, low=8)
        vboard.install_romfs(board, None)
        yield (f"download.romfs_min_heap_kb.{name}", str(heap - len(rom) // 1024))


def all_figures(args: argparse.Namespace, sizes: list[str]) -> Iterator[tuple[str, str]]:
    with tempfile.TemporaryDirectory(prefix="mpfota-bench-") as tmp:
        work = Path(tmp)
        www = work / "www"
        www.mkdir()
        server, base = serve(www)
        try:
            phase("compiling the device modules and the board with mpy-cross")
            if sizes:
                yield from download_figures(work, base, www, sizes, args.repeat)
            if args.peer is not None:
                from . import peerbench

                yield from peerbench.peer_figures(Path(args.peer), args.repeat, base, www, work,
                                                  phase)
        finally:
            server.shutdown()
    if not args.no_delta:
        from . import deltabench

        phase("delta figures")
        yield from deltabench.delta_figures(args.repeat)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.repeat < 1:
        raise UserError(f"--repeat {args.repeat}: at least one run of each loop is needed")
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise UserError(f"unknown size {unknown[0]!r}; choose from {', '.join(SIZES)}")
    if args.peer is not None:
        from . import peerbench

        peerbench.peer_package(Path(args.peer))  # a wrong DIR fails before any work
    for name, value in all_figures(args, sizes):
        print(f"{name}: {value}", flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="print speed and memory figures (name: value)",
        description=__doc__,
        epilog="examples:\n  mpfota bench --sizes 1MB --repeat 3\n"
               "  mpfota bench --sizes '' --no-delta --peer ../shared/peers/glenn20-esp32-ota",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sizes", default="1MB,16MB",
                   help="download sizes (default: 1MB,16MB; empty: no download figures)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each loop; best is kept")
    p.add_argument("--no-delta", action="store_true", help="skip the delta figures")
    p.add_argument("--peer", metavar="DIR",
                   help="also compare with glenn20's esp32-ota, a copy of which is in DIR")
    p.set_defaults(func=cmd_bench)
