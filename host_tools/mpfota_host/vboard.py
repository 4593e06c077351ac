"""Host-side model of a virtual board directory, and one boot of it.

A board directory holds `board.json` (flash map, identity, network adapters) and `flash.bin`
(the NOR flash, erased bytes are 0xFF). The contract is docs/architecture.md; the device side
is boards/unix (bootrom.py reads what `init` writes here).

Flash map written by `init` (all offsets and lengths are multiples of the 4 KiB sector):

    0x00000  otadata, 2 sectors (blank = "boot slot 0", as ESP-IDF without a factory app)
    0x10000  slot 0 (ota_0), 64 KiB aligned like ESP-IDF app partitions
    ...      slot 1 (ota_1), 64 KiB aligned
    ...      littlefs2 filesystem region (formatted by the bootrom on first boot)

Each boot is one `micropython boards/unix/bootrom.py` process (see `boot`); `run` is the
runner loop that boots again after reset, soft reset and deep sleep.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import boardlock, image, paths
from .errors import UserError

SECTOR = 4096
APP_ALIGN = 0x10000
OTADATA_SECTORS = 2
DEFAULT_SLOT_SIZE = 1 << 20
DEFAULT_FS_SIZE = 512 << 10
MIN_FS_SIZE = 32 << 10
DEFAULT_CORE_VERSION = "1.0.0"

BOARD_JSON = "board.json"
FLASH_BIN = "flash.bin"
WAKE_JSON = "wake.json"
ROMFS_IMG = "romfs.img"  # the board's ROMFS partition, mounted at /rom by bootrom
DEFAULT_ROMFS_SIZE = 256 << 10
POWER_CUT_MARK = "power_cut"  # left by the runner after a power cut: next boot's cause

# Network adapters of the simulated board (boards/unix/vnet.py); lower priority number wins.
DEFAULT_ADAPTERS = [
    {"name": "4G", "up_after_ms": 300, "priority": 1},
    {"name": "ETH", "up_after_ms": 100, "priority": 2},
    {"name": "WIFI", "up_after_ms": 200, "priority": 3},
]

# Exit codes of one boot (docs/architecture.md).
EXIT_OK = 0
EXIT_EXCEPTION = 1
EXIT_UNBOOTABLE = 3
EXIT_RESET = 64
EXIT_SOFT_RESET = 65
EXIT_DEEPSLEEP = 66
EXIT_POWER_CUT = 67
REBOOT_CAUSES = {EXIT_RESET: "hard", EXIT_SOFT_RESET: "soft", EXIT_DEEPSLEEP: "deepsleep"}

_SIZE_RE = re.compile(r"^\s*(0x[0-9a-f]+|\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'1M', '512K', '4096', '0x1000' -> bytes (K/M/G are powers of 1024)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise UserError(f"{text!r} is not a size (examples: 4096, 512K, 1M, 0x10000)")
    value = int(m.group(1), 0)
    unit = (m.group(2) or "b")[0].lower()
    return value * {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]


def _align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


# --- identity --------------------------------------------------------------------------------


def _luhn_digit(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:  # every second digit from the right of the payload is doubled
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def make_identity(seed: str) -> dict[str, str]:
    """IMEI (15 digits, Luhn-valid), MAC (locally administered) and 8-byte UID from a seed."""
    h = hashlib.sha256(f"mpfota-board/{seed}".encode()).digest()
    payload = "86" + "".join(str(b % 10) for b in h[:12])
    mac = ":".join(f"{b:02x}" for b in (0x02, *h[12:17]))
    return {"imei": payload + _luhn_digit(payload), "mac": mac, "uid": h[17:25].hex()}


# --- board.json ------------------------------------------------------------------------------


def flash_map(slot_size: int, fs_size: int) -> dict:
    """The flash layout for two slots of `slot_size` and a filesystem of `fs_size` bytes."""
    if slot_size <= image.HEADER_SIZE or slot_size % SECTOR:
        raise UserError(f"slot size {slot_size} must be a positive multiple of {SECTOR}")
    if fs_size < MIN_FS_SIZE or fs_size % SECTOR:
        raise UserError(
            f"filesystem size {fs_size} must be a multiple of {SECTOR}, >= {MIN_FS_SIZE}"
        )
    slot0 = APP_ALIGN
    slot1 = _align(slot0 + slot_size, APP_ALIGN)
    fs = _align(slot1 + slot_size, SECTOR)
    return {
        "sector": SECTOR,
        "size": fs + fs_size,
        "otadata": [0, OTADATA_SECTORS * SECTOR],
        "slots": [[slot0, slot_size], [slot1, slot_size]],
        "fs": [fs, fs_size],
    }


def is_board(directory: str | os.PathLike) -> bool:
    d = Path(directory)
    return (d / BOARD_JSON).is_file() and (d / FLASH_BIN).is_file()


def load(directory: str | os.PathLike) -> dict:
    """board.json of a board directory; UserError when it is missing or unreadable."""
    path = Path(directory) / BOARD_JSON
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(
            f"{directory} is not a virtual board (no {BOARD_JSON}): run `mpfota board init`"
        ) from None
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    for key in ("size", "otadata", "slots", "fs"):
        if key not in cfg:
            raise UserError(f"{path}: missing {key!r}")
    return cfg


def check(directory: str | os.PathLike) -> dict:
    """board.json of a board directory, checked against its flash.bin (a board that would not
    boot for either says why here, not in a traceback of the board's); UserError otherwise."""
    cfg = load(directory)
    flash = Path(directory) / FLASH_BIN
    size = flash.stat().st_size if flash.is_file() else None
    if size != cfg["size"]:
        raise UserError(f"{flash} holds {size} bytes where {BOARD_JSON} says {cfg['size']!r}: "
                        "not a board `mpfota board init` made (or a damaged one)")
    return cfg


def _write_erased(path: Path, size: int) -> None:
    chunk = b"\xff" * (1 << 20)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(chunk))
            f.write(chunk[:n] if n < len(chunk) else chunk)
            left -= n


def program_slot(directory: str | os.PathLike, slot: int, data: bytes) -> None:
    """Write raw bytes at the start of a slot (the slot must fit them; no erase is modelled)."""
    cfg = load(directory)
    off, length = cfg["slots"][slot]
    if len(data) > length:
        raise UserError(f"the image ({len(data)} bytes) does not fit slot {slot} ({length} bytes)")
    with open(Path(directory) / FLASH_BIN, "r+b") as f:
        f.seek(off)
        f.write(data)


def romfs_partition(data: bytes | None, size: int | None = None) -> bytes | None:
    """The bytes of a ROMFS partition of `size` (default: DEFAULT_ROMFS_SIZE, or the image
    rounded up to a sector) holding `data`, an image of `mpfota romfs`, then erased bytes; None
    (no partition) when neither is given."""
    if data is None and size is None:
        return None
    data = data or b""
    if data:
        from . import romfsimage

        romfsimage.check(data, "the romfs data")
    if size is None:
        size = max(DEFAULT_ROMFS_SIZE, _align(len(data), SECTOR))
    if size <= 0 or size % SECTOR or size < len(data):
        raise UserError(f"a ROMFS partition of {size} bytes cannot hold a {len(data)}-byte "
                        f"image (it must be a positive multiple of {SECTOR}, at least the image)")
    return data + b"\xff" * (size - len(data))


def install_romfs(directory: str | os.PathLike, data: bytes | None,
                  size: int | None = None) -> None:
    """Give the board the ROMFS partition `romfs_partition(data, size)`, or none."""
    _place_romfs(Path(directory), romfs_partition(data, size))


def _place_romfs(directory: Path, partition: bytes | None) -> None:
    path = directory / ROMFS_IMG
    if partition is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(partition)


def init(
    directory: str | os.PathLike,
    slot_size: int = DEFAULT_SLOT_SIZE,
    fs_size: int = DEFAULT_FS_SIZE,
    core_image: bytes | None = None,
    core_version: str = DEFAULT_CORE_VERSION,
    identity: dict[str, str] | None = None,
    adapters: list[dict] | None = None,
    force: bool = False,
    romfs: bytes | None = None,
    romfs_size: int | None = None,
) -> dict:
    """Create a board: board.json, an erased flash.bin, and a core image in slot 0.

    Without `core_image`, a small factory image labelled `core_version` is used. `romfs` (an
    image of `mpfota romfs`) and `romfs_size` give the board a ROMFS partition, see
    `romfs_partition`. Identity fields not given are derived from the directory's absolute
    path (stable across re-inits).
    Returns the board.json content.
    """
    d = Path(directory)
    if (d / BOARD_JSON).exists() and not force:
        raise UserError(f"{d} already holds a board (use --force to erase it)")
    if core_image is None:
        core_image = image.make_image(image.factory_body(core_version), core_version)
    else:
        image.verify(core_image)
    cfg = flash_map(slot_size, fs_size)
    if len(core_image) > slot_size:
        raise UserError(
            f"the core image ({len(core_image)} bytes) does not fit a {slot_size}-byte slot"
        )
    partition = romfs_partition(romfs, romfs_size)
    ident = make_identity(str(d.resolve()))
    ident.update(identity or {})
    cfg.update(ident)
    cfg["adapters"] = adapters if adapters is not None else [dict(a) for a in DEFAULT_ADAPTERS]
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create a board in {d}: {exc.strerror or exc}") from None
    with boardlock.hold(d, "board init"):
        try:
            for stale in (WAKE_JSON, POWER_CUT_MARK):
                (d / stale).unlink(missing_ok=True)
            _write_erased(d / FLASH_BIN, cfg["size"])
            (d / BOARD_JSON).write_text(json.dumps(cfg, indent=2) + "\n")
        except OSError as exc:
            raise UserError(f"cannot create a board in {d}: {exc.strerror or exc}") from None
        program_slot(d, 0, core_image)
        _place_romfs(d, partition)
    return cfg


# --- one boot --------------------------------------------------------------------------------


def bootrom() -> Path:
    """The per-boot entry point (MPFOTA_BOOTROM overrides it, for trying a stand-in)."""
    return Path(os.environ.get("MPFOTA_BOOTROM") or paths.BOARDS / "unix" / "bootrom.py")


def boot_command(
    directory: str | os.PathLike,
    cause: str = "power_on",
    cut_after: int | None = None,
    app: str | os.PathLike | None = None,
    frozen: bool = True,
    repl: bool = False,
    env: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of one boot."""
    rom = Path((env or {}).get("MPFOTA_BOOTROM") or bootrom())  # a stand-in for this boot
    full = dict(os.environ)
    for key in ("MPFOTA_CUT_AFTER", "MPFOTA_APP", "MPFOTA_REPL"):
        full.pop(key, None)
    full.update(
        MPFOTA_FLASH=str(Path(directory).resolve()),
        MPFOTA_RESET_CAUSE=cause,
        MPFOTA_FROZEN="1" if frozen else "0",
        MICROPYPATH=f"{rom.parent}:.frozen",
    )
    if cut_after:
        full["MPFOTA_CUT_AFTER"] = str(cut_after)
    if app is not None:
        full["MPFOTA_APP"] = str(Path(app).resolve())
    if repl:
        full["MPFOTA_REPL"] = "1"
    full.update(env or {})
    argv = [paths.micropython(), *(["-i"] if repl else []), str(rom)]
    return argv, full


@dataclass
class BootResult:
    code: int
    output: bytes

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")


class BootTimeout(UserError):
    def __init__(self, timeout: float, output: bytes) -> None:
        super().__init__(f"the boot did not end within {timeout:g} s")
        self.output = output


def boot(
    directory: str | os.PathLike,
    env: dict[str, str] | None = None,
    cut_after: int | None = None,
    app: str | os.PathLike | None = None,
    frozen: bool = True,
    timeout: float | None = None,
    cause: str = "power_on",
    stream: BinaryIO | None = None,
) -> BootResult:
    """Boot once; stdout and stderr (one UART) are collected and copied live to `stream`."""
    if not is_board(directory):
        raise UserError(
            f"{directory} is not a virtual board: run `mpfota board init --flash {directory}`"
        )
    with boardlock.hold(directory, "board run"):
        argv, full_env = boot_command(directory, cause, cut_after, app, frozen, env=env)
        proc = subprocess.Popen(
            argv,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        out = bytearray()
        fd = proc.stdout.fileno()
        try:
            while True:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select([fd], [], [], wait)
                if not ready:
                    raise BootTimeout(timeout or 0, bytes(out))
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                out += chunk
                if stream is not None:
                    stream.write(chunk)
                    stream.flush()
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        return BootResult(code, bytes(out))


# --- the runner loop -------------------------------------------------------------------------


def wake_ms(directory: str | os.PathLike) -> int:
    """The deep-sleep time a boot left in wake.json (0 when absent or unreadable)."""
    try:
        return max(0, int(json.loads((Path(directory) / WAKE_JSON).read_text())["ms"]))
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def run(
    directory: str | os.PathLike,
    app: str | os.PathLike | None = None,
    cut_after: int | None = None,
    max_boots: int | None = None,
    sleep_scale: float = 1.0,
    frozen: bool = True,
    timeout: float | None = None,
    stream: BinaryIO | None = None,
    notice: Callable[[str], None] | None = None,
) -> int:
    """Boot, and boot again after reset / soft reset / deep sleep; return the final exit code.

    The app (installed as /main.py) and the power-cut point apply to the first boot only:
    later boots run whatever the flash holds, as a real board does.
    """
    if stream is None:
        stream = sys.stdout.buffer
    if notice is None:

        def notice(line: str) -> None:
            stream.write(f"board: {line}\n".encode())
            stream.flush()

    d = Path(directory)
    with boardlock.hold(d, "board run"):
        cause = "power_on"
        mark = d / POWER_CUT_MARK
        if mark.exists():
            cause = "power_cut"
            mark.unlink()
        boots = 0
        while True:
            boots += 1
            first = boots == 1
            result = boot(
                d,
                cut_after=cut_after if first else None,
                app=app if first else None,
                frozen=frozen,
                timeout=timeout,
                cause=cause,
                stream=stream,
            )
            code = result.code
            if code == EXIT_POWER_CUT:
                mark.touch()
                notice(f"power cut (exit {code}); the next boot's reset cause is power_cut")
                return code
            if code not in REBOOT_CAUSES:
                if code == EXIT_UNBOOTABLE:
                    notice("nothing bootable (exit 3)")
                return code
            if max_boots is not None and boots >= max_boots:
                notice(f"stopped after {boots} boots "
                       f"(the last one asked for a reboot, exit {code})")
                return code
            cause = REBOOT_CAUSES[code]
            if code == EXIT_DEEPSLEEP:
                ms = wake_ms(d)
                seconds = ms / 1000 * sleep_scale
                notice(f"deep sleep {ms} ms (waiting {seconds:.3f} s at scale {sleep_scale:g}), "
                       "then wake")
                time.sleep(seconds)
            else:
                notice(f"{cause} reset (exit {code}), booting again")
