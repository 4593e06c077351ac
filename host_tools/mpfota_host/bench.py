"""`mpfota bench`: speed and memory figures, measured side by side in one run.

Delta figures: see docs/delta.md (deltabench.py). Download figures (virtual board, loopback
HTTP, device modules compiled with mpy-cross):

    download.throughput_ratio.<size>  engine / a straight reference loop doing the same work
                                      (HTTP GET, MD5 + SHA-256, sector erase + program,
                                      SHA-256 read-back); best of --repeat runs of each,
                                      alternated
    download.min_heap_kb.<size>       smallest `micropython -X heapsize` (KiB) with which the
                                      whole download path completes, found by bisection
    download.baseline_heap_kb         the same for booting and importing the modules only
                                      (bytecode of .mpy files lives in the heap on the unix
                                      port; frozen or ROMFS code on a board does not)
    download.working_heap_kb.<size>   min_heap_kb - baseline_heap_kb: what the download itself
                                      needs (buffers, streams, state), constant in the size
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from . import image, paths, vboard
from .devicerun import DeviceRunner
from .errors import UserError

SIZES = {"1MB": 1 << 20, "16MB": 16 << 20}
BENCH_DEVICE = paths.TESTS / "bench"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def download_figures(sizes: list[str], repeat: int) -> Iterator[tuple[str, str]]:
    with tempfile.TemporaryDirectory(prefix="mpfota-bench-") as tmp:
        work = Path(tmp)
        bench = DeviceRunner(work, BENCH_DEVICE / "dlbench.py")
        files = work / "www"
        files.mkdir()
        server, base = serve(files)
        baseline = None
        try:
            for name in sizes:
                size = SIZES[name]
                body = os.urandom(size - image.HEADER_SIZE)
                (files / f"{name}.img").write_bytes(image.make_image(body, "9.9.9"))
                board = work / f"board-{name}"
                vboard.init(board, slot_size=size + 64 * 1024, fs_size=256 * 1024)
                url = f"{base}/{name}.img"
                best = {"engine": None, "reference": None}
                for _ in range(repeat):
                    for mode in ("reference", "engine"):
                        ms = bench.run(board, mode, url)
                        if ms is None:
                            raise UserError(f"{mode} download of {name} failed")
                        best[mode] = ms if best[mode] is None else min(best[mode], ms)
                ratio = best["reference"] / max(best["engine"], 1)
                yield (f"download.throughput_ratio.{name}", f"{ratio:.2f}")
                yield (f"download.engine_ms.{name}", str(best["engine"]))
                yield (f"download.reference_ms.{name}", str(best["reference"]))
                heap = bench.min_heap_kb(board, "engine", url, low=8)
                if baseline is None:
                    baseline = bench.min_heap_kb(board, "baseline", url, low=8)
                    yield ("download.baseline_heap_kb", str(baseline))
                yield (f"download.min_heap_kb.{name}", str(heap))
                yield (f"download.working_heap_kb.{name}", str(heap - baseline))
        finally:
            server.shutdown()


def cmd_bench(args: argparse.Namespace) -> int:
    if args.repeat < 1:
        raise UserError(f"--repeat {args.repeat}: at least one run of each loop is needed")
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise UserError(f"unknown size {unknown[0]!r}; choose from {', '.join(SIZES)}")
    for name, value in download_figures(sizes, args.repeat):
        print(f"{name}: {value}", flush=True)
    if not args.no_delta:
        from . import deltabench

        for name, value in deltabench.delta_figures(args.repeat):
            print(f"{name}: {value}", flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="print speed and memory figures (name: value)",
        description=__doc__,
        epilog="example:\n  mpfota bench --sizes 1MB --repeat 3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sizes", default="1MB,16MB", help="download sizes (default: 1MB,16MB)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each loop; best is kept")
    p.add_argument("--no-delta", action="store_true", help="skip the delta figures")
    p.set_defaults(func=cmd_bench)
