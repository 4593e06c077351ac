"""`make test` ends on pytest's own last line: the power-cut figures go to a file, and the one
line about them is printed by tests/conftest.py in pytest's terminal summary, before that last
line. Checked with a real pytest run that loads tests/conftest.py and writes a report."""

from __future__ import annotations

import os
import subprocess
import sys

from mpfota_host import paths

WRITES_A_REPORT = """\
from pathlib import Path

import sweep
from mpfota_host import powercut


def test_writes(tmp_path):
    sweep.write_report([powercut.Report("core.a")], Path(__file__).parent / "rel.txt")
"""


def test_the_summary_line_comes_before_pytests_last_line(tmp_path):
    (tmp_path / "test_report.py").write_text(WRITES_A_REPORT)
    tests = paths.REPO / "tests"
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(tests), str(tests / "host"), str(paths.REPO /
                                                                              "host_tools")])}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(tmp_path / "test_report.py")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in lines[-1] and lines[-1].startswith("="), lines[-3:]
    assert lines[-2] == (
        "reliability: 0 power cuts (0 between operations): 0 unbootable, 0 user files lost, "
        f"0 converged; every figure in {tmp_path / 'rel.txt'}"
    ), lines[-3:]
    assert (tmp_path / "rel.txt").read_text().startswith("reliability.cut_points: 0\n")
