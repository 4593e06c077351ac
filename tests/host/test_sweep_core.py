"""Power cut after every flash operation of a small core update: never unbootable, user files
intact, and the update completes once the board is powered on again."""

from __future__ import annotations

import hashlib

import pytest
from mpfota_host import paths, vboard
from sweep import Sweep

USER_FILE = "/data/settings.json"
USER_DATA = '{"wifi": "home", "secret": "s3cr3t"}'

# The starting state: the user's files, and the update app installed as /main.py (installing
# it is not part of the update, so its flash operations are not swept).
SEED_APP = f"""
import os
os.mkdir("/data")
with open("{USER_FILE}", "w") as f:
    f.write({USER_DATA!r})
with open("/main.py", "w") as f:
    f.write(UPDATE_APP)
"""

CHECK_APP = f"""
import board, hashlib, binascii
with open("{USER_FILE}") as f:
    data = f.read()
print("user-file", binascii.hexlify(hashlib.sha256(data.encode()).digest()).decode())
print("core", board.core_version())
"""


@pytest.fixture
def sweep(tmp_path, make_vboard, update_server):
    start = make_vboard("start")
    img = update_server.images["core-2.0.0"]
    app = ((paths.BOARDS / "unix" / "apps" / "update_demo.py").read_text()
           .replace("{url}", update_server.http.base + img["path"])
           .replace("{target}", img["version"]))
    seed = tmp_path / "seed.py"
    seed.write_text(f"UPDATE_APP = {app!r}\n" + SEED_APP)
    res = vboard.boot(start.path, app=seed, timeout=30)
    assert res.code == 0, res.text
    return Sweep(start.path, None, tmp_path / "runs")


def check_board(board, tmp_path) -> tuple[str, str]:
    check = tmp_path / "check.py"
    check.write_text(CHECK_APP)
    res = vboard.boot(board, app=check, timeout=30)
    assert res.code == 0, res.text
    lines = dict(line.split(" ", 1) for line in res.text.splitlines() if " " in line)
    return lines.get("user-file", ""), lines.get("core", "")


def test_power_cut_at_every_flash_operation(sweep, tmp_path):
    dry = sweep.dry_run()
    assert dry.converged, dry.output
    assert "update complete" in dry.output
    n = sweep.total_ops
    assert n > 20, f"the update should take many flash operations, saw {n}"
    want = hashlib.sha256(USER_DATA.encode()).hexdigest()
    unbootable, lost, diverged = [], [], []
    for k in range(1, n + 1):
        out, board = sweep.cut_at(k)
        if out.unbootable:
            unbootable.append(k)
        if not out.converged or "update complete" not in out.output:
            diverged.append(k)
        user, core = check_board(board, tmp_path)
        if user != want:
            lost.append(k)
        if core != "2.0.0":
            diverged.append(k)
    print(f"reliability.cut_points: {n}")
    print(f"reliability.unbootable: {len(unbootable)}")
    print(f"reliability.user_files_lost: {len(lost)}")
    print(f"reliability.converged: {n - len(set(diverged))}")
    assert not unbootable, f"unbootable after cuts at {unbootable}"
    assert not lost, f"user files lost after cuts at {lost}"
    assert not diverged, f"no convergence after cuts at {sorted(set(diverged))}"
