"""Run MicroPython code inside the unix port, with the device and board folders on its path.

Used by the device-test collector (tests/device/conftest.py) and by host tests that need to run a
snippet on the device side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host_tools"))

from mpfota_host import paths  # noqa: E402

DEVICE_TESTS = paths.TESTS / "device"
DEFAULT_TIMEOUT = 120


FAKES = paths.TESTS / "fakes"


def module_path(board: str = "unix") -> str:
    """MICROPYPATH for a device process: tests, device code, the board, fetched deps, frozen.

    board="esp32" runs boards/esp32 on the unix port against fakes of the ESP32 modules
    (tests/fakes/esp32), which keep their flash on the virtual board's simulated NOR flash.
    """
    dirs = [DEVICE_TESTS, paths.DEVICE, paths.BOARDS / board]
    if board == "esp32":
        dirs += [FAKES / "esp32", paths.BOARDS / "unix"]
    dirs.append(paths.DEPS)
    return ":".join([*(str(d) for d in dirs), ".frozen"])


def device_env(env: dict[str, str] | None = None, board: str = "unix") -> dict[str, str]:
    out = dict(os.environ)
    out["MICROPYPATH"] = module_path(board)
    if env:
        out.update(env)
    return out


class DeviceFailure(AssertionError):
    """A device-side test failed; the message carries the MicroPython traceback."""


def run_function(
    module: str,
    function: str,
    kwargs: dict,
    env: dict[str, str] | None = None,
    heapsize: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    board: str = "unix",
) -> str:
    """Call module.function(**kwargs) in MicroPython; return its output, raise on failure."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(kwargs, f)
        argfile = f.name
    cmd = [paths.micropython()]
    if heapsize:
        cmd += ["-X", f"heapsize={heapsize}"]
    cmd += [str(DEVICE_TESTS / "_run.py"), module, function, argfile]
    try:
        proc = subprocess.run(
            cmd, env=device_env(env, board), capture_output=True, text=True, timeout=timeout,
            errors="replace",
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        raise DeviceFailure(f"{module}.{function} timed out after {timeout}s\n{out}") from None
    finally:
        os.unlink(argfile)
    if proc.returncode != 0:
        raise DeviceFailure(
            f"{module}.{function} failed in MicroPython (exit {proc.returncode})\n"
            f"--- output ---\n{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


def run_code(code: str, env: dict[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT,
             heapsize: str | None = None) -> subprocess.CompletedProcess:
    """Run a snippet in MicroPython and return the completed process (not checked)."""
    cmd = [paths.micropython()]
    if heapsize:
        cmd += ["-X", f"heapsize={heapsize}"]
    cmd += ["-c", code]
    return subprocess.run(cmd, env=device_env(env), capture_output=True, text=True,
                          timeout=timeout, errors="replace")
