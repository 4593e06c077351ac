# The harness itself: tests run in MicroPython and fixture values reach them.
import sys


def test_runs_in_micropython():
    assert sys.implementation.name == "micropython"


def test_fixture_value_reaches_device(tmp_path):
    import os

    assert os.stat(tmp_path)[0] & 0x4000, "tmp_path should be a directory on the host"
