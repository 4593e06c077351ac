"""`mpfota server publish` refuses silent replacements and a --core the file contradicts, and
warns about firmware names no device sends and about a core published twice (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_server import LoggedServer
from mpfota_host import cli, esp32image, image
from test_server import FW, P, libfota2, pkg, request


@pytest.fixture
def publish(tmp_path, capsys):
    data = str(tmp_path / "data")

    def run(*args: str) -> tuple[int, str, str]:
        code = cli.main(["server", "publish", "--data", data, "--project", P, *args])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return code, out, err

    return run


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_replacing_a_release_needs_replace(publish, tmp_path):
    a, b = str(pkg(tmp_path, "a.bin", 1000, seed=1)), str(pkg(tmp_path, "b.bin", 1000, seed=2))
    release = ("--firmware", FW, "--version", "001.000.001")
    code, out, _ = publish(*release, a)
    assert code == 0 and out.startswith("published ")
    code, out, _ = publish(*release, a)  # the same file again: nothing changes
    assert code == 0 and out.startswith("already published ")
    code, _, err = publish(*release, b)
    assert code == 2 and "already published with" in err and "--replace" in err
    code, out, _ = publish(*release, "--replace", b)
    assert code == 0 and out.startswith("replaced ")
    srv = LoggedServer(tmp_path / "data").start()
    try:
        assert request(srv.base, libfota2())[2] == (tmp_path / "b.bin").read_bytes()
    finally:
        srv.stop()
    # an announced package (43) gets its file without --replace
    assert publish(*release[:3], "001.000.002", "--from-core", "2013")[0] == 0
    assert publish(*release[:3], "001.000.002", "--from-core", "2013", a)[0] == 0
    # changing the core a release brings is a replacement too
    img = write(tmp_path, "core.img", image.make_image(b"x" * 100, "3.0.0"))
    code, _, err = publish(*release, "--core", "3.0.0", img)
    assert code == 2 and "--replace" in err


def test_core_must_match_the_image_header(publish, tmp_path):
    fw = ("--firmware", FW, "--version", "001.000.001")
    img = write(tmp_path, "core.img", image.make_image(b"body" * 100, "2.0.0"))
    code, _, err = publish(*fw, "--core", "3.0.0", img)
    assert code == 2 and "mpfota core image" in err and "says its core is '2.0.0'" in err
    assert publish(*fw, "--core", "V2.0.0", img)[0] == 0
    app = write(tmp_path, "app.bin", esp32image.make_app_image(bytes(range(256)) * 40, "2.1.0"))
    code, _, err = publish(*fw[:3], "001.000.002", "--core", "2.2.0", app)
    assert code == 2 and "ESP32 app image" in err and "'2.1.0'" in err
    assert publish(*fw[:3], "001.000.002", "--core", "2.1.0", app)[0] == 0
    broken = write(tmp_path, "broken.bin", b"\xe9" + bytes(200))
    code, _, err = publish(*fw[:3], "001.000.003", "--core", "2.3.0", broken)
    assert code == 2 and "damaged" in err
    # a 12-byte script is no core: refused, unless the operator says the format is opaque
    script = write(tmp_path, "main.py", b"print('hi')\n")
    code, _, err = publish(*fw[:3], "001.000.004", "--core", "2.0.0", script)
    assert code == 2 and "no core image header" in err and "--opaque" in err
    assert publish(*fw[:3], "001.000.004", "--core", "9.0.0", "--opaque", script)[0] == 0
    # without --core nothing is read from the file
    assert publish(*fw[:3], "001.000.005", script)[0] == 0


def test_warnings_firmware_name_and_core_published_twice(publish, tmp_path):
    f = str(pkg(tmp_path, "a.bin"))
    code, _, err = publish("--firmware", "demo.bin", "--version", "001.000.001", f)
    assert code == 0 and "warning: firmware name 'demo.bin'" in err
    assert "PROJECT_LuatOS-SoC_<bsp>" in err
    code, _, err = publish("--firmware", FW, "--version", "001.000.001", f)
    assert code == 0 and "warning" not in err
    first = write(tmp_path, "c1.img", image.make_image(b"one" * 50, "2.0.0"))
    second = write(tmp_path, "c2.img", image.make_image(b"two" * 50, "2.0.0"))
    code, _, err = publish("--firmware", FW, "--version", "001.000.002", "--core", "2.0.0",
                           first)
    assert code == 0 and "warning" not in err
    code, _, err = publish("--firmware", FW, "--version", "001.000.003", "--core", "2.0.0",
                           second)
    assert code == 0
    assert "warning: core 2.0.0 is already published in release 001.000.002" in err
