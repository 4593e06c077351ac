"""The host code and the tests pass ruff (the rules in host_tools/pyproject.toml)."""

import subprocess

from mpfota_host import paths


def test_ruff_is_clean():
    proc = subprocess.run(
        [paths.venv_tool("ruff"), "check", "--config", "host_tools/pyproject.toml",
         "host_tools", "tests"],
        capture_output=True, text=True, cwd=paths.REPO, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
