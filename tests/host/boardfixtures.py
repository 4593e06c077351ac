"""Helpers for tests that drive the virtual board: the `mpfota` CLI, mpremote, a served board.

Import the fixture into a test module with `from boardfixtures import served_board`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mpfota_host import paths

MPREMOTE = paths.venv_tool("mpremote")


def mpfota(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """Run the real `mpfota` command line (as a module of the venv's Python)."""
    return subprocess.run(
        [sys.executable, "-m", "mpfota_host.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def mpremote(port: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MPREMOTE, "connect", port, *args], capture_output=True, text=True, timeout=timeout
    )


@dataclass
class ServedBoard:
    directory: Path
    port: str
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def serve(directory: Path, *extra: str) -> ServedBoard:
    """Start `mpfota board serve --create` and wait for its "pty: PATH" line."""
    log = directory.parent / f"{directory.name}-serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mpfota_host.cli",
                "board",
                "serve",
                "--flash",
                str(directory),
                "--create",
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("pty: "):
                return ServedBoard(directory, line[5:].strip(), proc, log)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"board serve printed no pty line:\n{log.read_text()}")


@pytest.fixture
def served_board(tmp_path):
    """A new board served on a pty, with device/ NOT frozen (only what is deployed counts)."""
    board = serve(tmp_path / "board", "--no-frozen")
    try:
        yield board
    finally:
        board.stop()
