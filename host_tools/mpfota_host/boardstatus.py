"""`mpfota board status`: what a virtual board holds, told by the device code itself.

The board is not read from the host (that would be a second reading of the boot record and of
littlefs, which the device code already does). A copy of its flash is booted instead, as far as
the bootloader and the filesystem mount, and `mpfota.status.status()` answers, on the unix port
with the board's own modules: the view is the board as its next boot finds it, before boot.py
and main.py. The copy takes the bootloader's writes (a pending image found at boot is rolled
back there, as the next real boot would do); the board directory is left as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import boardlock, vboard
from .errors import UserError

MARK = "MPFOTA-STATUS "

# Boot (bootloader + mount, what bootrom.main does before main.py), then ask.
SCRIPT = f"""\
import json, sys, bootrom
if bootrom.boot() is None:
    sys.exit(3)
from mpfota import status
print({MARK!r} + json.dumps(status.status()))
"""


def read(directory: str | os.PathLike, timeout: float = 60) -> dict:
    """status() of the board in `directory`, from a boot of a copy of its flash."""
    if not vboard.is_board(directory):
        raise UserError(f"{directory} is not a virtual board (no {vboard.BOARD_JSON} and "
                        f"{vboard.FLASH_BIN}): `mpfota board init --flash {directory}` makes one")
    vboard.check(directory)
    with tempfile.TemporaryDirectory(prefix="mpfota-status-") as tmp:
        with boardlock.hold(directory, "board status"):
            for name in (vboard.BOARD_JSON, vboard.FLASH_BIN):
                shutil.copyfile(Path(directory) / name, Path(tmp) / name)
        argv, env = vboard.boot_command(tmp)
        try:
            proc = subprocess.run([argv[0], "-c", SCRIPT], env=env, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UserError(
                f"{directory}: the status boot did not end within {timeout:g} s") from None
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    said = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    raise UserError(f"{directory}: the board gave no status (exit {proc.returncode})"
                    + (f": {said[-1]}" if said else ""))


def render(directory: str | os.PathLike, st: dict) -> str:
    """The human view of a status() dict."""
    lines = [f"board {directory} (as its next boot finds it)"]
    for label, version in sorted(st["slots"].items()):
        marks = [m for m, on in (("running", label == st["running"]),
                                 ("boots next", label == st["boot"])) if on]
        core = f"core {version}" if version else "no image"
        lines.append(f"  {label:<8} {core:<16} {', '.join(marks)}".rstrip())
    image = {"valid": "valid (confirmed)",
             "pending": "pending: not confirmed yet, a reset rolls it back",
             "rolled_back": "rolled back: the last update was not confirmed"}
    lines.append(f"  image    {image.get(st['image'], st['image'])}")
    s = st["scripts"]
    sets = "".join(f", {k} {s[k]}" for k in ("installed", "staged") if s.get(k))
    lines.append(f"  scripts  {s['state']}{sets}")
    j = st["journal"]
    damage = f", DAMAGED: {j['damaged']}" if j.get("damaged") else ""
    lines.append(f"  journal  record {j.get('seq', 0)}{damage}"
                 + ("" if st["records"] else ", empty (no update in progress or to confirm)"))
    for name, section in sorted(st["records"].items()):
        lines.append(f"    {name}: {json.dumps(section, ensure_ascii=False)}")
    total = sum(size for _, size in st["files"])
    lines.append(f"  files    {len(st['files'])}, {total} bytes")
    lines += [f"    {size:>8}  {path}" for path, size in st["files"]]
    return "\n".join(lines)
