"""The virtual board on a pty, so that mpremote (or a terminal) talks to it as to a USB board.

Two pty pairs: the *outer* one is the board's "USB serial port" (its slave path is what
`mpremote connect` opens); the *inner* one is the terminal of the current `micropython`
process, which runs boards/unix/bootrom.py with `-i` and MPFOTA_REPL=1 (boot, mount, then the
REPL instead of main.py). Bytes are relayed both ways; the runner adds what a board does and
the unix port does not:

* Ctrl-D on an empty REPL line (raw or friendly), or `sys.exit()` in the REPL, ends the unix
  process, where a board soft-resets. The runner prints `MPY: soft reboot`, boots again (reset
  cause "soft") and, if the board was in the raw REPL, enters it again, so mpremote sees the
  sequence of a real board. `board.soft_reset()` (exit 65) is the same.
* `board.reset()` (exit 64) boots again with cause "hard" into the friendly REPL;
  `board.deepsleep(ms)` (exit 66) waits ms x sleep_scale first, as a board would.
* Output is "cooked" as a board's UART output is: a lone "\\n" becomes "\\r\\n".

Ctrl-C reaches a running program as SIGINT (the inner pty has ISIG on outside readline, the
unix port turns it into KeyboardInterrupt); Ctrl-A/B/E and raw-paste pass through unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import select
import signal
import subprocess
import termios
import time
import tty
from collections.abc import Callable
from pathlib import Path

from . import vboard
from .errors import UserError

SOFT_REBOOT = b"MPY: soft reboot\r\n"
RAW_BANNER = b"raw REPL; CTRL-B to exit"
PROMPT = b">>> "
BANNER_START = b"MicroPython "
TRACEBACK = b"Traceback (most recent call last)"
BOOT_JSON = "boot.json"  # written by bootrom.py
_LONE_LF = re.compile(rb"(?<!\r)\n")
MAX_BACKLOG = 64 * 1024  # stop reading the board while this much output waits for the port
MAX_FAILED_BOOTS = 5  # consecutive boots that end before the REPL: give up


def _set_board_termios(fd: int) -> None:
    """No output post-processing, no echo, byte-wise input, but ISIG (Ctrl-C -> SIGINT)."""
    attrs = termios.tcgetattr(fd)
    attrs[0] = 0  # iflag
    attrs[1] = 0  # oflag: bytes leave as written
    attrs[2] = termios.CS8 | termios.CREAD | termios.CLOCAL
    attrs[3] = termios.ISIG  # lflag
    attrs[6][termios.VMIN] = 1
    attrs[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _controlling_tty() -> None:  # runs in the child, before exec
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtyBoard:
    """One served board: call `serve_forever()`; `path` is the port to give mpremote."""

    def __init__(
        self,
        directory: str | os.PathLike,
        frozen: bool = True,
        sleep_scale: float = 1.0,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        if not vboard.is_board(directory):
            raise UserError(f"{directory} is not a virtual board")
        vboard.check(directory)
        self.directory = Path(directory)
        self.frozen = frozen
        self.sleep_scale = sleep_scale
        self.notice = notice or (lambda line: None)
        self.port, self._port_slave = os.openpty()
        tty.setraw(self._port_slave)
        os.set_blocking(self.port, False)
        self.path = os.ttyname(self._port_slave)
        self.proc: subprocess.Popen | None = None
        self.term: int | None = None  # master side of the process's terminal
        self.raw_mode = False  # board in the raw REPL (from its own output)
        self.booting = False  # waiting for the new process's first prompt
        self.reenter_raw = False
        self.boot_out = bytearray()
        self.to_board = bytearray()  # input waiting for the process
        self.to_port = bytearray()  # output waiting for the port
        self._tail = b""  # recent output, for mode detection across reads
        self._last = b""  # last byte sent to the port, for cooking "\n"
        self._restart_at: float | None = None
        self._restart_cause = "power_on"
        self._failed = 0
        self.exit_code: int | None = None  # set when serving stops because the board died

    # --- process life -------------------------------------------------------------------

    def _start(self, cause: str, reenter_raw: bool) -> None:
        argv, env = vboard.boot_command(self.directory, cause=cause, frozen=self.frozen, repl=True)
        (self.directory / BOOT_JSON).unlink(missing_ok=True)
        master, slave = os.openpty()
        _set_board_termios(slave)
        try:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                preexec_fn=_controlling_tty,
                close_fds=True,
            )
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self.term = master
        self.booting = True
        self.reenter_raw = reenter_raw
        self.boot_out.clear()
        self._tail = b""

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.term is not None:
            os.close(self.term)
            self.term = None

    def close(self) -> None:
        self._kill()
        self.proc = None
        for fd in (self.port, self._port_slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _ended(self) -> None:
        """The process closed its terminal: decide how the board comes back."""
        os.close(self.term)
        self.term = None
        code = self.proc.wait()
        self.proc = None
        self._after_exit(code)

    def _after_exit(self, code: int) -> None:
        self.to_board.clear()  # typed into a dead process: lost, as on a resetting board
        if self.booting:
            out = bytes(self.boot_out)
            banner = out.rfind(BANNER_START)
            lines = out[: banner if banner >= 0 else None].decode(errors="replace").split("\n")
            lines = [line.strip() for line in lines if line.strip()]
            self._flush_boot_output()
            self._failed += 1
            if code not in vboard.REBOOT_CAUSES or self._failed >= MAX_FAILED_BOOTS:
                said = f": {lines[-1]}" if lines else ""
                self.notice(f"the board stopped during boot (exit {code}){said}")
                self.exit_code = code or 1
                return
        if code == vboard.EXIT_RESET:
            self.notice("hard reset (exit 64)")
            self._schedule("hard", 0.0, raw=False)
        elif code == vboard.EXIT_DEEPSLEEP:
            ms = vboard.wake_ms(self.directory)
            self.notice(f"deep sleep {ms} ms (scale {self.sleep_scale:g})")
            self._schedule("deepsleep", ms / 1000 * self.sleep_scale, raw=False)
        elif code == vboard.EXIT_POWER_CUT:
            self.notice("power cut (exit 67): powering on again")
            self._schedule("power_cut", 0.0, raw=False)
        else:  # Ctrl-D, sys.exit() or soft_reset(): a board soft-resets
            self._queue_port(SOFT_REBOOT)
            self._schedule("soft", 0.0, raw=self.raw_mode)

    def _boot_failure(self, out: bytes) -> int | None:
        """Exit code of a boot that failed although its process reached the REPL.

        `micropython -i` enters the REPL even when bootrom.py exits or raises, and that REPL
        would see the host's filesystem instead of the board's. bootrom.py records the exit
        code of a boot that did not reach the REPL in DIR/boot.json; in REPL mode it leaves
        the file empty. (The runner deletes it before each boot, so a missing file means the
        bootrom failed before it got that far.)
        """
        if TRACEBACK in out:
            return vboard.EXIT_EXCEPTION
        try:
            text = (self.directory / BOOT_JSON).read_text().strip()
        except FileNotFoundError:
            return vboard.EXIT_EXCEPTION
        if not text:
            return None
        try:
            code = int(json.loads(text).get("exit", 0))
        except (ValueError, AttributeError, TypeError):
            return None
        return code or None

    def _schedule(self, cause: str, delay: float, raw: bool) -> None:
        self._restart_cause = cause
        self._restart_at = time.monotonic() + delay
        self.reenter_raw = raw

    # --- output -------------------------------------------------------------------------

    def _queue_port(self, data: bytes) -> None:
        """Cook and queue output for the port (a lone LF becomes CR LF, as a board prints)."""
        if not data:
            return
        cooked = _LONE_LF.sub(b"\r\n", data)
        if data[:1] == b"\n" and self._last == b"\r":
            cooked = cooked[1:]  # the CR came in the previous read
        self._last = data[-1:]
        self.to_port += cooked

    def _track_mode(self, data: bytes) -> None:
        seen = self._tail + data
        raw_at = seen.rfind(RAW_BANNER)
        prompt_at = seen.rfind(PROMPT)
        if raw_at > prompt_at:
            self.raw_mode = True
        elif prompt_at > raw_at:
            self.raw_mode = False
        self._tail = seen[-32:]

    def _from_board(self, data: bytes) -> None:
        if self.booting:
            self.boot_out += data
            if self.boot_out.endswith(PROMPT):
                self._booted()
            return
        self._track_mode(data)
        self._queue_port(data)

    def _flush_boot_output(self) -> None:
        self._queue_port(bytes(self.boot_out))
        self.boot_out.clear()

    def _booted(self) -> None:
        """The new process shows its first prompt: the REPL is up (if the boot worked)."""
        failed = self._boot_failure(bytes(self.boot_out))
        if failed is not None:
            self._kill()
            self.proc = None
            self._after_exit(failed)
            return
        self.booting = False
        self._failed = 0
        out = bytes(self.boot_out)
        self.boot_out.clear()
        if self.reenter_raw:
            # A board that soft-resets in the raw REPL prints its boot output, then the raw
            # REPL banner; the unix port's friendly banner is not part of that.
            cut = out.rfind(BANNER_START)
            self._queue_port(out[:cut] if cut >= 0 else b"")
            self.to_board[:0] = b"\x01"
        else:
            self._track_mode(out)
            self._queue_port(out)

    # --- the loop -----------------------------------------------------------------------

    def start(self) -> None:
        self._start("power_on", reenter_raw=False)

    def step(self, timeout: float = 0.2) -> bool:
        """One round of relaying; False once the board cannot run any more."""
        if self.exit_code is not None:
            return False
        if (
            self.proc is None
            and self._restart_at is not None
            and time.monotonic() >= self._restart_at
        ):
            self._restart_at = None
            self._start(self._restart_cause, self.reenter_raw)
        readers = [self.port]
        writers = []
        if self.term is not None and len(self.to_port) < MAX_BACKLOG:
            readers.append(self.term)
        if self.term is not None and self.to_board and not self.booting:
            writers.append(self.term)
        if self.to_port:
            writers.append(self.port)
        if self._restart_at is not None:
            timeout = max(0.0, min(timeout, self._restart_at - time.monotonic()))
        r, w, _ = select.select(readers, writers, [], timeout)
        if self.port in r:
            self._read_port()
        if self.term is not None and self.term in r:
            self._read_board()
        if self.term is not None and self.term in w and self.to_board:
            self._write(self.term, self.to_board)
        if self.port in w and self.to_port:
            self._write(self.port, self.to_port)
        return self.exit_code is None

    def _read_port(self) -> None:
        try:
            data = os.read(self.port, 4096)
        except BlockingIOError:
            return
        self.to_board += data

    def _read_board(self) -> None:
        try:
            data = os.read(self.term, 65536)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: the process and all its terminal users are gone
            if exc.errno != errno.EIO:
                raise
            data = b""
        if data:
            self._from_board(data)
        else:
            self._ended()

    @staticmethod
    def _write(fd: int, buf: bytearray) -> None:
        try:
            n = os.write(fd, buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno == errno.EIO:
                return
            raise
        del buf[:n]

    def serve_forever(self) -> int:
        self.start()
        try:
            while self.step():
                pass
        finally:
            self.close()
        return self.exit_code or 0
