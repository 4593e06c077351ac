"""`mpfota board`: create, run and serve a virtual board (boards/unix on the unix port).

mpfota board init   --flash DIR [--slot-size 1M] [--fs-size 512K] [--core IMG | --core-version V]
mpfota board run    --flash DIR [--create] [APP.py] [--cut-after N] [--max-boots K]
                    [--sleep-scale S]
mpfota board serve  --flash DIR [--create]  # prints "pty: /dev/pts/N" for mpremote
mpfota board status --flash DIR [--json]    # slots, versions, boot state, journal, files

One runner at a time per board directory (boardlock): a second one is refused with a line
naming the first.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from . import boardlock, boardpty, boardstatus, image, romfsimage, vboard
from .errors import UserError
from .helptext import examples


def _size(text: str) -> int:
    try:
        return vboard.parse_size(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def _scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("the sleep scale cannot be negative")
    return value


def _say(line: str) -> None:
    print(f"board: {line}", flush=True)


def _ensure_board(directory: str, create: bool) -> None:
    """A missing board is made only when asked (--create): a mistyped path is refused."""
    if not vboard.is_board(directory):
        if not create:
            raise UserError(
                f"{directory} is not a virtual board: `mpfota board init --flash {directory}` "
                "makes one (or pass --create)"
            )
        cfg = vboard.init(directory)
        _say(
            f"initialised a new board in {directory} (core {vboard.DEFAULT_CORE_VERSION}, "
            f"flash {cfg['size']} bytes)"
        )
    vboard.check(directory)


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None


def _romfs(path: str) -> bytes:
    data = _read(path)
    romfsimage.check(data, path)
    return data


def cmd_init(args: argparse.Namespace) -> int:
    core = None
    if args.core:
        core = _read(args.core)
        try:
            image.verify(core)
        except UserError as exc:
            raise UserError(f"{args.core}: {exc}") from None
    cfg = vboard.init(
        args.flash,
        slot_size=args.slot_size,
        fs_size=args.fs_size,
        core_image=core,
        core_version=args.core_version,
        force=args.force,
        romfs=_romfs(args.romfs) if args.romfs else None,
        romfs_size=args.romfs_size,
    )
    version = image.parse_header(core).version if core else args.core_version
    (s0, n0), (s1, n1) = cfg["slots"]
    fs_off, fs_len = cfg["fs"]
    print(f"{args.flash}: flash {cfg['size']} bytes, core {version} in slot 0")
    print(f"  otadata 0x{cfg['otadata'][0]:06x} +{cfg['otadata'][1]}")
    print(f"  ota_0   0x{s0:06x} +{n0}")
    print(f"  ota_1   0x{s1:06x} +{n1}")
    print(f"  fs      0x{fs_off:06x} +{fs_len}")
    if args.romfs or args.romfs_size:
        size = (Path(args.flash) / vboard.ROMFS_IMG).stat().st_size
        print(f"  romfs   {size} bytes, {args.romfs or 'erased'} (mounted at /rom)")
    print(f"  imei {cfg['imei']}  mac {cfg['mac']}  uid {cfg['uid']}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if args.app and not Path(args.app).is_file():
        raise UserError(f"no such app file: {args.app}")
    _ensure_board(args.flash, args.create)
    return vboard.run(
        args.flash,
        app=args.app,
        cut_after=args.cut_after,
        max_boots=args.max_boots,
        sleep_scale=args.sleep_scale,
        frozen=not args.no_frozen,
        notice=_say,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    _ensure_board(args.flash, args.create)
    server = boardpty.PtyBoard(
        args.flash, frozen=not args.no_frozen, sleep_scale=args.sleep_scale, notice=_say
    )

    def stop(signum, frame):  # SIGTERM: leave through the same cleanup as Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        with boardlock.hold(args.flash, "board serve", pty=server.path):
            print(f"pty: {server.path}", flush=True)
            print(
                f"board: connect with `mpremote connect {server.path}`; Ctrl-C stops serving",
                file=sys.stderr,
                flush=True,
            )
            return server.serve_forever()
    except KeyboardInterrupt:
        return 0
    finally:
        server.close()


def cmd_status(args: argparse.Namespace) -> int:
    st = boardstatus.read(args.flash)
    print(json.dumps(st, indent=2, ensure_ascii=False) if args.json
          else boardstatus.render(args.flash, st))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "board", help="the virtual board: init, run, serve, status",
        **examples("mpfota board init --flash /tmp/b1 --slot-size 1M",
                   "mpfota board run --flash /tmp/b1 app.py",
                   "mpfota board serve --flash /tmp/b1",
                   "mpfota board status --flash /tmp/b1"),
    )
    sub = parser.add_subparsers(dest="board_command", metavar="ACTION", required=True)

    init = sub.add_parser(
        "init", help="create a board directory (board.json + flash.bin)",
        **examples("mpfota board init --flash /tmp/b1",
                   "mpfota board init --flash /tmp/b2 --slot-size 640K --fs-size 256K "
                   "--core core.img --force"),
    )
    init.add_argument("--flash", required=True, metavar="DIR", help="board directory")
    init.add_argument(
        "--slot-size",
        type=_size,
        default=vboard.DEFAULT_SLOT_SIZE,
        help="size of each core slot (default 1M)",
    )
    init.add_argument(
        "--fs-size",
        type=_size,
        default=vboard.DEFAULT_FS_SIZE,
        help="size of the littlefs region (default 512K)",
    )
    core = init.add_mutually_exclusive_group()
    core.add_argument("--core", metavar="IMG", help="core image for slot 0 (mpfota image make)")
    core.add_argument(
        "--core-version",
        default=vboard.DEFAULT_CORE_VERSION,
        help="version of the generated factory image (default 1.0.0)",
    )
    init.add_argument("--romfs", metavar="IMG",
                      help="ROMFS image (mpfota romfs) for the board's ROMFS partition, "
                      "mounted at /rom at boot")
    init.add_argument("--romfs-size", type=_size, metavar="SIZE",
                      help="give the board a ROMFS partition of SIZE (default with --romfs: "
                      "256K, or the image rounded up to 4K)")
    init.add_argument("--force", action="store_true", help="replace an existing board")
    init.set_defaults(func=cmd_init)

    run = sub.add_parser(
        "run", help="boot the board (again after resets) until the app ends",
        **examples("mpfota board run --flash /tmp/b1 app.py",
                   "mpfota board run --flash /tmp/new --create app.py   a new board first",
                   "mpfota board run --flash /tmp/b1 --cut-after 25   power cut after op 25",
                   "mpfota board run --flash /tmp/b1 --sleep-scale 0.001 --max-boots 5"),
    )
    run.add_argument("--flash", required=True, metavar="DIR", help="board directory")
    run.add_argument("--create", action="store_true",
                     help="make the board (with the defaults of init) if DIR holds none")
    run.add_argument(
        "app", nargs="?", metavar="APP.py", help="installed as /main.py at the first boot"
    )
    run.add_argument(
        "--cut-after",
        type=_positive_int,
        metavar="N",
        help="cut the power after flash operation N of the first boot",
    )
    run.add_argument("--max-boots", type=_positive_int, metavar="K", help="stop after K boots")
    run.add_argument(
        "--sleep-scale",
        type=_scale,
        default=1.0,
        metavar="S",
        help="multiply deep-sleep times by S (default 1; 0.001 makes 1 min 60 ms)",
    )
    run.add_argument(
        "--no-frozen",
        action="store_true",
        help="do not provide device/ as frozen modules (use what is deployed in /lib)",
    )
    run.set_defaults(func=cmd_run)

    serve = sub.add_parser(
        "serve", help="expose the board's REPL on a pty (for mpremote)",
        **examples("mpfota board serve --flash /tmp/b1",
                   "mpfota board serve --flash /tmp/b1 --no-frozen   only what is in /lib"),
    )
    serve.add_argument("--flash", required=True, metavar="DIR", help="board directory")
    serve.add_argument("--create", action="store_true",
                       help="make the board (with the defaults of init) if DIR holds none")
    serve.add_argument(
        "--sleep-scale",
        type=_scale,
        default=1.0,
        metavar="S",
        help="multiply deep-sleep times by S (default 1)",
    )
    serve.add_argument(
        "--no-frozen",
        action="store_true",
        help="do not provide device/ as frozen modules (use what is deployed in /lib)",
    )
    serve.set_defaults(func=cmd_serve)

    status = sub.add_parser(
        "status", help="slots, core versions, boot state, update journal and files",
        description=boardstatus.__doc__, **examples(
            "mpfota board status --flash /tmp/b1",
            "mpfota board status --flash /tmp/b1 --json   the same as JSON (status() of the "
            "device)"),
    )
    status.add_argument("--flash", required=True, metavar="DIR", help="board directory")
    status.add_argument("--json", action="store_true",
                        help="print the device's status() dict as JSON")
    status.set_defaults(func=cmd_status)
