"""`mpfota board init / run / serve`, end to end on the unix port, with the real mpremote."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import serial
from boardfixtures import mpfota, mpremote, serve, served_board  # noqa: F401

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n>"


def _app(tmp_path, source: str, name: str = "app.py"):
    path = tmp_path / name
    path.write_text(source)
    return str(path)


def _run(board, *args, timeout=60):
    """`board run --create`: most tests start from a new board."""
    return mpfota("board", "run", "--flash", str(board), "--create", *args, timeout=timeout)


# --- init ------------------------------------------------------------------------------------


def test_board_init_cli_prints_the_map_and_uses_a_given_core(tmp_path):
    body = tmp_path / "body"
    body.write_bytes(b"B" * 3000)
    img = tmp_path / "core.img"
    assert mpfota("image", "make", "--version", "7.0.0", str(body), "-o", str(img)).returncode == 0
    d = tmp_path / "b"
    proc = mpfota(
        "board",
        "init",
        "--flash",
        str(d),
        "--slot-size",
        "128K",
        "--fs-size",
        "64K",
        "--core",
        str(img),
    )
    assert proc.returncode == 0, proc.stderr
    assert "core 7.0.0 in slot 0" in proc.stdout
    assert "ota_1   0x030000 +131072" in proc.stdout
    cfg = json.loads((d / "board.json").read_text())
    assert cfg["slots"] == [[0x10000, 128 << 10], [0x30000, 128 << 10]]
    flash = (d / "flash.bin").read_bytes()
    assert flash[0x10000 : 0x10000 + len(img.read_bytes())] == img.read_bytes()
    again = mpfota("board", "init", "--flash", str(d))
    assert again.returncode == 2 and "already holds a board" in again.stderr
    bad = mpfota("board", "init", "--flash", str(tmp_path / "c"), "--fs-size", "12K")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


# --- run -------------------------------------------------------------------------------------


def test_run_returns_the_apps_exit_status_and_initialises_a_new_board(tmp_path):
    d = tmp_path / "b"
    proc = _run(d, _app(tmp_path, "print('hello from main')\nimport sys\nsys.exit(42)\n"))
    assert proc.returncode == 42, proc.stdout + proc.stderr
    assert "initialised a new board" in proc.stdout
    assert "hello from main" in proc.stdout
    crash = _run(d, _app(tmp_path, "raise ValueError('boom')\n", "crash.py"))
    assert crash.returncode == 1
    assert "ValueError: boom" in crash.stdout
    fine = _run(d, _app(tmp_path, "print('ok')\n", "fine.py"))
    assert fine.returncode == 0 and "ok" in fine.stdout


def test_run_boots_again_after_reset_and_soft_reset(tmp_path):
    app = _app(
        tmp_path,
        (
            "import board, os, sys\n"
            "print('boot cause', board.reset_cause())\n"
            "n = len(os.listdir('/marks')) if 'marks' in os.listdir('/') else 0\n"
            "if n == 0:\n"
            "    os.mkdir('/marks')\n"
            "open('/marks/%d' % n, 'w').close()\n"
            "if n == 0:\n"
            "    board.reset()\n"
            "if n == 1:\n"
            "    board.soft_reset()\n"
            "print('done after', n + 1, 'boots')\n"
            "sys.exit(5)\n"
        ),
    )
    proc = _run(tmp_path / "b", app)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    causes = [ln.split()[-1] for ln in proc.stdout.splitlines() if ln.startswith("boot cause")]
    assert causes == ["power_on", "hard", "soft"]
    assert "done after 3 boots" in proc.stdout
    assert "board: hard reset (exit 64)" in proc.stdout
    assert "board: soft reset (exit 65)" in proc.stdout


def test_deep_sleep_wakes_after_the_scaled_time(tmp_path):
    app = _app(
        tmp_path,
        (
            "import board, sys\n"
            "print('cause', board.reset_cause())\n"
            "if board.reset_cause() != 'deepsleep':\n"
            "    board.deepsleep(600000)\n"  # ten minutes, 0.6 s at scale 0.001
            "sys.exit(0)\n"
        ),
    )
    start = time.monotonic()
    proc = _run(tmp_path / "b", app, "--sleep-scale", "0.001")
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "board: deep sleep 600000 ms (waiting 0.600 s at scale 0.001), then wake" in proc.stdout
    assert "cause deepsleep" in proc.stdout
    assert 0.6 <= elapsed < 20


def test_power_cut_is_reported_and_the_next_boot_knows(tmp_path):
    d = tmp_path / "b"
    assert _run(d, _app(tmp_path, "print('formatted')\n")).returncode == 0
    writer = _app(
        tmp_path,
        (
            "for i in range(50):\n"
            "    with open('/f%d' % i, 'w') as f:\n"
            "        f.write('x' * 5000)\n"
            "print('all written')\n"
        ),
        "writer.py",
    )
    proc = _run(d, writer, "--cut-after", "5")
    assert proc.returncode == 67, proc.stdout + proc.stderr
    assert "all written" not in proc.stdout
    assert "board: power cut (exit 67)" in proc.stdout
    after = _run(d, _app(tmp_path, "import board\nprint('cause', board.reset_cause())\n", "c.py"))
    assert after.returncode == 0, after.stdout
    assert "cause power_cut" in after.stdout
    again = _run(d, _app(tmp_path, "import board\nprint('cause', board.reset_cause())\n", "c.py"))
    assert "cause power_on" in again.stdout


def test_max_boots_stops_a_reset_loop(tmp_path):
    proc = _run(
        tmp_path / "b",
        _app(tmp_path, "import board\nprint('up')\nboard.reset()\n"),
        "--max-boots",
        "3",
    )
    assert proc.returncode == 64
    assert proc.stdout.count("up") == 3
    assert "stopped after 3 boots" in proc.stdout


def test_run_bad_input(tmp_path):
    proc = _run(tmp_path / "b", str(tmp_path / "missing.py"))
    assert proc.returncode == 2 and "no such app file" in proc.stderr
    proc = _run(tmp_path / "b", "--cut-after", "zero")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


# --- serve (the real mpremote over the pty) --------------------------------------------------


def test_mpremote_exec_prints_1(served_board):  # noqa: F811
    proc = mpremote(served_board.port, "exec", "print(1)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"


def test_mpremote_fs_commands_and_soft_reset_keep_files(served_board, tmp_path):  # noqa: F811
    port = served_board.port
    local = tmp_path / "hello.txt"
    local.write_text("hello board\nsecond line\n")
    proc = mpremote(
        port,
        "fs",
        "mkdir",
        ":data",
        "+",
        "fs",
        "cp",
        str(local),
        ":data/hello.txt",
        "+",
        "fs",
        "cp",
        str(local),
        ":junk.txt",
        "+",
        "fs",
        "rm",
        ":junk.txt",
        "+",
        "fs",
        "ls",
        ":data",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hello.txt" in proc.stdout
    # Ctrl-D in the raw REPL: the runner restarts the process and mpremote carries on.
    proc = mpremote(
        port,
        "exec",
        "x = 1",
        "+",
        "soft-reset",
        "+",
        "exec",
        "print('x' in globals())",
        "+",
        "fs",
        "cat",
        ":data/hello.txt",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "False" in proc.stdout  # the soft reset cleared the REPL's state
    assert "hello board" in proc.stdout
    ls = mpremote(port, "fs", "ls", ":")
    assert "junk.txt" not in ls.stdout and "data/" in ls.stdout
    copied = tmp_path / "back.txt"
    assert mpremote(port, "fs", "cp", ":data/hello.txt", str(copied)).returncode == 0
    assert copied.read_text() == "hello board\nsecond line\n"
    served_board.stop()
    # The flash persists: the next `board run` sees what mpremote wrote.
    app = _app(tmp_path, "print(open('/data/hello.txt').read().split()[1])\n")
    run = _run(served_board.directory, app)
    assert run.returncode == 0 and "board" in run.stdout.split(), run.stdout


def test_reset_while_serving_boots_again(served_board):  # noqa: F811
    port = served_board.port
    proc = mpremote(port, "exec", "import board; board.reset()")
    assert proc.returncode == 0, proc.stderr
    proc = mpremote(port, "resume", "exec", "import board; print(board.reset_cause())")
    assert proc.stdout.strip() == "hard", proc.stdout + proc.stderr
    assert "board: hard reset (exit 64)" in served_board.output()


def _read_until(port: serial.Serial, ending: bytes, timeout: float = 10) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(ending) and time.monotonic() < deadline:
        data += port.read(1)
    assert data.endswith(ending), data
    return data


def test_ctrl_c_friendly_repl_and_soft_reboot_over_the_pty(served_board):  # noqa: F811
    with serial.Serial(served_board.port, timeout=0.2) as port:
        port.write(b"\r\x03\r\x01")
        _read_until(port, RAW_BANNER)
        port.write(b"import time\nwhile True:\n  time.sleep_ms(5)\n\x04")
        _read_until(port, b"OK")
        time.sleep(0.3)
        port.write(b"\x03")  # Ctrl-C reaches the running program
        out = _read_until(port, b"\x04>")
        assert b"KeyboardInterrupt" in out
        port.write(b"\x02")  # friendly REPL
        _read_until(port, b">>> ")
        port.write(b"y = 41\r")
        _read_until(port, b">>> ")
        port.write(b"print(y + 1)\r")
        assert b"42\r\n>>> " in _read_until(port, b">>> ")
        port.write(b"\x04")  # soft reboot from the friendly REPL
        out = _read_until(port, b">>> ")
        assert out.startswith(b"\r\nMPY: soft reboot\r\nMicroPython "), out
        port.write(b"print('y' in globals())\r")
        assert b"False\r\n" in _read_until(port, b">>> ")


def test_a_second_board_serves_independently(tmp_path, served_board):  # noqa: F811
    other = serve(tmp_path / "other")
    try:
        assert other.port != served_board.port
        for board, word in ((served_board, "first"), (other, "second")):
            assert (
                mpremote(
                    board.port, "exec", f"with open('/who', 'w') as f: f.write('{word}')"
                ).returncode
                == 0
            )
        assert mpremote(served_board.port, "fs", "cat", ":who").stdout.endswith("first")
        assert mpremote(other.port, "fs", "cat", ":who").stdout.endswith("second")
    finally:
        other.stop()


def test_serve_and_run_stop_on_a_board_with_nothing_bootable(tmp_path):
    d = tmp_path / "b"
    assert mpfota("board", "init", "--flash", str(d)).returncode == 0
    with open(d / "flash.bin", "r+b") as f:  # damage the only core image
        f.seek(0x10000)
        f.write(b"XXXX")
    run = _run(d)
    assert run.returncode == 3
    assert "board: nothing bootable (exit 3)" in run.stdout
    served = subprocess.run(
        [sys.executable, "-m", "mpfota_host.cli", "board", "serve", "--flash", str(d)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert served.returncode == 3
    assert "pty: /dev/pts/" in served.stdout
    assert "stopped during boot (exit 3): bootrom: no bootable core image" in served.stdout
