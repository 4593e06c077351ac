"""Two `mpfota serve` processes on one PostgreSQL, behind one nginx (issue 15, scale out).

nginx passes checks to the two servers in turn and serves the package files itself at /fota/
(both servers answer upgrades with a 302 there: --redirect-base). The daily limit, bans and
release changes made through one server, or by `mpfota server` on the database, hold on both.
The cluster, nginx and the servers start once for the module.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fixtures_server import Nginx, free_port
from mpfota_host import cli, paths
from test_server import FW, P, code_of, libfota2, pkg, request


class ServeProcess:
    """`mpfota serve` as its own process; its log lines are read on a thread."""

    def __init__(self, data: Path, db: str, port: int, redirect: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(paths.REPO / "host_tools"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mpfota_host.cli", "serve", "--data", str(data), "--db", db,
             "--port", str(port), "--redirect-base", redirect, "--status-page"],
            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        first = self.proc.stderr.readline()
        m = re.match(r"mpfota serve: (http://127\.0\.0\.1:\d+) ", first)
        if not m:
            self.stop()
            raise RuntimeError(f"mpfota serve did not start: {first}")
        self.base = m[1]
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def farm(postgres, tmp_path_factory):
    """{"nginx", "servers", "db", "data"}: nginx in front of two servers on one database."""
    tmp = tmp_path_factory.mktemp("farm")
    data = tmp / "data"
    db = postgres.url("fota_farm")
    ports = [free_port(), free_port()]
    (data / "files").mkdir(parents=True)
    nginx = Nginx(data / "files", tmp / "nginx", upstreams=ports).start()
    servers = []
    try:
        for port in ports:
            servers.append(ServeProcess(data, db, port, nginx.fota_base))
        yield {"nginx": nginx, "servers": servers, "db": db, "data": data, "tmp": tmp}
    finally:
        codes = [s.stop() for s in servers]
        nginx.stop()
    assert codes == [0] * len(servers)


def admin(farm, *args: str) -> int:
    return cli.main(["server", args[0], "--data", str(farm["data"]), "--db", farm["db"],
                     *args[1:]])


def download(nginx: Nginx, target: str) -> tuple[int, bytes, str]:
    """A check through nginx; a 302 is followed to nginx's /fota/ (the static copy)."""
    status, h, body = request(nginx.base, target)
    if status != 302:
        return status, body, ""
    loc = urlsplit(h["location"])
    assert h["location"].startswith(nginx.fota_base)
    status, _, body = request(nginx.base, loc.path)
    return status, body, loc.path


def served_by(farm, imei: str) -> list[int]:
    return [sum(f"imei={imei}" in line for line in s.lines) for s in farm["servers"]]


def test_release_limit_and_bans_hold_across_both_servers(farm):
    nginx, (one, two) = farm["nginx"], farm["servers"]
    first = pkg(farm["tmp"], "fw1.bin", 40_000, seed=1)
    assert admin(farm, "publish", "--project", P, "--firmware", FW, "--version", "001.000.001",
                 str(first)) == 0
    imei = "867208320159001"
    # six downloads through nginx, the checks spread over both servers, the files from nginx
    for _ in range(6):
        status, body, _ = download(nginx, libfota2(imei=imei))
        assert (status, body) == (200, first.read_bytes())
    assert min(served_by(farm, imei)) >= 2  # both servers answered some of the six
    # the seventh, whichever server gets it: the cyclic ban, then seen by both
    assert code_of(request(nginx.base, libfota2(imei=imei))[2]) == 40
    for s in (one, two):
        assert code_of(request(s.base, libfota2(imei=imei))[2]) == 40
    # lifted once on the database: both serve again
    assert admin(farm, "unban", imei) == 0
    for s in (one, two):
        assert request(s.base, libfota2(imei=imei))[0] == 302
    # an operator's ban: both refuse with 21
    assert admin(farm, "ban", imei) == 0
    for s in (one, two):
        assert code_of(request(s.base, libfota2(imei=imei))[2]) == 21
    # a new release: both offer it at once (and nginx serves its file)
    second = pkg(farm["tmp"], "fw2.bin", 30_000, seed=2)
    assert admin(farm, "publish", "--project", P, "--firmware", FW, "--version", "001.000.002",
                 str(second)) == 0
    for s in (one, two):
        status, h, _ = request(s.base, libfota2(imei="867208320159002"))
        assert status == 302 and h["location"].endswith("-fw2.bin")
    assert download(nginx, libfota2(imei="867208320159003"))[1] == second.read_bytes()
    # retracted: both fall back to the first
    assert admin(farm, "retract", "--project", P, "--firmware", FW, "--version",
                 "001.000.002") == 0
    for s in (one, two):
        status, h, _ = request(s.base, libfota2(imei="867208320159004"))
        assert status == 302 and h["location"].endswith("-fw1.bin")
    # the status page of either server shows the same state
    pages = [request(s.base, "/status")[2].decode() for s in (one, two)]
    assert pages[0].count(imei) == pages[1].count(imei) >= 2  # in devices and bans
    assert "mpfota server unban " + imei in pages[1]


def test_concurrent_checks_on_both_servers_never_pass_the_limit(farm):
    """Twelve checks at once, six on each server: exactly six downloads are offered."""
    imei = "867208320159100"
    servers = farm["servers"]
    results: list[int] = []
    lock = threading.Lock()

    def check(base: str) -> None:
        status = request(base, libfota2(imei=imei))[0]
        with lock:
            results.append(status)

    threads = [threading.Thread(target=check, args=(servers[i % 2].base,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [302] * 6 + [429] * 6


def test_bad_database_url_is_one_line(tmp_path, capsys):
    assert cli.main(["serve", "--data", str(tmp_path), "--db", "mysql://x/y"]) == 2
    assert "expected postgresql://" in capsys.readouterr().err
    port = free_port()  # nothing listens there
    assert cli.main(["server", "releases", "--data", str(tmp_path), "--db",
                     f"postgresql://postgres@127.0.0.1:{port}/none"]) == 2
    err = capsys.readouterr().err
    assert "cannot open the database" in err and "Traceback" not in err
