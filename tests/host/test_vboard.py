"""Core images (mpfota image), the board directory model (vboard.init) and single boots."""

from __future__ import annotations

import hashlib
import json

import pytest
from boardfixtures import mpfota
from mpfota_host import image, vboard
from mpfota_host.errors import UserError

# --- images ----------------------------------------------------------------------------------


def test_make_image_layout_and_round_trip():
    body = b"\x00\x01core body\xff" * 100
    img = image.make_image(body, "2.1.0-rc1")
    assert len(img) == 64 + len(body)
    assert img[:4] == b"MPFI"
    assert int.from_bytes(img[4:8], "little") == 64
    assert int.from_bytes(img[8:12], "little") == len(body)
    assert img[12:32] == b"2.1.0-rc1".ljust(20, b"\0")
    assert img[32:64] == hashlib.sha256(body).digest()
    assert img[64:] == body
    header = image.verify(img + b"\xff" * 100)  # trailing erased flash is fine
    assert (header.version, header.body_length) == ("2.1.0-rc1", len(body))


@pytest.mark.parametrize("version", ["", "x" * 21, "1.0\u00e9", "1.0\n"])
def test_make_image_refuses_versions_that_do_not_fit(version):
    with pytest.raises(UserError):
        image.make_image(b"body", version)


def test_verify_finds_damage():
    img = bytearray(image.make_image(b"abc" * 50, "1.0.0"))
    with pytest.raises(UserError, match="truncated"):
        image.verify(bytes(img[:-1]))
    img[100] ^= 1
    with pytest.raises(UserError, match="SHA-256"):
        image.verify(bytes(img))
    with pytest.raises(UserError, match="not an mpfota core image"):
        image.parse_header(b"ELF!" + bytes(img[4:]))
    with pytest.raises(UserError, match="too short"):
        image.parse_header(b"MPFI")
    bad_size = bytes(img[:4]) + (32).to_bytes(4, "little") + bytes(img[8:])
    with pytest.raises(UserError, match="header size"):
        image.parse_header(bad_size)


def test_image_cli_make_and_info(tmp_path):
    body = tmp_path / "body.bin"
    body.write_bytes(b"firmware" * 1000)
    img = tmp_path / "core.img"
    made = mpfota("image", "make", "--version", "1.2.3", str(body), "-o", str(img))
    assert made.returncode == 0, made.stderr
    assert image.verify(img.read_bytes()).version == "1.2.3"
    info = mpfota("image", "info", str(img))
    assert info.returncode == 0, info.stderr
    assert "version:  1.2.3" in info.stdout
    assert "body:     8000 bytes" in info.stdout
    assert hashlib.sha256(b"firmware" * 1000).hexdigest() in info.stdout
    assert "verified: yes" in info.stdout


def _one_line_error(proc, *words):
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0]


def test_image_cli_bad_input_is_one_clear_line(tmp_path):
    body = tmp_path / "body.bin"
    body.write_bytes(b"x" * 10)
    _one_line_error(
        mpfota("image", "make", "--version", "v" * 30, str(body), "-o", str(tmp_path / "o.img")),
        "longer than 20",
    )
    _one_line_error(
        mpfota(
            "image", "make", "--version", "1", str(tmp_path / "nope"), "-o", str(tmp_path / "o.img")
        ),
        "cannot read",
    )
    _one_line_error(mpfota("image", "info", str(body)), "too short")
    bad = tmp_path / "bad.img"
    data = bytearray(image.make_image(b"y" * 500, "1.0.0"))
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    _one_line_error(mpfota("image", "info", str(bad)), "bad.img", "SHA-256")


# --- board directory -------------------------------------------------------------------------


def test_parse_size():
    assert vboard.parse_size("1M") == 1 << 20
    assert vboard.parse_size("512K") == 512 << 10
    assert vboard.parse_size("0x10000") == 0x10000
    assert vboard.parse_size("4096") == 4096
    with pytest.raises(UserError):
        vboard.parse_size("lots")


def test_init_writes_the_flash_map_and_the_factory_image(tmp_path):
    d = tmp_path / "b"
    cfg = vboard.init(d, slot_size=256 << 10, fs_size=128 << 10, core_version="0.9.1")
    on_disk = json.loads((d / "board.json").read_text())
    assert on_disk == cfg
    assert cfg["sector"] == 4096
    assert cfg["otadata"] == [0, 8192]
    (s0, n0), (s1, n1) = cfg["slots"]
    assert (s0, n0, n1) == (0x10000, 256 << 10, 256 << 10)
    assert s1 >= s0 + n0 and s1 % 0x10000 == 0
    fs_off, fs_len = cfg["fs"]
    assert fs_off >= s1 + n1 and fs_len == 128 << 10 and cfg["size"] == fs_off + fs_len
    flash = (d / "flash.bin").read_bytes()
    assert len(flash) == cfg["size"]
    assert flash[:s0] == b"\xff" * s0  # otadata erased: boot slot 0
    header = image.verify(flash[s0 : s0 + n0])
    assert header.version == "0.9.1"
    assert flash[s0 + header.total_length : s1 + n1] == b"\xff" * (
        s1 + n1 - s0 - header.total_length
    )
    assert flash[fs_off:] == b"\xff" * fs_len
    assert [a["name"] for a in cfg["adapters"]] == ["4G", "ETH", "WIFI"]


def test_identity_is_deterministic_and_plausible(tmp_path):
    a = vboard.init(tmp_path / "a", fs_size=64 << 10)
    again = vboard.init(tmp_path / "a", fs_size=64 << 10, force=True)
    other = vboard.init(tmp_path / "b", fs_size=64 << 10, identity={"imei": "861234567890123"})
    assert (a["imei"], a["mac"], a["uid"]) == (again["imei"], again["mac"], again["uid"])
    assert other["imei"] == "861234567890123" and other["mac"] != a["mac"]
    imei = a["imei"]
    assert len(imei) == 15 and imei.isdigit()
    digits = [int(c) for c in imei]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(digits))
    assert total % 10 == 0  # Luhn check digit
    assert int(a["mac"][:2], 16) & 0b11 == 0b10  # locally administered, unicast
    assert len(bytes.fromhex(a["uid"])) == 8


def test_init_refusals(tmp_path):
    vboard.init(tmp_path / "b", fs_size=64 << 10)
    with pytest.raises(UserError, match="already holds a board"):
        vboard.init(tmp_path / "b")
    with pytest.raises(UserError, match="does not fit"):
        vboard.init(
            tmp_path / "c",
            slot_size=64 << 10,
            core_image=image.make_image(b"z" * (64 << 10), "1.0.0"),
        )
    with pytest.raises(UserError, match="multiple of 4096"):
        vboard.init(tmp_path / "d", slot_size=100_000)
    with pytest.raises(UserError, match="SHA-256"):
        bad = bytearray(image.make_image(b"q" * 100, "1.0.0"))
        bad[70] ^= 1
        vboard.init(tmp_path / "e", core_image=bytes(bad))


# --- one boot --------------------------------------------------------------------------------


def test_boot_runs_the_app_on_the_factory_core(tmp_path):
    d = tmp_path / "b"
    cfg = vboard.init(d, core_version="3.0.0")
    app = tmp_path / "app.py"
    app.write_text(
        "import board, sys\n"
        "print('core', board.core_version(), board.reset_cause(), board.imei(), board.mac())\n"
        "sys.exit(9)\n"
    )
    result = vboard.boot(d, app=app, timeout=30, cause="deepsleep")
    assert result.code == 9, result.text
    assert f"core 3.0.0 deepsleep {cfg['imei']} {cfg['mac']}" in result.text


def test_boot_of_a_board_without_a_valid_core_exits_3(tmp_path):
    d = tmp_path / "b"
    cfg = vboard.init(d)
    off = cfg["slots"][0][0]
    with open(d / "flash.bin", "r+b") as f:  # break the factory image's body
        f.seek(off + 100)
        f.write(b"\0")
    result = vboard.boot(d, timeout=30)
    assert result.code == vboard.EXIT_UNBOOTABLE, result.text


def test_network_adapters_from_board_json_and_the_host_flag(tmp_path):
    d = tmp_path / "b"
    vboard.init(
        d,
        adapters=[
            {"name": "ETH", "up_after_ms": 50, "priority": 2},
            {"name": "4G", "up_after_ms": 80, "priority": 1},
        ],
    )
    (d / "net").mkdir()
    (d / "net" / "4G.down").touch()
    app = tmp_path / "app.py"
    app.write_text(
        "import vnet, time\n"
        "print('boot', vnet.default())\n"
        "time.sleep_ms(150)\n"
        "print('later', vnet.default().name, [a.name for a in vnet.adapters()])\n"
    )
    result = vboard.boot(d, app=app, timeout=30)
    assert result.code == 0, result.text
    assert "boot None" in result.text
    assert "later ETH ['4G', 'ETH']" in result.text  # 4G held down by the host
