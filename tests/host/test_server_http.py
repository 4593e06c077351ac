"""`mpfota serve`: HTTP behaviour (Range, If-Range, HEAD, files), the redirect to a real nginx,
clean shutdown, the command line, and the bounded load test."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fixtures_server import LoggedServer
from mpfota_host import cli, paths
from mpfota_host.server import UNSATISFIABLE, parse_range, range_start
from mpfota_host.serverload import publish_load_release, run_load
from test_server import FW, IMEI, P, code_of, libfota2, pkg, request

SIZE = 10_000


@pytest.fixture
def srv(tmp_path):
    s = LoggedServer(tmp_path / "data", daily_limit=0).start()
    yield s
    s.stop()


@pytest.fixture
def blob(srv, tmp_path) -> bytes:
    path = pkg(tmp_path, "fw.bin", SIZE)
    srv.store.publish(P, FW, "001.000.001", file=path)
    return path.read_bytes()


def test_parse_range():
    assert parse_range(None, 10) is None
    assert parse_range("bytes=0-", 10) == (0, 9)
    assert parse_range("bytes=3-5", 10) == (3, 5)
    assert parse_range("bytes=3-100", 10) == (3, 9)
    assert parse_range("bytes=-4", 10) == (6, 9)
    assert parse_range("bytes=-40", 10) == (0, 9)
    assert parse_range("bytes=10-", 10) == UNSATISFIABLE
    assert parse_range("bytes=-0", 10) == UNSATISFIABLE
    for ignored in ("bytes=5-3", "bytes=0-1,3-4", "items=0-1", "bytes=-", "bytes=a-b", "x"):
        assert parse_range(ignored, 10) is None, ignored
    assert range_start("bytes=0-") == 0 and range_start("bytes=77-100") == 77
    assert range_start("bytes=-5") is None and range_start(None) is None


def test_range_206_and_416(srv, blob):
    status, h, body = request(srv.base, libfota2(), {"Range": "bytes=4000-"})
    assert (status, body) == (206, blob[4000:])
    assert h["content-range"] == f"bytes 4000-{SIZE - 1}/{SIZE}"
    assert h["content-length"] == str(SIZE - 4000)
    status, h, body = request(srv.base, libfota2(), {"Range": "bytes=10-19"})
    assert (status, body, h["content-range"]) == (206, blob[10:20], f"bytes 10-19/{SIZE}")
    status, _, body = request(srv.base, libfota2(), {"Range": "bytes=-100"})
    assert (status, body) == (206, blob[-100:])
    status, h, body = request(srv.base, libfota2(), {"Range": f"bytes={SIZE}-"})
    assert (status, body, h["content-range"]) == (416, b"", f"bytes */{SIZE}")
    status, _, body = request(srv.base, libfota2(), {"Range": "bytes=0-1,5-6"})
    assert (status, body) == (200, blob)  # several ranges: the whole file


def test_if_range(srv, blob):
    _, h, _ = request(srv.base, libfota2(), method="HEAD")
    etag, last_modified = h["etag"], h["last-modified"]
    assert re.fullmatch(r'"[0-9a-f]{16}"', etag)
    for validator in (etag, last_modified):
        status, _, body = request(srv.base, libfota2(),
                                  {"Range": "bytes=5000-", "If-Range": validator})
        assert (status, body) == (206, blob[5000:]), validator
    # a validator of another version of the file (or a weak one): the whole file, 200
    for stale in ('"0123456789abcdef"', "W/" + etag, "Wed, 21 Oct 2015 07:28:00 GMT"):
        status, _, body = request(srv.base, libfota2(), {"Range": "bytes=5000-", "If-Range": stale})
        assert (status, body) == (200, blob), stale


def test_head(srv, blob):
    status, h, body = request(srv.base, libfota2(), method="HEAD")
    assert (status, body, h["content-length"]) == (200, b"", str(SIZE))
    status, h, body = request(srv.base, libfota2(version="2012.001.001"), method="HEAD")
    assert (status, body) == (404, b"") and int(h["content-length"]) > 0


def test_files_and_health(srv, blob):
    name = srv.store.packages()[0].file
    status, _, body = request(srv.base, "/files/" + name, {"Range": "bytes=1-2"})
    assert (status, body) == (206, blob[1:3])
    for bad in ("/files/nope.bin", "/files/..%2Ffota.db", "/files/../fota.db", "/files/"):
        assert request(srv.base, bad)[0] == 404, bad
    assert request(srv.base, "/healthz")[:3:2] == (200, b"ok\n")


def test_keep_alive_connection_serves_many(srv, blob):
    u = urlsplit(srv.base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        for version, status in (("2012.001.000", 200), ("2012.001.001", 404)) * 3:
            conn.request("GET", libfota2(version=version))
            resp = conn.getresponse()
            assert resp.status == status
            resp.read()
    finally:
        conn.close()


def test_redirect_to_nginx_with_range(tmp_path, make_nginx):
    data = tmp_path / "data"
    first = LoggedServer(data)  # only to publish; the redirecting server reads the same data
    path = pkg(tmp_path, "fw.bin", 300_000)
    blob = path.read_bytes()
    first.store.publish(P, FW, "001.000.001", file=path)
    nginx = make_nginx(first.store.files)
    srv = LoggedServer(data, redirect_base=nginx.fota_base).start()
    try:
        status, h, body = request(srv.base, libfota2())
        assert (status, body) == (302, b"")
        loc = urlsplit(h["location"])
        assert h["location"].startswith(nginx.fota_base)
        # the download itself goes to nginx (Range and If-Range as a device resumes)
        status, h2, body = request(nginx.base, loc.path)
        assert (status, body) == (200, blob)
        status, _, body = request(nginx.base, loc.path,
                                  {"Range": "bytes=123456-", "If-Range": h2["etag"]})
        assert (status, body) == (206, blob[123456:])
        status, _, body = request(nginx.base, loc.path,
                                  {"Range": "bytes=123456-", "If-Range": '"stale"'})
        assert (status, body) == (200, blob)
        # no upgrade: still the platform's JSON from this server, never a redirect
        status, _, body = request(srv.base, libfota2(version="2012.001.001"))
        assert (status, code_of(body)) == (404, 27)
        assert "-> " + h["location"] in srv.last_line(1)
        log = nginx.access_log()
        assert [line.split()[2] for line in log] == ["200", "206", "200"]
    finally:
        srv.stop()
        first.store.close()


def test_load_through_nginx_redirect(tmp_path, make_nginx):
    srv = LoggedServer(tmp_path / "data", daily_limit=0)
    package = publish_load_release(srv.server, tmp_path, 50_000)
    nginx = make_nginx(srv.store.files)
    srv.server.redirect_base = nginx.fota_base
    srv.start()
    try:
        result = run_load(srv.server, package, devices=8, seconds=1.0, redirect=True)
    finally:
        srv.stop()
    assert result.errors == [] and result.requests > 8 * 3


def test_bounded_load_zero_errors(tmp_path):
    srv = LoggedServer(tmp_path / "data", daily_limit=0).start()
    try:
        package = publish_load_release(srv.server, tmp_path, 64 * 1024)
        result = run_load(srv.server, package, devices=16, seconds=1.5)
    finally:
        srv.stop()
    assert result.errors == []
    assert result.requests >= 16 * 4  # every device made at least one full round
    assert len(srv.wait_lines(result.requests)) == result.requests  # one log line each
    lines = result.lines()
    assert "server.errors: 0" in lines
    assert any(line.startswith("server.requests_per_s: ") for line in lines)


def test_serve_load_command(capsys):
    assert cli.main(["serve-load", "--devices", "4", "--seconds", "0.5", "--size", "4096"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^server\.requests_per_s: \d+\.\d$", out, re.MULTILINE)
    assert "server.errors: 0" in out


def test_stop_ends_idle_and_busy_connections(tmp_path):
    srv = LoggedServer(tmp_path / "data").start()
    big = pkg(tmp_path, "big.bin", 8 << 20)
    srv.store.publish(P, FW, "001.000.001", file=big)
    u = urlsplit(srv.base)
    idle = socket.create_connection((u.hostname, u.port))  # connected, says nothing
    slow = socket.create_connection((u.hostname, u.port))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(f"GET {libfota2()} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    slow.recv(1024)  # the download has started and stalls: we do not read
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 5
    with pytest.raises(OSError):
        socket.create_connection((u.hostname, u.port), timeout=1).close()
    idle.close()
    slow.close()


def test_cli_admin(tmp_path, capsys):
    data = str(tmp_path / "data")
    f = pkg(tmp_path, "fw.bin", 1234)

    def run(*args: str) -> tuple[int, str, str]:
        code = cli.main(["server", args[0], "--data", data, *args[1:]])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("publish", "--project", P, "--firmware", FW, "--version", "001.000.001",
                       "--core", "V2014", "--from-core", "V2012", "--opaque", str(f))
    assert code == 0 and "from core 2012" in out and "1234 bytes" in out
    code, out, _ = run("publish", "--project", P, "--firmware", FW, "--version", "001.000.001",
                       "--from-core", "2013")
    assert code == 0 and "not ready (43)" in out
    code, out, _ = run("releases")
    assert f"{P} {FW} 001.000.001 core 2014 from 2012: " in out and "(not ready: 43)" in out
    code, out, err = run("publish", "--project", P, "--firmware", FW, "--version", "1.2", str(f))
    assert code == 2 and "xxx.yyy.zzz" in err and "Traceback" not in err
    code, _, err = run("publish", "--project", P, "--firmware", FW, "--version", "1.0.0",
                       "--from-core", "banana", str(f))
    assert code == 2 and "core version" in err
    code, _, err = run("publish", "--project", P, "--firmware", FW, "--version", "1.0.0",
                       str(tmp_path / "missing.bin"))
    assert code == 2 and "no such file" in err
    (tmp_path / "empty.bin").write_bytes(b"")
    code, _, err = run("publish", "--project", P, "--firmware", FW, "--version", "1.0.0",
                       str(tmp_path / "empty.bin"))
    assert code == 2 and "empty" in err
    assert run("devices")[1] == "no devices seen\n"
    assert run("ban", IMEI)[0] == 0
    code, out, _ = run("allow", "--project", P, IMEI)
    code, out, _ = run("allow")
    assert out == f"{P} {IMEI}\n"
    code, _, err = run("allow", "--project", P, "bad id")
    assert code == 2 and "not a device id" in err
    code, _, err = run("retract", "--project", P, "--firmware", FW, "--version", "9.9.9")
    assert code == 2 and "no release" in err
    code, out, _ = run("unban", IMEI)
    assert out == f"unbanned {IMEI}\n"


def test_cli_devices_after_traffic(srv, blob, capsys):
    request(srv.base, libfota2())
    request(srv.base, libfota2(version="2012.001.001"))
    srv.wait_lines(2)
    assert cli.main(["server", "devices", "--data", str(srv.store.dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{IMEI} project={P} fw={FW} v=2012.001.001 ")
    assert "code=27 requests=2 offers_today=1" in out
    assert cli.main(["server", "devices", "--data", str(srv.store.dir), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert (rec["id"], rec["last_code"], rec["ban"], rec["addr"]) == (IMEI, 27, None, "127.0.0.1")


def test_serve_command_runs_and_stops_on_sigterm(tmp_path):
    data = tmp_path / "data"
    assert cli.main(["server", "publish", "--data", str(data), "--project", P, "--firmware", FW,
                     "--version", "001.000.001", str(pkg(tmp_path, "fw.bin", 777))]) == 0
    env = dict(os.environ, PYTHONPATH=str(paths.REPO / "host_tools"))
    proc = subprocess.Popen([sys.executable, "-m", "mpfota_host.cli", "serve", "--data",
                             str(data), "--port", "0"], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    try:
        first = proc.stderr.readline()
        m = re.match(r"mpfota serve: (http://127\.0\.0\.1:\d+) ", first)
        assert m, first
        status, _, body = request(m[1], libfota2())
        assert (status, len(body)) == (200, 777)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        rest = proc.stderr.read()
        assert re.search(r" GET /upgrade 200 777B ", rest) and "mpfota serve: stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_serve_refuses_a_taken_port(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code = cli.main(["serve", "--data", str(tmp_path / "d"), "--port", str(port)])
    assert code == 2 and "cannot listen" in capsys.readouterr().err


def test_data_dir_layout(tmp_path):
    srv = LoggedServer(tmp_path / "data")
    p = srv.store.publish(P, FW, "001.000.001", file=pkg(tmp_path, "My Firmware (1).bin"))
    assert (Path(srv.store.dir) / "fota.db").is_file()
    assert re.fullmatch(r"[0-9a-f]{16}-My_Firmware_1_.bin", p.file)
    original = (tmp_path / "My Firmware (1).bin").read_bytes()
    assert (srv.store.files / p.file).read_bytes() == original
    srv.store.close()


def test_publish_reads_an_mpfota_package_manifest(tmp_path, capsys):
    from mpfota_host import package

    data = str(tmp_path / "data")
    pkg_bytes = package.build(
        project=P, firmware_name=FW, to_script="001.000.002", to_core="2.0.0",
        from_core="1.0.0",
        sections=[package.scripts_section([("main.py", b"print('hello')\n")])])
    path = tmp_path / "app.pkg"
    path.write_bytes(pkg_bytes)
    assert cli.main(["server", "publish", "--data", data, str(path)]) == 0
    assert "published" in capsys.readouterr().out
    srv = LoggedServer(tmp_path / "data").start()
    try:
        p = srv.store.packages()[0]
        assert (p.project, p.firmware, p.version, p.core, p.from_core) == (
            P, FW, "001.000.002", "2.0.0", "1.0.0")
        assert request(srv.base, libfota2(version="1.0.0.001.001"))[2] == pkg_bytes
        assert code_of(request(srv.base, libfota2(version="1.5.0.001.001"))[2]) == 27
    finally:
        srv.stop()
    # the command line may repeat the manifest, not contradict it (but --project, below)
    assert cli.main(["server", "publish", "--data", data, "--project", P, str(path)]) == 0
    assert cli.main(["server", "publish", "--data", data, "--from-core", "V1.0.0", str(path)]) == 0
    assert cli.main(["server", "publish", "--data", data, "--version", "009.000.009",
                     str(path)]) == 2
    assert "differs from the package's manifest" in capsys.readouterr().err
    # --project names the project_key devices send, which may differ from PROJECT
    assert cli.main(["server", "publish", "--data", data, "--project", "KEY", str(path)]) == 0
    # a file that claims to be a package but is not one: refused, one line
    (tmp_path / "bad.pkg").write_bytes(b"MPFP" + bytes(40))
    assert cli.main(["server", "publish", "--data", data, str(tmp_path / "bad.pkg")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    # an opaque file needs the fields on the command line
    (tmp_path / "blob.bin").write_bytes(b"x" * 10)
    assert cli.main(["server", "publish", "--data", data, str(tmp_path / "blob.bin")]) == 2
    assert "--project is needed" in capsys.readouterr().err
