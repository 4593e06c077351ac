"""`mpfota romfs` and the virtual board's ROMFS partition: the device modules imported in place.

The image is read back by the MicroPython unix port's own VfsRom, and a whole libfota2 update
runs on a board whose mpfota modules come from /rom.
"""

from __future__ import annotations

import io
import subprocess

import pytest
from boardfixtures import mpfota, served_board  # noqa: F401
from images import core_image
from mpfota_host import paths, romfs, vboard

LIST = """
import vfs, os
with open(%r, "rb") as f:
    rom = f.read()
vfs.mount(vfs.VfsRom(rom), "/rom")
print(sorted(os.listdir("/rom/mpfota")))
with open("/rom/mpfota/deltarun.mpy", "rb") as f:
    print("arch", f.read(4)[2] >> 2)
"""

APP = """
import sys
import asyncio
import libfota2
from mpfota import download

print("from", download.__file__, libfota2.__file__)
print("path", sys.path[0])
done = []


async def main():
    libfota2.request(done.append, {"url": "###%s"})
    while not done:
        await asyncio.sleep_ms(20)

asyncio.run(main())
print("fota result", done)
"""


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("romfs") / "mpfota.romfs"
    proc = mpfota("romfs", "-o", str(path), "--arch", "x64")
    assert proc.returncode == 0, proc.stderr
    assert f"romfs: {path}: {path.stat().st_size} bytes (unix board, x64)" in proc.stdout
    return path


def test_the_image_holds_every_device_module_compiled_for_the_board(image_file):
    data = image_file.read_bytes()
    assert data.startswith(romfs.HEADER)
    out = subprocess.run([paths.micropython(), "-c", LIST % str(image_file)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    modules = sorted(p.stem + ".mpy" for p in (paths.DEVICE / "mpfota").glob("*.py"))
    assert str(modules) in out.stdout
    assert "arch 2" in out.stdout  # x64 viper code in mpfota.deltarun (native arch index 2)


def test_romfs_needs_an_architecture_and_says_so(tmp_path):
    proc = mpfota("romfs", "-o", str(tmp_path / "x.romfs"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--port PORT or --arch ARCH" in proc.stderr
    assert not (tmp_path / "x.romfs").exists()


def test_board_init_refuses_a_file_that_is_no_romfs_image(tmp_path):
    bad = tmp_path / "bad.romfs"
    bad.write_bytes(b"not an image at all")
    proc = mpfota("board", "init", "--flash", str(tmp_path / "b"), "--romfs", str(bad))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{bad} is not a ROMFS image" in proc.stderr


def test_an_update_runs_with_the_modules_in_romfs(image_file, http_server, tmp_path):
    board = tmp_path / "b"
    vboard.init(board, slot_size=256 << 10, fs_size=128 << 10, romfs=image_file.read_bytes())
    blob = http_server.add_blob("romfs-core-2.0.0", core_image("2.0.0"))
    app = tmp_path / "app.py"
    app.write_text(APP % f"{http_server.base}/blob/{blob.name}")
    out = io.BytesIO()
    code = vboard.run(board, app=app, max_boots=1, timeout=60, stream=out)
    text = out.getvalue().decode(errors="replace")
    assert code == 0, text
    assert "from /rom/mpfota/download.mpy /rom/libfota2.mpy" in text
    assert "path /rom" in text
    assert "fota result [0]" in text
    assert vboard.load(board)  # still a board
    status = mpfota("board", "status", "--flash", str(board), "--json")
    assert '"2.0.0"' in status.stdout, status.stdout


def test_a_damaged_partition_is_reported_and_the_board_boots_without_it(image_file, tmp_path):
    board = tmp_path / "b"
    vboard.init(board, slot_size=256 << 10, fs_size=128 << 10, romfs=image_file.read_bytes())
    (board / vboard.ROMFS_IMG).write_bytes(b"\x00" * 64)  # the partition erased or overwritten
    app = tmp_path / "app.py"
    app.write_text("import sys, mpfota\nprint('imported', mpfota.__file__, sys.path[0])\n")
    out = io.BytesIO()
    code = vboard.run(board, app=app, max_boots=1, timeout=60, stream=out)
    text = out.getvalue().decode(errors="replace")
    assert code == 0, text
    assert "bootrom: romfs.img is not a ROMFS image" in text
    assert "imported /.rom" in text and "/rom/" not in text.split("imported", 1)[1]


def test_deploy_romfs_to_a_board_without_romfs_is_one_clear_line(served_board):  # noqa: F811
    # The unix port has no ROMFS partition (vfs.rom_ioctl): mpremote refuses, deploy says why.
    proc = mpfota("deploy", "--port", served_board.port, "--romfs", timeout=180)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "romfs deploy to" in proc.stderr and "ROMFS is not enabled" in proc.stderr
