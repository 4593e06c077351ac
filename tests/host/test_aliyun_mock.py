"""Aliyun OTA end to end: the virtual board running aliyun_ota against `mpfota aliyun-mock`
(and its AliyunMock class) over a real mosquitto broker, packages over real HTTP."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mpfota_host import aliyun_mock, image, paths, vboard

APP = """
import asyncio, json, board
import aliyun_ota
try:
    import lsys
    lsys.PROJECT, lsys.VERSION = "aliyundemo", "1.0.0"
except ImportError:
    pass
CFG = json.loads({cfg!r})
ota = aliyun_ota.AliyunOta(CFG["pk"], CFG["dn"], CFG["ds"], host="127.0.0.1",
                           port=CFG["port"], progress_interval_ms=0, **CFG["kw"])
final = board.core_version() == CFG["final"]
asyncio.run(ota.run(CFG["final_ms"] if final else CFG["duration_ms"]))
print("app: done", board.core_version(), ota.last_result)
"""

SLOT = 256 * 1024


def _app(tmp: Path, broker, final="2.0.0", duration_ms=60000, final_ms=2500, **kw) -> Path:
    d = broker.device()
    cfg = {"pk": d["pk"], "dn": d["dn"], "ds": d["ds"], "port": broker.port, "kw": kw,
           "final": final, "duration_ms": duration_ms, "final_ms": final_ms}
    app = tmp / "aliyun_app.py"
    app.write_text(APP.format(cfg=json.dumps(cfg)))
    return app


def _reported(core: str) -> str:
    # What the board reports by default: PROJECT_VERSION_core once lsys exists, else the core.
    return f"aliyundemo_1.0.0_{core}" if (paths.DEVICE / "lsys.py").exists() else core


def _image(version: str, size: int = 150_000) -> bytes:
    # A deterministic core image body, different for each version.
    seed = hashlib.sha256(version.encode()).digest()
    body = bytearray()
    while len(body) < size:
        seed = hashlib.sha256(seed).digest()
        body += seed
    return image.make_image(bytes(body[:size]), version)


class Board:
    """One boot of a virtual board in a subprocess (stopped at teardown)."""

    def __init__(self, path: Path, app: Path) -> None:
        argv, env = vboard.boot_command(path, app=app)
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.out = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        self.out = self.proc.stdout.read()  # until the process ends

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.out.decode(errors="replace")


def _flash_state(path: Path) -> tuple[bytes, bytes]:
    # otadata (boot record) and slot 0 (the running core)
    cfg = vboard.load(path)
    flash = (path / "flash.bin").read_bytes()
    (ota_off, ota_len), (s0, s0_len) = cfg["otadata"], cfg["slots"][0]
    return flash[ota_off:ota_off + ota_len], flash[s0:s0 + s0_len]


@pytest.fixture
def mock(mqtt_broker):
    d = mqtt_broker.device()
    m = aliyun_mock.AliyunMock("127.0.0.1", mqtt_broker.port, d["pk"], d["dn"])
    yield m
    m.close()


def _failure(mock: aliyun_mock.AliyunMock, timeout: float = 15) -> aliyun_mock.Event:
    # The next negative progress step (positive steps of a running download are skipped).
    deadline = time.monotonic() + timeout
    while True:
        ev = mock.next_event(deadline - time.monotonic(), "progress")
        assert ev is not None, "no failure report from the device"
        if ev.step is not None and ev.step < 0:
            return ev


def test_end_to_end_success_with_cli(make_vboard, mqtt_broker, mock, tmp_path):
    """`mpfota aliyun-mock` pushes 2.0.0; the board downloads it through the engine, reports
    progress, reboots into 2.0.0, confirms it and reports the new version: success."""
    vb = make_vboard("e2e", slot_size=SLOT)
    fw = tmp_path / "core-2.0.0.img"
    fw.write_bytes(_image("2.0.0"))
    app = _app(tmp_path, mqtt_broker)
    d = mqtt_broker.device()
    # The board reports PROJECT_VERSION_core, or the core alone: the target follows suit.
    cli = subprocess.Popen(
        [sys.executable, "-m", "mpfota_host.cli", "aliyun-mock",
         "--broker", f"127.0.0.1:{mqtt_broker.port}", "--pk", d["pk"], "--dn", d["dn"],
         "--firmware", str(fw), "--version", _reported("2.0.0"), "--wait", "30", "--timeout", "90"],
        cwd=paths.REPO / "host_tools", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        first = cli.stdout.readline()
        assert "waiting for" in first, first
        result = {}
        runner = threading.Thread(target=lambda: result.update(code=vboard.run(
            vb.path, app=app, max_boots=3, timeout=90, stream=_Sink(result))), daemon=True)
        runner.start()
        out, _ = cli.communicate(timeout=120)
        runner.join(60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    board_out = result.get("out", b"").decode(errors="replace")
    out = first + out
    assert cli.returncode == 0, out + board_out
    assert "device runs " in out, out
    assert f"success: device reports version {_reported('2.0.0')}" in out, out
    assert "device [" in out, "progress is shown"
    assert result.get("code") == 0, board_out
    assert "I/user.fota image in ota_1 confirmed" in board_out
    assert "app: done 2.0.0" in board_out
    assert board_out.count("version reported:") == 2, board_out
    # What a second platform subscriber saw: versions, then rising progress up to 100.
    events = []
    while (ev := mock.next_event(0.5)) is not None:
        events.append(ev)
    steps = [e.step for e in events if e.kind == "progress"]
    assert len(steps) >= 3 and steps == sorted(steps) and steps[-1] == 100, steps
    assert all(1 <= s <= 100 for s in steps), steps
    assert mock.versions == [_reported("1.0.0"), _reported("2.0.0")], mock.versions
    print(board_out)


@pytest.mark.parametrize("fmt", [1, 2])
def test_delta_job_end_to_end(make_vboard, mqtt_broker, mock, tmp_path, fmt):
    """isDiff=1: the pushed file is an mpfota delta patch against the running core (format 1:
    stored, then applied; format 2: applied as it downloads); the board rebuilds 2.0.0 from it,
    reboots, confirms and reports the new version."""
    from images import core_body
    from mpfota_host import delta, deltastream

    vb = make_vboard("delta", slot_size=SLOT)
    old = image.make_image(core_body("1.0.0"), "1.0.0")  # what make_vboard put in slot 0
    body = bytearray(core_body("1.0.0"))
    body[20_000:20_000] = b"new feature " * 300
    new = image.make_image(bytes(body), "2.0.0")
    if fmt == 1:
        patch = delta.make_patch(old, new).data
    else:
        patch = deltastream.make_stream_patch(old, new).data
    assert len(patch) < len(body) // 4
    app = _app(tmp_path, mqtt_broker)
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(code=vboard.run(
        vb.path, app=app, max_boots=3, timeout=60, stream=_Sink(result))), daemon=True)
    runner.start()
    pkg = aliyun_mock.PackageServer(patch)
    try:
        assert mock.wait_inform(20) == _reported("1.0.0")
        job = aliyun_mock.make_job(pkg.url, len(patch), _reported("2.0.0"),
                                   md5=hashlib.md5(patch).hexdigest())
        job["isDiff"] = 1
        mock.push(job)
        outcome = mock.follow(_reported("2.0.0"), 60)
    finally:
        pkg.close()
        runner.join(30)
    board_out = result.get("out", b"").decode(errors="replace")
    assert outcome.success, board_out
    if fmt == 1:
        assert "delta: base ok" in board_out  # format 1's applier ran
    else:  # streamed: never stored, never through format 1's applier
        assert "unsupported format" not in board_out and "delta: base ok" not in board_out
    assert result.get("code") == 0, board_out


class _Sink:
    """A binary stream collecting the board's output into result["out"]."""

    def __init__(self, result: dict) -> None:
        self.result = result
        result["out"] = b""

    def write(self, data: bytes) -> None:
        self.result["out"] += data

    def flush(self) -> None:
        pass


def test_bad_jobs_are_refused_and_the_client_stays_connected(make_vboard, mqtt_broker, mock,
                                                              http_server, tmp_path):
    vb = make_vboard("bad", slot_size=SLOT)
    before = _flash_state(vb.path)
    board = Board(vb.path, _app(tmp_path, mqtt_broker, auto_reset=False))
    try:
        current = mock.wait_inform(20)
        assert current == _reported("1.0.0"), board.stop()
        fw = _image("2.0.0", 60_000)
        good = aliyun_mock.make_job("http://x/fw", len(fw), "2.0.0",
                                    md5=hashlib.md5(fw).hexdigest())
        pkg = aliyun_mock.PackageServer(fw)
        try:
            cases = [
                (b"{not json", -1, "not JSON"),
                ({k: v for k, v in good.items() if k != "url"}, -1, "no url"),
                ({k: v for k, v in good.items() if k not in ("md5", "sign")}, -1, "no md5"),
                ({k: v for k, v in good.items() if k != "size"}, -1, "no size"),
                ({**good, "size": "60064"}, -1, "size must be"),
                ({**good, "md5": 12345}, -1, "md5 must be"),
                ({**good, "size": SLOT + 1}, -4, "does not fit"),
                ({**good, "signMethod": "SHA1"}, -3, "unknown signMethod"),
                ({**good, "module": "MCU"}, -1, "job for module MCU"),
                ({**good, "isDiff": 1, "url": pkg.url}, -3, "delta refused"),  # not a patch
                ({**good, "url": http_server.base + "/status/404"}, -2, "HTTP 404"),
                ({**good, "url": f"http://127.0.0.1:{_closed_port()}/fw"}, -2,
                 "download failed"),
                ({**good, "url": pkg.url, "md5": "0" * 32, "sign": "0" * 32}, -3,
                 "verification failed"),
            ]
            for payload, step, text in cases:
                if isinstance(payload, bytes):
                    mock.push_raw(payload)
                else:
                    mock.push(payload)
                ev = _failure(mock)
                assert (ev.step, text in ev.desc) == (step, True), (payload, ev)
                assert len(ev.desc) <= 128
                assert ev.module == ("MCU" if "module MCU" in text else "default")
            # A second job while one runs: the first trickles in (and then fails its check).
            slow = {**good, "url": http_server.base + "/trickle?n=2500&ms=1", "size": 2500}
            mock.push(slow)
            time.sleep(0.3)
            mock.push({**good, "url": pkg.url})
            ev = _failure(mock)
            assert ev.step == -1 and "busy" in ev.desc, ev
            ev = _failure(mock)
            assert ev.step == -3, ev
            # Still connected: a job for the running version is answered with a new report.
            mock.push({**good, "version": current, "url": pkg.url})
            assert mock.wait_inform(10) == current
        finally:
            pkg.close()
    finally:
        out = board.stop()
    assert "Traceback" not in out, out
    assert _flash_state(vb.path) == before, "nothing may be switched or written to slot 0"


def _closed_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_mock_reports_failure_when_the_device_refuses(make_vboard, mqtt_broker, mock, tmp_path,
                                                      capsys):
    # The CLI in-process, pushing at once (--no-wait) to a board known to be online: an MD5
    # job whose MD5 is wrong ends in step -3.
    vb = make_vboard("refuse", slot_size=SLOT)
    board = Board(vb.path, _app(tmp_path, mqtt_broker, auto_reset=False))
    try:
        from mpfota_host import cli

        assert mock.wait_inform(20) is not None, "the board did not come online"

        d = mqtt_broker.device()
        fw = _image("2.0.0", 30_000)
        pkg = aliyun_mock.PackageServer(fw)
        try:
            code = cli.main(["aliyun-mock", "--broker", f"127.0.0.1:{mqtt_broker.port}",
                             "--pk", d["pk"], "--dn", d["dn"], "--url", pkg.url,
                             "--size", str(len(fw)), "--md5", "1" * 32, "--version", "2.0.0",
                             "--no-wait", "--timeout", "30"])
        finally:
            pkg.close()
    finally:
        board.stop()
    out = capsys.readouterr().out
    assert code == 1 and "failure: device reports step -3" in out, out


def test_hostile_device_messages_are_bad_events(mock, mqtt_broker):
    # The mock reads what devices publish: a message nested deeper than CPython's json reads,
    # params that are not an object or hold non-strings are "bad" events, and the mock goes
    # on (one of them used to raise in paho's network thread).
    import paho.mqtt.client as mqtt

    dev = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, "hostile-device")
    dev.connect("127.0.0.1", mqtt_broker.port)
    dev.loop_start()
    try:
        hostile = [b'{"params":' + b"[" * 3000 + b"]" * 3000 + b"}", b'{"params": [1]}',
                   b'{"params": {"step": [[1]]}}', b'{"params": {"version": {"a": 1}}}']
        for payload in hostile:
            dev.publish(mock.topics["progress"], payload, qos=1).wait_for_publish(5)
        dev.publish(mock.topics["progress"], json.dumps(
            {"id": "1", "params": {"step": "42", "desc": ""}}), qos=1).wait_for_publish(5)
        kinds = [mock.next_event(10).kind for _ in range(len(hostile) + 1)]
    finally:
        dev.loop_stop()
        dev.disconnect()
    assert kinds == ["bad"] * len(hostile) + ["progress"], kinds


def test_cli_argument_errors(capsys):
    from mpfota_host import cli

    assert cli.main(["aliyun-mock", "--pk", "p", "--dn", "d", "--version", "2"]) == 2
    assert "--firmware FILE, or --url" in capsys.readouterr().err
    assert cli.main(["aliyun-mock", "--pk", "p", "--dn", "d", "--version", "2", "--url",
                     "http://h/x", "--size", "10"]) == 2
    assert "needs the package's MD5" in capsys.readouterr().err
    assert cli.main(["aliyun-mock", "--pk", "p", "--dn", "d", "--version", "2", "--firmware",
                     "/nonexistent/fw.bin"]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert cli.main(["aliyun-mock", "--broker", "nohost", "--pk", "p", "--dn", "d",
                     "--version", "2", "--url", "http://h/x", "--size", "1",
                     "--md5", "0" * 32]) == 2
    assert "HOST:PORT" in capsys.readouterr().err


def test_package_server_serves_ranges():
    import urllib.request

    data = bytes(range(256)) * 40
    srv = aliyun_mock.PackageServer(data)
    try:
        with urllib.request.urlopen(srv.url, timeout=5) as r:
            assert r.status == 200 and r.read() == data
        req = urllib.request.Request(srv.url, headers={"Range": "bytes=4096-"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 206 and r.read() == data[4096:]
            assert r.headers["Content-Range"] == f"bytes 4096-{len(data) - 1}/{len(data)}"
    finally:
        srv.close()
