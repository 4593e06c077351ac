"""`mpfota scenario N`: the three FOTA scenarios of seed 001 on the virtual board.

1  the simple libfota2 demo (§6.4.1): check at boot, download, reboot into the new core; the
   next check is answered "already latest" (code 27)
2  a TCP server sends {"fota": "true", "url": ...} (§6.4.2); the board downloads and reboots
3  PSM low-power FOTA (§6.4.3): wait for the update to end (at most 15 s), reboot into it if
   there was one, then deep sleep with a 4-hour wake timer; the runner wakes it (time scaled)

Each runs boards/unix/apps/scenarioN.py (its settings block rewritten for this machine) on a
fresh virtual board, against `mpfota serve` started in-process on 127.0.0.1 with a release of
core 2.0.0 for boards on core 1.0.0 (and, for 2, a TCP command server). The board's log, the
servers' lines and the runner's notices are printed as they happen.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from . import image, paths, vboard
from .errors import UserError

APPS = paths.BOARDS / "unix" / "apps"
SCENARIOS = {1: "scenario1.py", 2: "scenario2.py", 3: "scenario3.py"}

# The demo project (the apps' settings are rewritten to these).
PROJECT = "FOTA2_DEMO"
PRODUCT_KEY = "mpfotaDemoProductKey0123456789ab"
SCRIPT_VERSION = "001.000.000"
FROM_CORE = "1.0.0"
TARGET_CORE = "2.0.0"
PSM_WAKE_MS = 4 * 3600 * 1000
DEFAULT_SLEEP_SCALE = 1e-5  # 4 h of deep sleep -> 0.144 s

_BEGIN = "# ---- settings: begin ----"
_END = "# ---- settings: end ----"


# --- apps ----------------------------------------------------------------------------------


def render(text: str, settings: dict[str, object]) -> str:
    """The app with the `NAME = value` lines of its settings block set to repr(settings[NAME]).

    UserError when the block, or a setting in it, is missing."""
    try:
        head, rest = text.split(_BEGIN + "\n", 1)
        block, tail = rest.split(_END, 1)
    except ValueError:
        raise UserError("the app has no settings block") from None
    for name, value in settings.items():
        pattern = re.compile(rf"^{re.escape(name)} = .*$", re.MULTILINE)
        block, n = pattern.subn(lambda _m, n=name, v=value: f"{n} = {v!r}", block, count=1)
        if n != 1:
            raise UserError(f"the app's settings block has no {name}")
    return head + _BEGIN + "\n" + block + _END + tail


def app_text(n: int, settings: dict[str, object]) -> str:
    path = APPS / SCENARIOS[n]
    return render(path.read_text(encoding="utf-8"), settings)


# --- the TCP command server (scenario 2) ---------------------------------------------------


@dataclass
class Event:
    conn: int  # which connection (1, 2, ...)
    data: dict | None  # the JSON line, or None when it was not JSON
    raw: bytes


@dataclass
class CommandServer:
    """A TCP server that device boards connect to (triggers.tcp), one JSON line per message.

    `policy(hello) -> list of messages` answers each connection's hello ({"event": "hello",
    ...}); `send()` sends to the newest connection; `events` records every line received.
    Runs on threads; every wait is bounded; stop() closes everything."""

    policy: Callable[[dict], list] | None = None
    log: Callable[[str], None] | None = None
    events: list[Event] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sock: socket.socket | None = None

    def start(self) -> CommandServer:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(4)
        s.settimeout(0.1)
        self._sock = s
        self.port = s.getsockname()[1]
        self._spawn(self._accept)
        return self

    def __enter__(self) -> CommandServer:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _say(self, line: str) -> None:
        if self.log:
            self.log(line)

    def _spawn(self, target: Callable, *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, addr = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(0.1)
            with self._cond:
                self._conns.append(conn)
                n = len(self._conns)
                self._cond.notify_all()
            self._say(f"connection {n} from {addr[0]}:{addr[1]}")
            self._spawn(self._read, conn, n)

    def _read(self, conn: socket.socket, n: int) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                chunk = conn.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self._got(conn, n, line)
        self._say(f"connection {n} closed")

    def _got(self, conn: socket.socket, n: int, line: bytes) -> None:
        try:
            data = json.loads(line)
        except ValueError:
            data = None
        self._say(f"<- {line.decode(errors='replace')}")
        with self._cond:
            self.events.append(Event(n, data if isinstance(data, dict) else None, line))
            self._cond.notify_all()
        if self.policy and isinstance(data, dict) and data.get("event") == "hello":
            for msg in self.policy(data):
                self._send_to(conn, msg)

    def _send_to(self, conn: socket.socket, msg: dict | bytes | str) -> None:
        if isinstance(msg, dict):
            raw = json.dumps(msg).encode() + b"\n"
        else:
            raw = msg.encode() if isinstance(msg, str) else bytes(msg)
        self._say(f"-> {raw.decode(errors='replace').rstrip()}")
        conn.sendall(raw)

    def send(self, msg: dict | bytes | str, conn: int | None = None) -> None:
        """Send to connection `conn` (default: the newest): a dict as one JSON line, bytes or
        str as they are."""
        with self._cond:
            if not self._conns:
                raise RuntimeError("no device is connected")
            c = self._conns[(conn or len(self._conns)) - 1]
        self._send_to(c, msg)

    def wait(self, pred: Callable[[Event], bool], timeout: float = 30.0,
             after: int = 0) -> Event:
        """The first event (from index `after` on) that pred accepts; TimeoutError after
        `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ev in self.events[after:]:
                    if pred(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching event in {timeout} s: {self.events!r}")
                self._cond.wait(left)

    def wait_event(self, name: str, timeout: float = 30.0, after: int = 0) -> Event:
        return self.wait(lambda e: bool(e.data) and e.data.get("event") == name, timeout, after)

    def connections(self) -> int:
        with self._cond:
            return len(self._conns)

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
        with self._cond:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        for t in self._threads:
            t.join(2)


# --- running a scenario --------------------------------------------------------------------


class Tee:
    """A binary stream that keeps what is written and copies it to another stream."""

    def __init__(self, out: BinaryIO | None) -> None:
        self.out = out
        self.data = bytearray()
        self._lock = threading.Lock()

    def write(self, b: bytes) -> int:
        with self._lock:
            self.data += b
        if self.out is not None:
            self.out.write(b)
        return len(b)

    def flush(self) -> None:
        if self.out is not None:
            self.out.flush()

    @property
    def text(self) -> str:
        with self._lock:
            return self.data.decode(errors="replace")


@dataclass
class Outcome:
    """What a scenario run did: the runner's exit code, the output, the final core."""

    code: int
    output: str
    core: str | None
    server_lines: list[str]
    commands: CommandServer | None = None


def running_core(flash: str | os.PathLike) -> str | None:
    """The version of the core the board's last boot ran (boot.json slot), or None."""
    d = Path(flash)
    try:
        slot = json.loads((d / "boot.json").read_text())["slot"]
        off, _ = vboard.load(d)["slots"][slot]
        with open(d / vboard.FLASH_BIN, "rb") as f:
            f.seek(off)
            return image.parse_header(f.read(image.HEADER_SIZE)).version
    except (OSError, ValueError, KeyError, TypeError, IndexError, UserError):
        return None


def fresh_board(flash: Path) -> None:
    """Make room for a new board at `flash`: an old board there is erased; anything else that
    is there (a file, a directory with other things in it) is refused, never deleted."""
    if not flash.exists():
        return
    if flash.is_dir() and (vboard.is_board(flash) or not any(flash.iterdir())):
        shutil.rmtree(flash)
        return
    raise UserError(f"{flash} exists and is not a virtual board: refusing to erase it "
                    "(choose another --flash)")


def _scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError("the sleep scale cannot be negative")
    return value


def make_release(data_dir: Path, work: Path, size: int = 200_000):
    """A FotaServer on data_dir with core TARGET_CORE for boards on FROM_CORE; (server, pkg)."""
    from .server import FotaServer

    srv = FotaServer(data_dir, log=lambda line: None)
    img = work / f"core-{TARGET_CORE}.img"
    img.write_bytes(image.make_image(os.urandom(size), TARGET_CORE))
    pkg = srv.store.publish(PRODUCT_KEY, f"{PROJECT}_LuatOS-SoC_UNIX", SCRIPT_VERSION,
                            core=TARGET_CORE, from_core=FROM_CORE, file=img)
    return srv, pkg


def _tcp_policy(url: str) -> Callable[[dict], list]:
    # The demo's command server: a board on the old core is told to update, once per hello.
    def policy(hello: dict) -> list:
        if hello.get("core") != TARGET_CORE:
            return [{"fota": "true", "url": url}]
        return []

    return policy


def run(n: int, flash: str | os.PathLike, *, stream: BinaryIO | None = None,
        sleep_scale: float = DEFAULT_SLEEP_SCALE, timeout: float = 60.0,
        settings: dict[str, object] | None = None, boots: int = 3,
        policy: Callable[[str], Callable[[dict], list]] | None = None,
        core: str = FROM_CORE) -> Outcome:
    """Run scenario n on a fresh board in `flash` (its core: `core`); the board's output goes
    to `stream`.

    settings override the app's settings block; boots bounds scenario 3's boots; policy(url)
    makes scenario 2's command-server policy."""
    if n not in SCENARIOS:
        raise UserError(f"no scenario {n}: choose 1, 2 or 3")
    flash = Path(flash)
    fresh_board(flash)
    vboard.init(flash, core_version=core)
    out = Tee(stream)
    server_lines: list[str] = []

    def say(line: str) -> None:
        server_lines.append(line)
        out.write(f"server: {line}\n".encode())

    work = Path(tempfile.mkdtemp(prefix="mpfota-scenario-"))
    commands = None
    try:
        srv, pkg = make_release(work / "data", work)
        srv.log = say
        srv.start()
        try:
            values: dict[str, object] = {
                "PROJECT": PROJECT, "VERSION": SCRIPT_VERSION, "PRODUCT_KEY": PRODUCT_KEY,
                "FOTA_URL": srv.base + "/upgrade?"}
            if n == 1:
                values["RUN_FOR_MS"] = 3500
            if n == 2:
                url = f"{srv.base}/files/{pkg.file}"
                commands = CommandServer(policy=(policy or _tcp_policy)(url),
                                         log=lambda line: out.write(f"tcp: {line}\n".encode()))
                commands.start()
                values.pop("FOTA_URL")
                values.update(SERVER_ADDR="127.0.0.1", SERVER_PORT=commands.port,
                              RUN_FOR_MS=5000)
            values.update(settings or {})
            app = work / "main.py"
            app.write_text(app_text(n, values), encoding="utf-8")
            code = vboard.run(flash, app=app, timeout=timeout, stream=out, sleep_scale=sleep_scale,
                              max_boots=boots if n == 3 else 5)
        finally:
            if commands is not None:
                commands.stop()
            srv.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Outcome(code, out.text, running_core(flash), server_lines, commands)


def check(n: int, o: Outcome) -> list[str]:
    """What a scenario run should have shown and did not (empty: all good)."""
    problems = []
    if o.core != TARGET_CORE:
        problems.append(f"the board runs core {o.core}, not {TARGET_CORE}")
    if n in (1, 2) and o.code != 0:
        problems.append(f"the board ended with exit code {o.code}")
    if n == 1 and "code=27" not in "\n".join(o.server_lines):
        problems.append("the check after the update was not answered 'already latest' (27)")
    if n == 2 and o.commands is not None:
        results = [e.data for e in o.commands.events if e.data and e.data.get("event") == "result"]
        if not results or results[0].get("code") != 0:
            problems.append("the command server got no result 0 from the board")
    if n == 3:
        if o.code != vboard.EXIT_DEEPSLEEP:
            problems.append(f"the last boot did not end in deep sleep (exit {o.code})")
        if f"deep sleep {PSM_WAKE_MS} ms" not in o.output:
            problems.append(f"no deep sleep of {PSM_WAKE_MS} ms")
        if "reset cause deepsleep" not in o.output:
            problems.append("no boot woke from deep sleep")
    return problems


def run_scenario(n: int, flash_dir: str | os.PathLike, *, sleep_scale: float = DEFAULT_SLEEP_SCALE,
                 stream: BinaryIO | None = None) -> int:
    """Run scenario n on the virtual board in flash_dir, printing as it goes; 0 when it showed
    what it should, else UserError (for `mpfota demo --scenario N` and `mpfota scenario N`)."""
    if stream is None:
        stream = sys.stdout.buffer
    print(f"scenario {n}: board in {flash_dir}, core {FROM_CORE}; mpfota serve offers core "
          f"{TARGET_CORE}", flush=True)
    o = run(n, flash_dir, stream=stream, sleep_scale=sleep_scale)
    problems = check(n, o)
    if problems:
        raise UserError(f"scenario {n}: " + "; ".join(problems))
    print(f"scenario {n}: done - the board runs core {o.core} (flash kept in {flash_dir})",
          flush=True)
    return 0


def add_arguments(p: argparse.ArgumentParser, scenario_option: bool = True) -> None:
    """--scenario N and --sleep-scale, for `mpfota demo` (`mpfota scenario` takes N as its
    positional argument and only --sleep-scale)."""
    if scenario_option:
        p.add_argument("--scenario", type=int, choices=sorted(SCENARIOS), metavar="N",
                       help="run scenario N of seed 001 instead: 1 simple libfota2 update, "
                            "2 TCP command, 3 PSM low power (see `mpfota scenario -h`)")
    p.add_argument("--sleep-scale", type=_scale, default=DEFAULT_SLEEP_SCALE, metavar="S",
                   help=f"deep-sleep time scale for scenario 3 (default {DEFAULT_SLEEP_SCALE:g}: "
                        "4 h -> 0.144 s)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scenario", help="the seed's three FOTA scenarios on the virtual board",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  mpfota scenario 3 --flash build/psm-board")
    p.add_argument("number", type=int, choices=sorted(SCENARIOS), help="1, 2 or 3")
    p.add_argument("--flash", type=Path, default=None,
                   help="board directory (recreated; default build/scenario-N)")
    add_arguments(p, scenario_option=False)
    p.set_defaults(func=lambda a: run_scenario(
        a.number, a.flash or paths.BUILD / f"scenario-{a.number}",
        sleep_scale=a.sleep_scale))
