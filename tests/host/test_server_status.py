"""The status page of `mpfota serve --status-page`, read by a real headless Chromium.

One server with traffic behind it (a download, an up-to-date check, a cyclic ban, an
operator's ban); Chromium loads /status once for its DOM and once for a screenshot.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fixtures_server import LoggedServer
from mpfota_host import cli
from test_server import FW, IMEI, P, code_of, libfota2, pkg, request

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]
OTHER = "867208320151691"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile{len(list(tmp.glob('profile*')))}"  # a fresh one each run
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, timeout=120)


class Tables(HTMLParser):
    """The text of each table cell, by table id and row."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self._table = dict(attrs).get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory):
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (make setup installs it)")
    tmp = tmp_path_factory.mktemp("status")
    srv = LoggedServer(tmp / "data", status=True).start()
    srv.store.publish(P, FW, "001.000.001", core="2012", file=pkg(tmp, "fw.bin", 4321))
    srv.store.publish(P, "OTHER_LuatOS-SoC_UNIX", "001.000.002")  # announced, not ready
    for _ in range(6):
        assert request(srv.base, libfota2())[0] == 200
    assert code_of(request(srv.base, libfota2())[2]) == 40
    assert request(srv.base, libfota2(imei=OTHER, version="2012.001.001"))[0] == 404
    assert cli.main(["server", "ban", "--data", str(tmp / "data"), OTHER]) == 0
    yield srv, tmp
    srv.stop()


def test_status_page_dom_in_chromium(busy_server):
    srv, tmp = busy_server
    done = chromium(tmp, "--dump-dom", srv.base + "/status")
    assert done.returncode == 0, done.stderr[-500:]
    dom = done.stdout.decode()
    tables = Tables()
    tables.feed(dom)
    releases = tables.tables["releases"]
    assert releases[0][:3] == ["project", "firmware", "version"]
    assert [r[2] for r in releases[1:]] == ["001.000.001", "001.000.002"]
    assert releases[2][5] == "not ready (43)"
    devices = {r[0]: r for r in tables.tables["devices"][1:]}
    assert devices[IMEI][5] == "40 cyclic upgrade" and devices[IMEI][7] == "6"
    assert devices[IMEI][8] == "cyclic" and devices[IMEI][1] == P
    assert devices[OTHER][5] == "27 up to date" and devices[OTHER][8] == "admin"
    bans = tables.tables["bans"]
    assert sorted(r[0] for r in bans[1:]) == sorted([IMEI, OTHER])
    assert f"mpfota server unban {IMEI}" in [r[3] for r in bans[1:]]
    assert re.search(r"2 packages, 2 devices, 2 bans", dom)
    assert 'title="循环升级"' in dom  # the platform's own words, as devices get them
    assert "<script" not in dom  # a read-only page: nothing runs in it


def test_status_page_screenshot(busy_server):
    srv, tmp = busy_server
    shot = tmp / "status.png"
    done = chromium(tmp, f"--screenshot={shot}", "--window-size=1200,700",
                    "--hide-scrollbars", srv.base + "/status")
    assert done.returncode == 0, done.stderr[-500:]
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 700)
    assert len(data) > 20_000  # text and tables, not a blank page (a blank one is ~3 kB)


def test_status_page_is_off_unless_asked(tmp_path):
    srv = LoggedServer(tmp_path / "data").start()
    try:
        srv.store.publish(P, FW, "001.000.001", file=pkg(tmp_path, "fw.bin"))
        status, _, body = request(srv.base, "/status")
        assert (status, code_of(body)) == (400, 3)  # an ordinary check without a device id
    finally:
        srv.stop()
