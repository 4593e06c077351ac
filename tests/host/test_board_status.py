"""`mpfota board status` (the device's `mpfota.status.status()` from a boot of a copy of the
flash), the one-runner-per-board lock, and `--create`: real boards on the unix port, the real
`mpfota` command line."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

from boardfixtures import mpfota, mpremote, serve
from mpfota_host import boardlock, image, vboard


def digest(d) -> str:
    return hashlib.sha256((d / "flash.bin").read_bytes()).hexdigest()


def status(d) -> dict:
    proc = mpfota("board", "status", "--flash", str(d), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


# Core 2.0.0 through the LuatOS fota API: written to the spare slot, verified, switched.
NEW_CORE = image.make_image(b"new core" * 500, "2.0.0")
SWITCH = f"""\
import fota
IMG = bytes.fromhex("{NEW_CORE.hex()}")
fota.init(size=len(IMG))
fota.run(IMG)
print("switched", fota.finish(True))
"""


def test_status_follows_an_update_and_leaves_the_board_as_it_was(tmp_path):
    d = tmp_path / "b"
    vboard.init(d, slot_size=128 << 10, fs_size=64 << 10)
    before = digest(d)
    st = status(d)
    assert digest(d) == before  # the copy took the bootloader's and the mount's writes
    assert (st["running"], st["boot"], st["core"], st["image"]) == ("ota_0", "ota_0", "1.0.0",
                                                                    "valid")
    assert st["slots"] == {"ota_0": "1.0.0", "ota_1": None}
    assert st["scripts"]["state"] == "valid" and st["files"] == []

    # Switched to 2.0.0, not booted yet.
    (tmp_path / "switch.py").write_text(SWITCH)
    ran = mpfota("board", "run", "--flash", str(d), str(tmp_path / "switch.py"))
    assert ran.returncode == 0 and "switched True" in ran.stdout, ran.stdout + ran.stderr
    st = status(d)
    assert (st["running"], st["core"], st["image"]) == ("ota_1", "2.0.0", "pending")
    assert st["slots"] == {"ota_0": "1.0.0", "ota_1": "2.0.0"}
    assert ["/main.py", len(SWITCH)] in st["files"] and st["records"]["core"]["slot"] == "ota_1"
    human = mpfota("board", "status", "--flash", str(d))
    assert human.returncode == 0, human.stderr
    assert human.stdout.splitlines()[1:4] == [
        "  ota_0    core 1.0.0",
        "  ota_1    core 2.0.0       running, boots next",
        "  image    pending: not confirmed yet, a reset rolls it back",
    ]
    assert f"{len(SWITCH):>8}  /main.py" in human.stdout

    # One boot of 2.0.0 without confirm.confirm(): the next boot rolls back.
    (tmp_path / "idle.py").write_text("print('not confirming')\n")
    assert mpfota("board", "run", "--flash", str(d), str(tmp_path / "idle.py")).returncode == 0
    st = status(d)
    assert (st["running"], st["core"], st["image"]) == ("ota_0", "1.0.0", "rolled_back")


def test_a_served_board_refuses_a_second_runner(tmp_path):
    d = tmp_path / "b"
    served = serve(d)
    try:
        assert mpremote(served.port, "exec", "print(1)").stdout.strip() == "1"  # booted
        before = digest(d)
        app = tmp_path / "app.py"
        app.write_text("print('second runner')\n")
        for argv in (["board", "run", "--flash", str(d), str(app)],
                     ["board", "status", "--flash", str(d)],
                     ["board", "init", "--flash", str(d), "--force"]):
            proc = mpfota(*argv)
            assert proc.returncode == 2, (argv, proc.stdout, proc.stderr)
            line = proc.stderr.strip()
            assert "\n" not in line and "Traceback" not in line, line
            assert f"{d} is in use by `mpfota board serve` (pid {served.proc.pid})" in line
            assert f"mpremote connect {served.port} exec" in line  # where to ask instead
            assert "second runner" not in proc.stdout
        assert digest(d) == before
        asked = mpremote(served.port, "exec", "from mpfota import status; print(status.status())")
        assert "'running': 'ota_0'" in asked.stdout, asked.stdout + asked.stderr
    finally:
        served.stop()
    ran = mpfota("board", "run", "--flash", str(d), str(app))
    assert ran.returncode == 0 and "second runner" in ran.stdout, ran.stdout + ran.stderr


HOLD = """\
import sys, time
from mpfota_host import boardlock
with boardlock.hold(sys.argv[1], "board run"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_the_lock_of_a_killed_runner_does_not_block(tmp_path):
    d = tmp_path / "b"
    vboard.init(d, slot_size=128 << 10, fs_size=64 << 10)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(d)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert boardlock.holder(d) == {"pid": holder.pid, "command": "board run"}
        busy = mpfota("board", "status", "--flash", str(d))
        assert busy.returncode == 2 and f"(pid {holder.pid})" in busy.stderr
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert (d / boardlock.LOCK_FILE).exists()  # left behind, but nobody holds it
    assert boardlock.holder(d) is None
    assert mpfota("board", "status", "--flash", str(d)).returncode == 0


def test_run_and_serve_refuse_a_missing_board_unless_asked_to_create_it(tmp_path):
    d = tmp_path / "typo"
    for action in ("run", "serve"):
        proc = mpfota("board", action, "--flash", str(d), timeout=30)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr.strip() == (
            f"mpfota board: error: {d} is not a virtual board: "
            f"`mpfota board init --flash {d}` makes one (or pass --create)"
        )
        assert not d.exists()
    made = mpfota("board", "run", "--flash", str(d), "--create")
    assert made.returncode == 0 and "initialised a new board" in made.stdout, made.stderr
    assert vboard.is_board(d)


def test_status_names_what_a_board_without_the_status_module_says(tmp_path):
    d = tmp_path / "b"
    vboard.init(d, slot_size=128 << 10, fs_size=64 << 10)
    with open(d / "flash.bin", "r+b") as f:  # damage both slots: nothing boots
        for off, _ in json.loads((d / "board.json").read_text())["slots"]:
            f.seek(off)
            f.write(b"XXXX")
    start = time.monotonic()
    proc = mpfota("board", "status", "--flash", str(d))
    assert proc.returncode == 2 and time.monotonic() - start < 30
    assert proc.stderr.strip() == (
        f"mpfota board: error: {d}: the board gave no status (exit 3): "
        "bootrom: no bootable core image in either slot"
    )
