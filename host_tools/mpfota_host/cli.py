"""The `mpfota` console script: one subcommand per host tool.

Each tool module of this package that defines `register(subparsers)` adds its subcommand and
sets `func(args) -> int` on its parser; modules are found by name, so a new tool needs no edit
here. Bad input raises `UserError`, printed as one line (exit status 2, or the error's
`exit_status`).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

from . import __version__
from .errors import UserError

# Modules listed first, in this order, in `mpfota --help`; any other tool module follows.
FIRST = ("board", "image", "deploy", "demo", "bench", "delta")


def tool_modules() -> list[str]:
    names = [m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])]
    return [n for n in FIRST if n in names] + sorted(n for n in names if n not in FIRST)

EPILOG = """examples:
  mpfota board run --flash /tmp/b1 app.py      boot the virtual board with app.py as main.py
  mpfota board serve --flash /tmp/b1           the same board on a pty, for mpremote
  mpfota board status --flash /tmp/b1          its slots, boot state, journal and files
  mpfota deploy --port /dev/ttyUSB0            compile device/ with mpy-cross and copy it
  mpfota demo                                  a full update on the virtual board
  mpfota serve --data /srv/fota                the reference third-party update server
  mpfota serve-mip --port 8080                 the device packages as a local mip index
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpfota",
        description="Host tools for mpfota, the MicroPython FOTA client.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mpfota {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in tool_modules():
        module = importlib.import_module(f".{name}", __package__)
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"mpfota {args.command}: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_status", 2)  # 1: a failed generation (mpfota delta)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
