"""Issue 14 item 3: the reinstall loop is gone.

Seed scenario 1 with a `###` URL to a static core image, checked again and again: the board
installs the image once, resets into it and confirms it; every later check of the same URL stops
at the image's header ("already running this image", libfota2 result 4) with nothing written,
switched or reset. Before the same-image guard each check downloaded, switched and reset again.
"""

from __future__ import annotations

import io

from images import core_image
from mpfota_host import vboard

APP = """
import asyncio
import board
import libfota2
from mpfota import confirm

if confirm.check_boot() == "pending":
    confirm.confirm()
print("core", board.core_version())


def fota_cb(ret):
    print("fota result", ret)
    if ret == 0:
        board.reset()


async def main():
    for _ in range(3):  # three periodic checks of the same URL
        libfota2.request(fota_cb, {"url": "###%s"})
        await asyncio.sleep_ms(400)

asyncio.run(main())
"""


def test_a_static_image_is_installed_once_then_every_check_gives_4(make_vboard, http_server,
                                                                   tmp_path):
    board = make_vboard("loop")
    blob = http_server.add_blob("loop-core-2.0.0", core_image("2.0.0"))
    url = f"{http_server.base}/blob/{blob.name}?tag=loop"
    app = tmp_path / "app.py"
    app.write_text(APP % url)
    before = len(http_server.requests_tagged("loop"))
    out = io.BytesIO()
    code = vboard.run(board.path, app=app, max_boots=4, timeout=60, stream=out)
    text = out.getvalue().decode(errors="replace")
    assert code == 0, text
    results = [line.split()[-1] for line in text.splitlines() if line.startswith("fota result")]
    # Boot 1: downloaded, switched, reset (result 0). Boot 2 runs 2.0.0: three checks, each 4.
    assert results == ["0", "4", "4", "4"], text
    assert text.count("board: hard reset") == 1, text
    assert text.count("already running this image") == 3, text
    assert "core 2.0.0" in text
    # Four requests: one whole download, three that stopped at the header.
    assert len(http_server.requests_tagged("loop")) - before == 4
