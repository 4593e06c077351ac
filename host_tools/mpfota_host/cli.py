"""The `mpfota` console script: one subcommand per host tool.

Each tool module exposes `register(subparsers)`, which adds its subcommand and sets
`func(args) -> int` on its parser. Bad input raises `UserError`, printed as one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import UserError

# Subcommand modules, in the order `mpfota --help` lists them.
TOOLS = ("board", "image", "deploy", "demo", "bench")

EPILOG = """examples:
  mpfota board run --flash /tmp/b1 app.py      boot the virtual board with app.py as main.py
  mpfota board serve --flash /tmp/b1           the same board on a pty, for mpremote
  mpfota deploy --port /dev/ttyUSB0            compile device/ with mpy-cross and copy it
  mpfota demo                                  a full update on the virtual board
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
    for name in TOOLS:
        importlib.import_module(f".{name}", __package__).register(sub)
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
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
