"""`mpfota romfs` and the virtual board's ROMFS partition: the device modules imported in place.

The image is read back by the MicroPython unix port's own VfsRom, and a whole libfota2 update
runs on a board whose mpfota modules come from /rom.
"""

from __future__ import annotations

import io
import subprocess

import pytest
from boardfixtures import mpfota, mpremote, serve, served_board  # noqa: F401
from images import core_image
from mpfota_host import paths, romfsimage, vboard

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
    assert data.startswith(romfsimage.HEADER)
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
    (board / vboard.ROMFS_IMG).write_bytes(b"\x00" * 4096)  # the partition overwritten
    app = tmp_path / "app.py"
    app.write_text("import sys, mpfota\nprint('imported', mpfota.__file__, sys.path[0])\n")
    out = io.BytesIO()
    code = vboard.run(board, app=app, max_boots=1, timeout=60, stream=out)
    text = out.getvalue().decode(errors="replace")
    assert code == 0, text
    assert "bootrom: romfs.img holds no ROMFS image; not mounted" in text
    assert "imported /.rom" in text and "/rom/" not in text.split("imported", 1)[1]


def test_deploy_romfs_to_a_board_without_romfs_is_one_clear_line(served_board):  # noqa: F811
    # The unix port has no ROMFS partition (vfs.rom_ioctl): mpremote refuses, deploy says why.
    proc = mpfota("deploy", "--port", served_board.port, "--romfs", timeout=180)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "romfs deploy to" in proc.stderr and "ROMFS is not enabled" in proc.stderr


def test_deploy_romfs_writes_the_partition_of_a_served_board(tmp_path):
    # A board with an erased 256 KiB ROMFS partition, served on a pty: `mpfota deploy --romfs`
    # writes it through the real mpremote (vfs.rom_ioctl of the virtual board), the next boot
    # imports the modules from /rom, and `mpremote romfs query` reads the image back.
    directory = tmp_path / "board"
    init = mpfota("board", "init", "--flash", str(directory), "--romfs-size", "256K")
    assert init.returncode == 0, init.stderr
    assert "romfs   262144 bytes, erased" in init.stdout
    board = serve(directory, "--no-frozen")
    try:
        before = mpremote(board.port, "exec", "import mpfota")
        assert before.returncode != 0 and "ImportError" in before.stdout + before.stderr
        plain = mpfota("deploy", "--port", board.port, timeout=300)  # to /lib first
        assert plain.returncode == 0, plain.stdout + plain.stderr
        assert "this board has a ROMFS partition: `mpfota deploy --romfs`" in plain.stdout
        proc = mpfota("deploy", "--port", board.port, "--romfs", timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "deploy: done; modules are in :/rom" in proc.stdout
        image = (paths.BUILD / "deploy" / "unix.romfs").read_bytes()
        partition = (directory / vboard.ROMFS_IMG).read_bytes()
        assert len(partition) == 256 << 10 and partition.startswith(image)
        written = -(-len(image) // 4096) * 4096  # mpremote pads its last 4 KiB chunk with 0
        assert partition[written:] == b"\xff" * (len(partition) - written)
        show = "import mpfota.download, sys; print(mpfota.download.__file__, sys.path[0])"
        after = mpremote(board.port, "soft-reset", "exec", show)
        assert after.returncode == 0, after.stdout + after.stderr
        assert "/rom/mpfota/download.mpy /rom" in after.stdout
        query = mpremote(board.port, "romfs", "query")
        assert query.returncode == 0, query.stderr
        # mpremote prints the payload's size: the image less its header and varint length
        # (which may start with a 0x80 byte that pads the image to an even size)
        i, payload = 3, 0
        while True:
            payload = payload << 7 | image[i] & 0x7F
            i += 1
            if not image[i - 1] & 0x80:
                break
        assert i + payload == len(image)
        assert f"ROMFS image size: {payload}\n" in query.stdout
    finally:
        board.stop()


def test_rom_ioctl_keeps_to_its_partition_and_to_nor_flash(tmp_path):
    # The virtual board's vfs.rom_ioctl, called as mpremote calls it: writes outside the
    # partition are refused; a write over bytes not erased only clears bits (NOR flash).
    directory = tmp_path / "board"
    vboard.init(directory, slot_size=128 << 10, fs_size=64 << 10, romfs_size=8192)
    app = tmp_path / "app.py"
    app.write_text(
        "import vfs\n"
        "print('parts', vfs.rom_ioctl(1), vfs.rom_ioctl(2, 1), vfs.rom_ioctl(6, 0))\n"
        "print('len', len(vfs.rom_ioctl(2, 0)))\n"
        "print('min', vfs.rom_ioctl(3, 0, 0, 4096))\n"
        "vfs.rom_ioctl(4, 0, 0, b'\\x0f\\xf0')\n"
        "vfs.rom_ioctl(4, 0, 0, b'\\x3c\\x3c')\n"
        "print('mem', bytes(vfs.rom_ioctl(2, 0)[:3]))\n"
        "try:\n"
        "    vfs.rom_ioctl(4, 0, 8190, b'abcd')\n"
        "except ValueError as e:\n"
        "    print('refused', e)\n"
    )
    out = io.BytesIO()
    code = vboard.run(directory, app=app, max_boots=1, timeout=60, stream=out)
    text = out.getvalue().decode(errors="replace")
    assert code == 0, text
    assert "parts 1 -19 4096" in text and "len 8192" in text and "min 4" in text
    assert "mem b'\\x0c0\\xff'" in text  # 0x0f & 0x3c, 0xf0 & 0x3c; the next byte erased
    assert "refused outside the ROMFS partition" in text
    assert (directory / vboard.ROMFS_IMG).read_bytes()[:3] == b"\x0c\x30\xff"
