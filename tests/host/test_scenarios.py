"""Scenarios 1 and 3 of seed 001 on the virtual board against `mpfota serve` (in-process),
and the host command that runs them (mpfota_host.scenarios)."""

from __future__ import annotations

import json
import re
import time

import pytest
from mpfota_host import cli, scenarios, vboard
from mpfota_host.errors import UserError


def _causes(output: str) -> list[str]:
    return re.findall(r"I/user\.psm reset cause (\w+)", output)


def test_scenario1_updates_then_hears_already_latest(tmp_path):
    o = scenarios.run(1, tmp_path / "board", settings={"RUN_FOR_MS": 300})
    assert scenarios.check(1, o) == [], o.output
    assert o.code == 0 and o.core == "2.0.0"
    # The server offered the package once, then answered the new core with code 27.
    checks = [line for line in o.server_lines if "GET /upgrade" in line]
    assert len(checks) == 2, o.server_lines
    assert " 200 " in checks[0] and "offer 001.000.000 from core 1.0.0" in checks[0]
    assert "v=1.0.0.001.000" in checks[0] and "fw=FOTA2_DEMO_LuatOS-SoC_UNIX" in checks[0]
    assert " 404 " in checks[1] and "code=27" in checks[1] and "v=2.0.0.001.000" in checks[1]
    out = o.output
    first, second = out.split("board: hard reset (exit 64), booting again")
    assert "I/user.fota 0\nI/user.升级包下载成功,重启模块" in first
    assert "I/user.fota image in ota_1 confirmed" in second
    assert '{"code": 27, "msg": "\\u5df2\\u662f\\u6700\\u65b0\\u7248\\u672c"}' in second
    assert "I/user.fota 4\nE/user.FOTA 失败 原因可能有:" in second
    assert "3) 已经是最新版本,无需升级" in second


def test_scenario1_through_the_cli(tmp_path, capsys):
    # `mpfota scenario 1` (what `make demo` runs through `mpfota demo --scenario 1`).
    flash = tmp_path / "b"
    assert cli.main(["scenario", "1", "--flash", str(flash)]) == 0
    out = capsys.readouterr().out
    assert "scenario 1: done - the board runs core 2.0.0" in out
    assert json.loads((flash / "boot.json").read_text())["exit"] == 0


def test_scenario3_update_reboots_first_then_sleeps_and_wakes(tmp_path):
    o = scenarios.run(3, tmp_path / "board", boots=3)
    assert scenarios.check(3, o) == [], o.output
    out = o.output
    # boot 1 downloads and reboots at once (no sleep before the update is in), boot 2 runs the
    # new core, hears "latest" and sleeps 4 h, boot 3 is the wake from that sleep.
    assert _causes(out) == ["power_on", "hard", "deepsleep"]
    boot1, rest = out.split("board: hard reset (exit 64), booting again")
    assert "I/user.升级包下载成功,重启模块" in boot1 and "进入PSM模式" not in boot1
    boot2, boot3 = rest.split("board: deep sleep 14400000 ms")
    assert boot2.index("I/user.fota 4") < boot2.index("I/user.升级结束,进入PSM模式")
    assert "core版本号 2.0.0" in boot3 and "I/user.升级结束,进入PSM模式" in boot3
    assert out.rstrip().endswith("board: stopped after 3 boots (the last one asked for a "
                                 "reboot, exit 66)")
    assert vboard.wake_ms(tmp_path / "board") == 4 * 3600 * 1000


def test_scenario3_without_update_sleeps_at_once(tmp_path):
    # Already on the new core: the answer is "latest" and the board sleeps right after it,
    # well inside the 15 s bound.
    t0 = time.monotonic()
    o = scenarios.run(3, tmp_path / "board", boots=1, core="2.0.0")
    took = time.monotonic() - t0
    assert o.code == vboard.EXIT_DEEPSLEEP, o.output
    assert took < 10, took
    assert _causes(o.output) == ["power_on"]
    assert "code=27" in "\n".join(o.server_lines)
    assert "board: stopped after 1 boots" in o.output
    assert vboard.wake_ms(tmp_path / "board") == 4 * 3600 * 1000


def test_scenario3_sleeps_when_the_server_never_answers(tmp_path, http_server):
    # No FOTA_END: the board still goes to sleep once FOTA_WAIT_MS has passed.
    silent = "###" + http_server.base + "/silent?ms=20000"
    t0 = time.monotonic()
    o = scenarios.run(3, tmp_path / "board", boots=1,
                      settings={"FOTA_URL": silent, "FOTA_WAIT_MS": 1500})
    took = time.monotonic() - t0
    assert o.code == vboard.EXIT_DEEPSLEEP, o.output
    assert 1.5 <= took < 10, took
    waited = o.output.split("I/user.开始检查升级")[1].split("I/user.升级结束,进入PSM模式")
    assert len(waited) == 2, o.output
    assert not re.search(r"^I/user\.fota -?\d+$", waited[0], re.MULTILINE)  # no callback came
    assert vboard.wake_ms(tmp_path / "board") == 4 * 3600 * 1000


def test_shipped_apps_keep_the_seed_values():
    # What `mpfota scenario` does not rewrite stays as in the seed: wait at most 15 s for
    # FOTA_END, wake every 4 hours, check every 4 hours.
    s3 = (scenarios.APPS / "scenario3.py").read_text(encoding="utf-8")
    assert "FOTA_WAIT_MS = 15000" in s3 and "WAKE_MS = 4 * 3600000" in s3
    s1 = (scenarios.APPS / "scenario1.py").read_text(encoding="utf-8")
    assert "sys.timerLoopStart(libfota2.request, 4 * 3600000, fota_cb, opts)" in s1


def test_render_rewrites_only_the_settings_block():
    text = ("X = 1\n# ---- settings: begin ----\nURL = 'a'\nN = 2  # note\n"
            "# ---- settings: end ----\nURL = 'outside'\n")
    out = scenarios.render(text, {"URL": "http://h/", "N": 5})
    assert out == ("X = 1\n# ---- settings: begin ----\nURL = 'http://h/'\nN = 5\n"
                   "# ---- settings: end ----\nURL = 'outside'\n")
    with pytest.raises(UserError, match="no MISSING"):
        scenarios.render(text, {"MISSING": 1})
    with pytest.raises(UserError, match="no settings block"):
        scenarios.render("URL = 1\n", {"URL": 2})


def test_unknown_scenario_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["scenario", "4", "--flash", str(tmp_path / "b")])
    assert e.value.code == 2
    assert "invalid choice: 4" in capsys.readouterr().err
    with pytest.raises(UserError, match="no scenario 9"):
        scenarios.run(9, tmp_path / "b")


def test_a_directory_that_is_not_a_board_is_never_erased(tmp_path, capsys):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious")
    assert cli.main(["scenario", "1", "--flash", str(keep)]) == 2
    assert "is not a virtual board: refusing to erase it" in capsys.readouterr().err
    assert (keep / "notes.txt").read_text() == "precious"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UserError, match="refusing"):
        scenarios.run(1, a_file)
    with pytest.raises(SystemExit):
        cli.main(["scenario", "3", "--sleep-scale", "-1"])
    assert "cannot be negative" in capsys.readouterr().err
