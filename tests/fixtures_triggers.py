"""Helpers for the trigger and scenario tests (host side, CPython).

BoardProcess   one boot of a virtual board running an app, in the background (the test talks
               to it meanwhile); stopped at exit
CommandServer  the TCP command server of scenario 2 (mpfota_host.scenarios), re-exported
scenario_app   an app of boards/unix/apps with its settings block rewritten
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from mpfota_host import scenarios, vboard
from mpfota_host.scenarios import CommandServer  # noqa: F401 - re-exported for the tests


def scenario_app(n: int, directory: Path, **settings: object) -> Path:
    """boards/unix/apps/scenarioN.py with the given settings, written into `directory`."""
    path = directory / f"scenario{n}_main.py"
    path.write_text(scenarios.app_text(n, settings), encoding="utf-8")
    return path


class BoardProcess:
    """One boot of the virtual board in `flash` with `app` as /main.py, in the background."""

    def __init__(self, flash: Path, app: Path, env: dict[str, str] | None = None) -> None:
        self.flash = flash
        self.app = app
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._out = bytearray()
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None

    def start(self) -> BoardProcess:
        argv, env = vboard.boot_command(self.flash, app=self.app, env=self.env)
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for chunk in iter(lambda: self.proc.stdout.read1(4096), b""):
            with self._cond:
                self._out += chunk
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return self._out.decode(errors="replace")

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        """Wait until the output contains `text`; the output so far. AssertionError on
        timeout or when the boot ends first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                out = self._out.decode(errors="replace")
                if text in out:
                    return out
                left = deadline - time.monotonic()
                ended = self.proc is not None and self.proc.poll() is not None
                if left <= 0 or (ended and not self._reader.is_alive()):
                    raise AssertionError(f"board output has no {text!r} "
                                         f"({'ended' if ended else 'timeout'}):\n{out}")
                self._cond.wait(min(left, 0.2))

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        if self._reader:
            self._reader.join(5)
        return code

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._reader:
            self._reader.join(5)
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> BoardProcess:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
