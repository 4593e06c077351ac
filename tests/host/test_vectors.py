"""The JSON test vectors (tests/vectors/) also hold for the pure rules run under CPython, as a
Lua or C port would run them."""

import subprocess
import sys

from mpfota_host import paths


def test_vectors_pass_under_cpython():
    proc = subprocess.run([sys.executable, str(paths.TESTS / "vectors" / "check.py")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
