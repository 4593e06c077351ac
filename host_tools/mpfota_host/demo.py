"""`mpfota demo`: a full core update on the virtual board, end to end.

A board running core 1.0.0 downloads core 2.0.0 from a loopback HTTP server into its spare
slot, verifies it (length, MD5, SHA-256, read-back, image check), switches the boot slot,
resets, boots the new core pending confirmation, confirms it and reports 2.0.0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from . import image, paths, vboard
from .bench import serve
from .errors import UserError

APP = paths.BOARDS / "unix" / "apps" / "update_demo.py"


def run_demo(flash: Path, target: str = "2.0.0") -> int:
    if flash.exists():
        shutil.rmtree(flash)
    vboard.init(flash, core_version="1.0.0")
    www = Path(tempfile.mkdtemp(prefix="mpfota-demo-"))
    try:
        body = os.urandom(200_000)
        (www / "core.img").write_bytes(image.make_image(body, target))
        server, base = serve(www)
        try:
            app = www / "main.py"
            app.write_text(APP.read_text().replace("{url}", f"{base}/core.img")
                           .replace("{target}", target))
            print(f"demo: board in {flash} runs core 1.0.0; server offers {target} at {base}")
            code = vboard.run(flash, app=app, max_boots=5, timeout=120)
        finally:
            server.shutdown()
    finally:
        shutil.rmtree(www, ignore_errors=True)
    if code != 0:
        raise UserError(f"the demo board ended with exit code {code}")
    print(f"demo: done - the board now boots core {target} (flash kept in {flash})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="a full update on the virtual board", description=__doc__,
        epilog="example:\n  mpfota demo --flash build/demo-board",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--flash", type=Path, default=paths.REPO / "build" / "demo-board",
                   help="board directory (recreated; default build/demo-board)")
    p.set_defaults(func=lambda a: run_demo(a.flash))
