"""`mpfota demo`: scenario 1 of seed 001, end to end on the virtual board.

A board running core 1.0.0 and its app (the seed's libfota2 demo, boards/unix/apps/scenario1.py)
asks the reference server (`mpfota serve`, started here on loopback) for an update. The server
offers core 2.0.0: the board downloads it into its spare slot, verifies it, calls fota_cb(0),
reboots into 2.0.0, confirms it, and its next check is answered "already the latest" (27).
`mpfota scenario 2|3` runs the other scenarios (TCP command, PSM low power).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import paths, scenarios


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="a full update on the virtual board (seed 001 scenario 1)",
        description=__doc__,
        epilog="examples:\n  mpfota demo\n  mpfota demo --flash /tmp/demo-board\n"
               "  mpfota scenario 3 --sleep-scale 0.001",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--flash", type=Path, default=paths.BUILD / "demo-board",
                   help=f"board directory (recreated; default {paths.BUILD / 'demo-board'})")
    p.set_defaults(func=lambda a: scenarios.run_scenario(1, a.flash))
