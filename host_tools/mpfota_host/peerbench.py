"""`mpfota bench --peer DIR`: mpfota next to glenn20's esp32-ota on the same work.

DIR is a copy of glenn20/micropython-esp32-ota (its `ota` package, or the checkout holding
it); nothing of it is part of mpfota. Both update the spare slot of the ESP32 fakes
(tests/fakes/esp32) from the same ESP-IDF app image on the same loopback server (glenn20:
`ota.update.from_file(url, sha=...)`; mpfota: `download.fetch(url, sha256=...)`), each run on a
fresh copy of the board, runs alternated, both compiled with mpy-cross:

    peer.speed_ratio                  glenn20 / mpfota, in CPU time above the board's (> 1:
                                      mpfota is faster); each the best of --repeat runs
    peer.mpfota_cpu_ms, .glenn20_cpu_ms  those CPU times: the device process's user + system
                                      time minus that of a run that only boots the board
                                      (CPU time hardly moves when other jobs load the machine)
    peer.wall_ratio                   the same ratio in wall time (elapsed_ms of the update)
    peer.mpfota_ms, peer.glenn20_ms   the two best wall times
    peer.board_heap_kb                smallest heap (KiB) that boots the board, nothing more
    peer.mpfota_heap_above_board_kb   smallest heap of the mpfota update - board_heap_kb
    peer.glenn20_heap_above_board_kb  the same for glenn20
    peer.mpfota_romfs_heap_above_board_kb, peer.glenn20_romfs_heap_above_board_kb
                                      the same with the library in the board's ROMFS partition
                                      (`mpfota romfs`), where its bytecode stays in flash, above
                                      the board booted with the same partition (the virtual
                                      board reads the image into one block of heap at boot, a
                                      real board maps it: it is in both figures)
    peer.board_from_sources_heap_kb, peer.mpfota_heap_above_board_from_sources_kb,
    peer.glenn20_heap_above_board_from_sources_kb
                                      the same three with the board's modules (board, ESP32
                                      fakes, unix board) imported from .py sources, the
                                      libraries compiled: the method of
                                      ../shared/tools/vs_glenn20.sh, which first set the heap
                                      target (compiling the board at import time makes a heap
                                      peak that the update then fits into)

Two stand-ins give the peer what an ESP32 firmware has and the unix port lacks: a `flashbdev`
module (`bdev = None`) and io.BufferedWriter (tests/bench/bufwriter.py; the peer's copy in the
work folder is pointed at it).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from . import esp32image, paths, romfsimage, vboard
from .devicerun import DeviceRunner, compiled, fresh_copies
from .errors import UserError

IMAGE_SIZE = 1_500_000
FAKES = paths.TESTS / "fakes" / "esp32"
SCRIPT = paths.TESTS / "bench" / "peerbench.py"
_PEER_FILES = ("update.py", "blockdev_writer.py")


def peer_package(directory: Path) -> Path:
    """The folder of glenn20's `ota` package in `directory` (or `directory` itself)."""
    for cand in (directory / "ota", directory):
        if all((cand / f).is_file() for f in _PEER_FILES):
            return cand
    raise UserError(f"--peer {directory}: no glenn20 esp32-ota package there (expected "
                    f"ota/update.py and ota/blockdev_writer.py)")


def _install_peer(package: Path, lib: Path) -> None:
    # The peer's modules as a board holds them, plus the two stand-ins (see the docstring).
    dest = lib / "ota"
    dest.mkdir(parents=True)
    for py in package.glob("*.py"):
        text = py.read_text()
        if "io.BufferedWriter(" in text:
            text = text.replace("io.BufferedWriter(", '__import__("bufwriter").BufferedWriter(')
        (dest / py.name).write_text(text)
    (dest / "__init__.py").touch()
    shutil.copy(paths.TESTS / "bench" / "bufwriter.py", lib)
    (lib / "flashbdev.py").write_text("bdev = None  # an update needs no filesystem device\n")


def _payload(size: int) -> bytes:
    # Deterministic, incompressible bytes standing in for an app's code.
    out = bytearray()
    h = b"peer-2.0.0"
    while len(out) < size:
        h = hashlib.sha256(h).digest()
        out += h
    return bytes(out[:size])


def peer_figures(directory: Path, repeat: int, base: str, www: Path, work: Path,
                 phase: Callable[[str], None]) -> Iterator[tuple[str, str]]:
    """Figures of the peer comparison; `base` serves the folder `www`."""
    package = peer_package(directory)
    if not FAKES.is_dir():
        raise UserError("--peer needs a repository checkout (tests/fakes/esp32 is missing)")
    phase("peer: compiling both libraries and the ESP32 fakes")
    board_path = [compiled(work, paths.BOARDS / "esp32"), compiled(work, FAKES),
                  compiled(work, paths.BOARDS / "unix")]
    lib = work / "peer-src"
    _install_peer(package, lib)
    libraries = {"mpfota": compiled(work, paths.DEVICE), "glenn20": compiled(work, lib)}
    runners = {
        "mpfota": DeviceRunner(work, SCRIPT, [*board_path, libraries["mpfota"]]),
        "glenn20": DeviceRunner(work, SCRIPT, [libraries["glenn20"], *board_path]),
    }
    from_rom = DeviceRunner(work, SCRIPT, board_path)
    img = esp32image.make_app_image(_payload(IMAGE_SIZE), "2.0.0")
    (www / "app.bin").write_bytes(img)
    args = (f"{base}/app.bin", hashlib.sha256(img).hexdigest())
    slot = (len(img) // 65536 + 2) * 65536
    board0 = work / "peer-board0"
    vboard.init(board0, slot_size=slot, fs_size=64 * 1024)
    app = esp32image.make_app_image(_payload(24_000), "1.0.0")
    vboard.program_slot(board0, 0, app + b"\xff" * (slot - len(app)))
    copy = fresh_copies(board0)

    def fresh(rom: bytes | None = None) -> Path:
        board = copy()
        vboard.install_romfs(board, rom)
        return board

    wall: dict[str, int] = {}
    cpu: dict[str, int] = {}
    phase(f"peer: {repeat} update(s) of {len(img)} bytes by each, alternated")
    for _ in range(repeat):
        for name in ("board", "mpfota", "glenn20"):
            run = runners["glenn20" if name == "board" else name].measure(fresh(), name, *args)
            if not run.ok or run.ms is None:
                last = (run.stdout.strip().splitlines() or ["no output"])[-1]
                raise UserError(f"the {name} run did not complete: {last}")
            wall[name] = min(wall.get(name, run.ms), run.ms)
            cpu[name] = min(cpu.get(name, run.cpu_ms), run.cpu_ms)
    above = {name: max(cpu[name] - cpu["board"], 1) for name in ("mpfota", "glenn20")}
    yield ("peer.speed_ratio", f"{above['glenn20'] / above['mpfota']:.2f}")
    yield ("peer.mpfota_cpu_ms", str(above["mpfota"]))
    yield ("peer.glenn20_cpu_ms", str(above["glenn20"]))
    yield ("peer.wall_ratio", f"{wall['glenn20'] / max(wall['mpfota'], 1):.2f}")
    yield ("peer.mpfota_ms", str(wall["mpfota"]))
    yield ("peer.glenn20_ms", str(wall["glenn20"]))

    def smallest_heaps(by: dict[str, DeviceRunner], how: str = "") -> dict[str, int]:
        # The board alone (with glenn20's module path: it imports nothing of it) and each
        # library's update.
        heaps = {}
        for name in ("board", "mpfota", "glenn20"):
            phase(f"peer: smallest heap for {name}{how} (bisection)")
            runner = by["glenn20" if name == "board" else name]
            heaps[name] = runner.min_heap_kb(fresh, name, *args, low=8, high=1024)
        return heaps

    heaps = smallest_heaps(runners)
    yield ("peer.board_heap_kb", str(heaps["board"]))
    for name in ("mpfota", "glenn20"):
        yield (f"peer.{name}_heap_above_board_kb", str(heaps[name] - heaps["board"]))
    for name in ("mpfota", "glenn20"):
        phase(f"peer: smallest heap for {name} in ROMFS, and for the board with it (bisection)")
        rom = romfsimage.of_folder(libraries[name])
        heap, board_heap = (from_rom.min_heap_kb(lambda rom=rom: fresh(rom), mode, *args,
                                                 low=8, high=1024) for mode in (name, "board"))
        yield (f"peer.{name}_romfs_heap_above_board_kb", str(heap - board_heap))
    sources = [paths.BOARDS / "esp32", FAKES, paths.BOARDS / "unix"]
    from_sources = {
        "mpfota": DeviceRunner(work, SCRIPT, [*sources, libraries["mpfota"]]),
        "glenn20": DeviceRunner(work, SCRIPT, [libraries["glenn20"], *sources]),
    }
    heaps = smallest_heaps(from_sources, ", the board's modules from .py sources")
    yield ("peer.board_from_sources_heap_kb", str(heaps["board"]))
    for name in ("mpfota", "glenn20"):
        yield (f"peer.{name}_heap_above_board_from_sources_kb",
               str(heaps[name] - heaps["board"]))
