"""`mpfota serve`: the platform rules, each through real HTTP on 127.0.0.1.

Codes (luatos-fota-spec §1.5): 27 latest, 21 banned, 40 cyclic ban, 3 invalid device,
17 no permission, 25 invalid project, 26 invalid firmware, 43 please wait.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fixtures_server import LoggedServer
from mpfota_host import cli
from mpfota_host.server import MESSAGES, Check, device_version, parse_check

P, FW = "PKEY0123456789", "DEMO_LuatOS-SoC_UNIX"
IMEI = "867208320151690"


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0  # a fixed day

    def __call__(self) -> float:
        return self.now


def request(base: str, target: str, headers: dict | None = None, method: str = "GET"):
    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request(method, target, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def libfota2(imei: str | None = IMEI, version: str = "2012.001.000", project: str = P,
             firmware: str = FW, id_param: str = "imei") -> str:
    """The query libfota2 appends to opts.url = "/upgrade?" (spec §1.3; no URL-encoding)."""
    dev = f"{id_param}={imei}" if imei is not None else "nil"
    return f"/upgrade?{dev}&project_key={project}&firmware_name={firmware}&version={version}"


def update_lua(imei: str = IMEI, core: int = 17, version: str = "1.0.0",
               firmware: str = FW, oss: bool = False) -> str:
    """The query of the old update.lua (spec §4.1)."""
    return (f"/api/site/firmware_upgrade?project_key={P}&imei={imei}&firmware_name={firmware}"
            f"&core_version={core}&dfota=1&version={version}" + ("&need_oss_url=1" if oss else ""))


def code_of(body: bytes) -> int:
    return json.loads(body)["code"]


def admin(data: Path, *args: str) -> int:
    return cli.main(["server", args[0], "--data", str(data), *args[1:]])


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def srv(tmp_path, clock, state_db):
    """A server on SQLite, and again on PostgreSQL: the rules hold on both."""
    s = LoggedServer(tmp_path / "data", clock=clock, db=state_db)
    s.start()
    yield s
    s.stop()


def pkg(tmp_path: Path, name: str, size: int = 5000, seed: int = 1) -> Path:
    path = tmp_path / name
    path.write_bytes(bytes((i * 7 + seed) & 0xFF for i in range(size)))
    return path


@pytest.fixture
def release(srv, tmp_path):
    """Script 001.000.001 for any core."""
    path = pkg(tmp_path, "demo.bin")
    srv.store.publish(P, FW, "001.000.001", file=path)
    return path.read_bytes()


# --- parsing --------------------------------------------------------------------------


def test_parse_both_query_styles():
    c = parse_check(libfota2()[len("/upgrade?"):])
    assert (c.device, c.id_param, c.project, c.firmware, c.version, c.style) == (
        IMEI, "imei", P, FW, "2012.001.000", "libfota2")
    assert device_version(c) == device_version(Check(IMEI, "imei", P, FW, "2012.001.000", None))
    assert (device_version(c).core, device_version(c).script) == ("2012", "001.0.000")
    c = parse_check(urlsplit(update_lua(core=26, version="1.0.3", oss=True)).query)
    assert (c.core_version, c.need_oss_url, c.style) == ("26", True, "update")
    assert (device_version(c).core, device_version(c).script) == ("26", "1.0.3")
    # mac= and uid= name the device too; the core may have dots (mpfota: "2.0.0.001.000")
    assert parse_check("mac=C81234567830&version=1").device == "C81234567830"
    assert device_version(parse_check("uid=ab&version=2.0.0.001.000")).core == "2.0.0"
    for bad in ("", "1.2", "2012.1.1000", "2012.x.1", "V2012.001.001x", "1." * 100 + "1.1"):
        with pytest.raises(ValueError):
            device_version(Check(IMEI, "imei", P, FW, bad, None))


# --- answers ----------------------------------------------------------------------------


def test_upgrade_is_the_package_then_latest_is_27(srv, release):
    status, h, body = request(srv.base, libfota2())
    assert (status, body) == (200, release)
    assert h["content-length"] == str(len(release)) and h["accept-ranges"] == "bytes"
    assert h["x-fota-version"] == "001.000.001"
    status, h, body = request(srv.base, libfota2(version="2012.001.001"))
    assert status == 404 and h["content-type"].startswith("application/json")
    # exactly what the platform sends (its log: {"code": 27, "msg": "\u5df2..."})
    assert body == b'{"code": 27, "msg": "\\u5df2\\u662f\\u6700\\u65b0\\u7248\\u672c"}'
    assert json.loads(body)["msg"] == "已是最新版本" == MESSAGES[27]
    # one log line per request, with the answer and its cause, without the project key
    assert len(srv.wait_lines(2)) == 2
    assert " 200 " in srv.lines[0] and "offer 001.000.001" in srv.lines[0]
    assert " 404 " in srv.lines[1] and "code=27" in srv.lines[1] and P not in srv.lines[1]


@pytest.mark.parametrize(("device", "release", "upgrade"), [
    ("001.000.001", "001.000.002", True),    # A2 == A1, C2 > C1
    ("001.000.002", "001.000.002", False),   # same
    ("001.000.003", "001.000.002", False),   # older C
    ("001.000.001", "002.000.001", True),    # A2 > A1, C2 == C1
    ("001.000.005", "002.000.001", False),   # A2 > A1 but C2 < C1
    ("001.999.001", "001.000.002", True),    # B means nothing
    ("002.000.001", "001.000.009", False),   # A2 < A1
])
def test_seed001_version_rule(srv, tmp_path, device, release, upgrade):
    srv.store.publish(P, FW, release, file=pkg(tmp_path, "r.bin"))
    a, _, c = device.split(".")
    status, _, _ = request(srv.base, libfota2(version=f"2012.{a}.{c}"))
    assert status == (200 if upgrade else 404)
    # the old update.lua sends VERSION as it is, the core apart
    status, _, _ = request(srv.base, update_lua(version=device, core=2012))
    assert status == (200 if upgrade else 404)


def test_newer_core_is_an_upgrade(srv, tmp_path):
    srv.store.publish(P, FW, "001.000.001", core="2.0.0", file=pkg(tmp_path, "c.bin"))
    assert request(srv.base, libfota2(version="1.0.0.001.001"))[0] == 200
    assert request(srv.base, libfota2(version="2.0.0.001.001"))[0] == 404
    assert request(srv.base, libfota2(version="2.1.0.001.001"))[0] == 404


def test_banned_21_until_unbanned(srv, release, tmp_path):
    data = tmp_path / "data"
    assert admin(data, "ban", IMEI) == 0
    status, _, body = request(srv.base, libfota2())
    assert (status, code_of(body)) == (403, 21)
    assert json.loads(body)["msg"] == "不允许升级"
    assert srv.store.device(IMEI).ban == "admin"
    assert admin(data, "unban", IMEI) == 0
    assert request(srv.base, libfota2())[0] == 200


def test_cyclic_ban_40_after_six_upgrades_a_day(srv, release, tmp_path, clock):
    for _ in range(6):
        assert request(srv.base, libfota2())[0] == 200
    # resuming (Range from > 0) and HEAD do not count: they do not start a new download
    for _ in range(3):
        assert request(srv.base, libfota2(), {"Range": "bytes=100-"})[0] == 206
        assert request(srv.base, libfota2(), method="HEAD")[0] == 200
    status, _, body = request(srv.base, libfota2())
    assert (status, code_of(body)) == (429, 40)
    assert json.loads(body)["msg"] == "循环升级"
    assert srv.store.device(IMEI, clock()).offers_today == 6
    # banned until lifted: also the next day, also for a resume
    clock.now += 86400
    assert code_of(request(srv.base, libfota2())[2]) == 40
    assert code_of(request(srv.base, libfota2(), {"Range": "bytes=100-"})[2]) == 40
    # another device is not affected
    assert request(srv.base, libfota2(imei="867208320151691"))[0] == 200
    # the admin command lifts it (and its count): six more
    assert admin(tmp_path / "data", "unban", IMEI) == 0
    for _ in range(6):
        assert request(srv.base, libfota2())[0] == 200
    assert code_of(request(srv.base, libfota2())[2]) == 40


def test_count_restarts_each_day(srv, release, clock):
    for _ in range(5):
        assert request(srv.base, libfota2())[0] == 200
    clock.now += 86400
    for _ in range(6):
        assert request(srv.base, libfota2())[0] == 200
    assert code_of(request(srv.base, libfota2())[2]) == 40


def test_allow_list_invalid_device_3_and_17(srv, release, tmp_path):
    data = tmp_path / "data"
    other = "867208320151699"
    assert admin(data, "allow", "--project", P, IMEI) == 0
    assert request(srv.base, libfota2())[0] == 200
    status, _, body = request(srv.base, libfota2(imei=other))
    assert (status, code_of(body)) == (403, 3)
    assert json.loads(body)["msg"] == "无效的设备"
    # a device on another project's allow-list: no permission here
    srv.store.publish("OTHERKEY", FW, "001.000.001", file=pkg(tmp_path, "o.bin"))
    assert admin(data, "allow", "--project", "OTHERKEY", other) == 0
    assert code_of(request(srv.base, libfota2(imei=other))[2]) == 17
    assert request(srv.base, libfota2(imei=other, project="OTHERKEY"))[0] == 200
    # removing the list opens the project again
    assert admin(data, "disallow", "--project", P, IMEI) == 0
    assert request(srv.base, libfota2(imei="867208320151600"))[0] == 200


def test_bad_device_ids_are_3(srv, release):
    for target in (libfota2(imei=None),                           # libfota2 HEAD: "?nil&..."
                   libfota2(id_param="IMEI"),                     # key names are lowercase
                   libfota2(imei=""), libfota2(imei="x" * 65), libfota2(imei="a%20b")):
        status, _, body = request(srv.base, target)
        assert (status, code_of(body)) == (400, 3), target
    assert request(srv.base, libfota2(id_param="mac", imei="C8:12:34:56:78:30"))[0] == 200
    assert request(srv.base, libfota2(id_param="uid", imei="0123abcd"))[0] == 200


def test_device_of_another_project_17(srv, release, tmp_path):
    srv.store.publish("OTHERKEY", FW, "001.000.001", file=pkg(tmp_path, "o.bin"))
    assert request(srv.base, libfota2())[0] == 200  # registers the device under P
    status, _, body = request(srv.base, libfota2(project="OTHERKEY"))
    assert (status, code_of(body), json.loads(body)["msg"]) == (403, 17, "无权限")
    assert admin(tmp_path / "data", "forget", IMEI) == 0
    assert request(srv.base, libfota2(project="OTHERKEY"))[0] == 200


def test_invalid_project_25_firmware_26_version_26(srv, release):
    status, _, body = request(srv.base, libfota2(project="NOPE"))
    assert (status, code_of(body), json.loads(body)["msg"]) == (404, 25, "无效的项目")
    assert code_of(request(srv.base, libfota2(project=""))[2]) == 25
    status, _, body = request(srv.base, libfota2(firmware="OTHER_LuatOS-SoC_UNIX"))
    assert (status, code_of(body), json.loads(body)["msg"]) == (404, 26, "无效的固件")
    status, _, body = request(srv.base, libfota2(version="banana"))
    assert (status, code_of(body)) == (400, 26)
    assert "is not <core>.<X>.<Z>" in srv.last_line(4)


def test_package_not_ready_43_then_served(srv, tmp_path):
    srv.store.publish(P, FW, "1.0.1", core="22", from_core="17")  # announced, no file yet
    status, h, body = request(srv.base, update_lua(core=17))
    assert (status, code_of(body), json.loads(body)["msg"]) == (503, 43, "请等待")
    assert h["retry-after"] == "60"
    srv.store.publish(P, FW, "1.0.1", from_core="17", file=pkg(tmp_path, "p17.bin"))
    assert request(srv.base, update_lua(core=17))[0] == 200


def test_one_package_per_installed_core(srv, tmp_path):
    """Seed 002, "the complex approach": cores 17, 18, 19 shipped; each gets its own package
    to core 22 + script 1.0.1; a core with no package is told it is up to date."""
    files = {c: pkg(tmp_path, f"to22_from{c}.bin", 3000 + c, seed=c) for c in (17, 18, 19)}
    for c, f in files.items():
        assert admin(tmp_path / "data", "publish", "--project", P, "--firmware", FW,
                     "--version", "1.0.1", "--core", "V0022", "--from-core", f"V00{c}",
                     "--opaque", str(f)) == 0  # LuatOS packages: no header to read
    for i, (c, f) in enumerate(files.items()):
        imei = f"86720832015{i:04d}"
        status, _, body = request(srv.base, update_lua(imei=imei, core=c))
        assert (status, body) == (200, f.read_bytes())
        # libfota2 style: the core is the first number of version
        status, _, body = request(srv.base, libfota2(imei=imei, version=f"{c}.1.0"))
        assert (status, body) == (200, f.read_bytes())
    status, _, body = request(srv.base, update_lua(core=20))
    assert (status, code_of(body)) == (404, 27)
    assert "no package for core 20" in srv.last_line(7)
    # a package for any core is the fallback
    srv.store.publish(P, FW, "1.0.1", file=pkg(tmp_path, "any.bin", 999))
    assert request(srv.base, update_lua(core=20))[2] == (tmp_path / "any.bin").read_bytes()
    assert request(srv.base, update_lua(core=17))[2] == files[17].read_bytes()


def test_newest_release_wins_and_retract(srv, tmp_path):
    srv.store.publish(P, FW, "001.000.001", file=pkg(tmp_path, "a.bin", 100))
    srv.store.publish(P, FW, "001.000.002", file=pkg(tmp_path, "b.bin", 200))
    assert len(request(srv.base, libfota2())[2]) == 200
    assert admin(tmp_path / "data", "retract", "--project", P, "--firmware", FW,
                 "--version", "001.000.002") == 0
    assert len(request(srv.base, libfota2())[2]) == 100


def test_old_update_module_range_from_zero(srv, release):
    """update.lua always sends Range (bytes=0- first) and takes 206 (spec §4.1)."""
    status, h, body = request(srv.base, update_lua(version="1.0.0", core=17),
                              {"Range": "bytes=0-"})
    assert (status, body) == (206, release)
    assert h["content-range"] == f"bytes 0-{len(release) - 1}/{len(release)}"


def test_post_is_answered_like_get(srv, release):
    u = urlsplit(srv.base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("POST", libfota2(), body=b"x" * 100)
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, release)
    conn.close()


def test_state_survives_a_restart(tmp_path, clock):
    data = tmp_path / "data"
    first = LoggedServer(data, clock=clock).start()
    first.store.publish(P, FW, "001.000.001", file=pkg(tmp_path, "r.bin"))
    first.store.allow(P, [IMEI, "867208320151691"])
    for _ in range(6):
        assert request(first.base, libfota2())[0] == 200
    assert code_of(request(first.base, libfota2())[2]) == 40
    first.store.ban("867208320151691")
    first.stop()

    second = LoggedServer(data, clock=clock).start()
    try:
        assert code_of(request(second.base, libfota2())[2]) == 40
        assert code_of(request(second.base, libfota2(imei="867208320151691"))[2]) == 21
        assert code_of(request(second.base, libfota2(imei="867208320151692"))[2]) == 3
        dev = second.store.device(IMEI, clock())
        assert (dev.project, dev.requests, dev.offers_today, dev.ban) == (P, 8, 6, "cyclic")
        second.store.unban(IMEI)
        assert request(second.base, libfota2())[0] == 200
    finally:
        second.stop()
