"""`mpfota serve`: the reference third-party FOTA server, and `mpfota server ...` to run it.

A device asks `GET <any path>?<query>` with the LuatOS query strings:

    libfota2:       imei=<id>&project_key=<k>&firmware_name=<fw>&version=<core>.<X>.<Z>
                    (or mac=<id>, uid=<id> in place of imei)
    old update.lua: project_key=<k>&imei=<id>&firmware_name=<fw>&core_version=<n>&dfota=1
                    &version=<A.B.C>[&need_oss_url=1]

and gets either the package (200 with the file as the body, 206 for a Range, or a 302 to a
static store with --redirect-base) or, when there is no upgrade, an answer >= 300 whose body is
the IoT platform's JSON, e.g. {"code": 27, "msg": "\\u5df2\\u662f\\u6700\\u65b0\\u7248\\u672c"}.
`/files/<name>` serves stored package files directly (Range too), `/healthz` answers "ok".

In Python (tests, the demo):

    with FotaServer("/tmp/fota-data") as srv:        # 127.0.0.1, a free port
        srv.store.publish("KEY", "DEMO_LuatOS-SoC_UNIX", "001.000.001", file="pkg.bin")
        url = srv.base + "/upgrade?"                  # libfota2 opts.url
        ...

The rules, in the order they are checked, and the state they use: docs/server.md.
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import json
import os
import re
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from .errors import UserError
from .helptext import examples
from .serverdb import ANY_CORE, Package, Store, canonical_core, version_rules

# The IoT platform's answers when there is no upgrade (libfota2.lua's table), and the HTTP
# status this server sends each with (any status >= 300 means "no upgrade" to the clients;
# 3xx is avoided because clients follow or stop on it, and old update.lua parses the JSON of
# non-3xx answers only).
MESSAGES = {
    3: "无效的设备",  # invalid device
    17: "无权限",  # no permission: device, firmware and project not under one owner
    21: "不允许升级",  # upgrade not allowed: the device is banned
    25: "无效的项目",  # invalid project
    26: "无效的固件",  # invalid firmware
    27: "已是最新版本",  # already the latest version
    40: "循环升级",  # cyclic upgrade: too many upgrade requests today
    43: "请等待",  # please wait: the package for this device is being prepared
}
STATUS = {3: 403, 17: 403, 21: 403, 25: 404, 26: 404, 27: 404, 40: 429, 43: 503}
RETRY_AFTER_S = 60  # with code 43 (the platform says: retry in 1-3 minutes)
DAILY_LIMIT = 6  # upgrade offers per device and day before the cyclic ban (code 40)
ID_PARAMS = ("imei", "mac", "uid")
_ID_OK = re.compile(r"[0-9A-Za-z:._-]{1,64}")
_FIELD_MAX = 200
_CHUNK = 1 << 20

# --- requests ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """What a device's query says. Values are as sent ("" when a parameter is absent)."""

    device: str
    id_param: str
    project: str
    firmware: str
    version: str
    core_version: str | None  # old update.lua sends it; libfota2 puts the core in version
    need_oss_url: bool = False

    @property
    def style(self) -> str:
        return "update" if self.core_version is not None else "libfota2"


def parse_check(query: str) -> Check:
    """The check parameters of a query string. The first of imei, mac, uid names the device
    (names are case-sensitive, as on the platform: IMEI= is not a device id)."""
    q = parse_qs(query, keep_blank_values=True, max_num_fields=64)

    def one(name: str) -> str:
        return q.get(name, [""])[0][:_FIELD_MAX + 1]

    id_param = next((p for p in ID_PARAMS if p in q), "")
    return Check(device=one(id_param) if id_param else "", id_param=id_param,
                 project=one("project_key"), firmware=one("firmware_name"),
                 version=one("version"),
                 core_version=one("core_version") if "core_version" in q else None,
                 need_oss_url=one("need_oss_url") == "1")


@dataclass(frozen=True)
class DeviceVersion:
    core: str  # canonical core version ("2012", "17", "1.0.0")
    script: str  # the script version A.B.C, as version.is_upgrade compares it


def device_version(check: Check) -> DeviceVersion:
    """Core and script version of a request; ValueError (with the cause) when malformed.

    libfota2 sends "<core>.<X>.<Z>" (X and Z from VERSION X.Y.Z, Y dropped): the core is
    everything before the last two numbers. update.lua sends core_version=<n> and VERSION."""
    v = check.version
    if not v or len(v) > _FIELD_MAX:
        raise ValueError("no version" if not v else "version too long")
    if check.core_version is not None:
        core, script = check.core_version, v
    else:
        parts = v.split(".")
        if len(parts) < 3:
            raise ValueError(f"version {v[:40]!r} is not <core>.<X>.<Z>")
        core, script = ".".join(parts[:-2]), f"{parts[-2]}.0.{parts[-1]}"
    cause = version_rules().check(script)
    if cause:
        raise ValueError(f"version {v[:40]!r}: {cause}")
    return DeviceVersion(canonical_core(core), script)


def upgrade_available(dv: DeviceVersion, pkg: Package) -> bool:
    """The release is newer for this device: its script version may replace the device's by
    the seed-001 rule (version.is_upgrade), or it brings a newer core (the platform offers
    those too, seed 001 §7.3)."""
    rules = version_rules()
    if rules.is_upgrade(dv.script, pkg.version):
        return True
    return pkg.core is not None and rules.compare_core(pkg.core, dv.core) == 1


@dataclass(frozen=True)
class Answer:
    status: int
    code: int | None = None  # the platform code of a no-upgrade answer
    cause: str = ""  # for the log line
    package: Package | None = None

    @property
    def body(self) -> bytes:
        if self.code is None:
            return b""
        return json.dumps({"code": self.code, "msg": MESSAGES[self.code]}).encode()


def no_upgrade(code: int, cause: str, status: int | None = None) -> Answer:
    return Answer(status or STATUS[code], code, cause)


def decide(store: Store, check: Check, *, now: float, addr: str | None = None,
           fresh: bool = True, daily_limit: int = DAILY_LIMIT) -> Answer:
    """The answer to one check, and its effect on the state (one transaction).

    `fresh`: the request would start a download (a GET without Range, or from byte 0); only
    those count towards the cyclic-upgrade guard, so resuming a download never bans."""
    if not check.device:
        return no_upgrade(3, "no device id (imei=, mac= or uid=)", 400)
    if not _ID_OK.fullmatch(check.device):
        return no_upgrade(3, f"bad device id {check.device[:40]!r}", 400)
    dev = check.device
    with store.tx() as db:
        answer = _decide(store, db, check, now, addr, fresh, daily_limit)
        store.answered(db, dev, answer.code)
    return answer


def _decide(store: Store, db, check: Check, now: float, addr: str | None, fresh: bool,
            daily_limit: int) -> Answer:
    dev, project, firmware = check.device, check.project, check.firmware
    refusal = None
    if not project or not store.project_known(project):
        refusal = no_upgrade(25, f"unknown project {project[:40]!r}")
    elif store.allowed(db, project, dev) is False:
        if store.allowed_elsewhere(db, project, dev):
            refusal = no_upgrade(17, "device is allowed under another project only")
        else:
            refusal = no_upgrade(3, "device not on the project's allow-list")
    else:
        owner = store.owner(db, dev)
        if owner is not None and owner != project:
            refusal = no_upgrade(17, "device belongs to another project")
    store.seen(db, dev, now, addr=addr, project=None if refusal else project,
               firmware=firmware or None, version=check.version or None)
    if refusal:
        return refusal
    if not store.firmware_known(project, firmware):
        return no_upgrade(26, f"unknown firmware {firmware[:60]!r}")
    ban = store.ban_of(db, dev)
    if ban == "cyclic":
        return no_upgrade(40, "device banned after repeated upgrades (mpfota server unban)")
    if ban:
        return no_upgrade(21, "device banned by the administrator")
    try:
        dv = device_version(check)
    except ValueError as e:
        return no_upgrade(26, str(e), 400)
    pkg = store.current(project, firmware, dv.core)
    if pkg is None:
        return no_upgrade(27, f"newest release has no package for core {dv.core}")
    if not upgrade_available(dv, pkg):
        return no_upgrade(27, f"up to date ({check.version} vs release {pkg.version})")
    if pkg.file is None or store.file_path(pkg.file) is None:
        return no_upgrade(43, f"package {pkg.version} for core {pkg.from_core} not ready")
    if fresh:
        if daily_limit and store.offers_today(db, dev, now) >= daily_limit:
            store.ban(dev, "cyclic", now, db)
            return no_upgrade(40, f"more than {daily_limit} upgrade requests today: banned")
        store.count_offer(db, dev, now)
    return Answer(200, None, f"offer {pkg.version} from core {pkg.from_core}", pkg)


# --- byte ranges ------------------------------------------------------------------------


UNSATISFIABLE = (-1, -1)


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """One byte range (first, last inclusive) of a Range header, None to send the whole
    file (absent, malformed or several ranges: RFC 9110 allows ignoring), UNSATISFIABLE
    when it starts beyond the end."""
    if not value:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d{0,18})\s*-\s*(\d{0,18})\s*", value)
    if not m or (not m[1] and not m[2]):
        return None
    if not m[1]:  # suffix: the last N bytes
        n = int(m[2])
        if n == 0:
            return UNSATISFIABLE
        return (max(size - n, 0), size - 1) if size else UNSATISFIABLE
    first = int(m[1])
    if m[2] and int(m[2]) < first:
        return None
    if first >= size:
        return UNSATISFIABLE
    return first, (min(int(m[2]), size - 1) if m[2] else size - 1)


def range_start(value: str | None) -> int | None:
    """Where a Range header asks to start (for the cyclic guard), None when it does not."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d{1,18})\s*-.*", value or "")
    return int(m[1]) if m else None


# --- HTTP --------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for the handlers (after their sockets close)
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], fota: FotaServer) -> None:
        self.fota = fota
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()
        self.stopping = False
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: tuple) -> None:
        exc = sys.exc_info()[1]
        self.fota.log(f"{client_address[0]} connection error: {exc.__class__.__name__}: {exc}")

    def close_connections(self) -> None:
        """End every connection, and any that a handler registers from now on."""
        with self.conns_lock:
            self.stopping = True
            conns = list(self.conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mpfota-serve"
    sys_version = ""
    timeout = 30  # idle seconds before a connection is dropped
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.conns_lock:
            self.server.conns.add(self.connection)
            if self.server.stopping:  # accepted just before the server stopped
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        with self.server.conns_lock:
            self.server.conns.discard(self.connection)
        super().finish()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one line per request is written by _done

    def log_error(self, format: str, *args: object) -> None:
        self.server.fota.log(f"{self.address_string()} error: {format % args}")

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:  # libfota2 opts.method = "POST": the query decides, not the body
        n = int(self.headers.get("Content-Length") or 0)
        if n > 65536:
            self.close_connection = True
        else:
            self.rfile.read(n)
        self._handle()

    # -- one request

    def _handle(self) -> None:
        self._t0 = time.monotonic()
        self._sent = 0
        self._note = ""
        url = urlsplit(self.path)
        try:
            if url.path.startswith("/files/"):
                self._serve_file(url.path[len("/files/"):], None)
            elif url.path == "/healthz":
                self._small(200, b"ok\n", "text/plain")
            else:
                self._check(url.query)
        except (BrokenPipeError, ConnectionResetError, TimeoutError) as e:
            self.close_connection = True
            self._done(self._status, f"{self._note} aborted: {e.__class__.__name__}")
            return
        except Exception as e:  # noqa: BLE001 - a fault: answer 500 if nothing was sent, log it
            self.close_connection = True
            self._note += f" internal error: {e.__class__.__name__}: {e}"
            if not self._status:
                self._small(500, b"internal error\n", "text/plain")
        self._done(self._status, self._note)

    def _check(self, query: str) -> None:
        fota = self.server.fota
        check = parse_check(query)
        fresh = self.command != "HEAD" and not range_start(self.headers.get("Range"))
        answer = decide(fota.store, check, now=fota.clock(), addr=self.client_address[0],
                        fresh=fresh, daily_limit=fota.daily_limit)
        self._note = (f"{check.style} {check.id_param or 'id'}={check.device[:40]} "
                      f"fw={check.firmware[:60]} v={check.version[:40]}")
        if answer.code is not None:
            self._note += f" code={answer.code} {answer.cause}"
            headers = {"Retry-After": str(RETRY_AFTER_S)} if answer.code == 43 else {}
            self._small(answer.status, answer.body, "application/json; charset=utf-8", headers)
            return
        pkg = answer.package
        assert pkg is not None and pkg.file is not None
        self._note += f" {answer.cause}"
        if fota.redirect_base:
            self._redirect(fota.redirect_base + quote(pkg.file))
        else:
            self._serve_file(pkg.file, pkg)

    def _small(self, status: int, body: bytes, ctype: str,
               headers: dict[str, str] | None = None) -> None:
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            self._sent = len(body)

    def _redirect(self, location: str) -> None:
        self._status = 302
        self._note += f" -> {location}"
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()

    def _serve_file(self, name: str, pkg: Package | None) -> None:
        path = self.server.fota.store.file_path(name)
        if path is None:
            self._small(404, b"not found\n", "text/plain")
            return
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            size = st.st_size
            etag = _etag(name, st)
            last_modified = email.utils.formatdate(st.st_mtime, usegmt=True)
            rng = parse_range(self.headers.get("Range"), size)
            if_range = self.headers.get("If-Range")
            if rng is not None and if_range is not None and if_range.strip() not in (
                    etag, last_modified):
                rng = None  # the file changed since the client's first part: send it whole
            if rng == UNSATISFIABLE:
                self._status = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            first, last = rng if rng else (0, size - 1)
            self._status = 206 if rng else 200
            self.send_response(self._status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(last - first + 1))
            if rng:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", last_modified)
            if pkg is not None:
                self.send_header("X-Fota-Version", pkg.version)
                if pkg.sha256:
                    self.send_header("X-Fota-Sha256", pkg.sha256)
            self.end_headers()
            if self.command == "HEAD" or last < first:
                return
            self._sent = self._send_body(f, first, last - first + 1)

    def _send_body(self, f, offset: int, count: int) -> int:
        try:
            return self.connection.sendfile(f, offset, count) or 0
        except (AttributeError, NotImplementedError):  # not a plain socket
            f.seek(offset)
            sent = 0
            while sent < count:
                chunk = f.read(min(_CHUNK, count - sent))
                if not chunk:
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
            return sent

    def _done(self, status: int, note: str) -> None:
        ms = (time.monotonic() - self._t0) * 1000
        path = urlsplit(self.path).path
        self.server.fota.log(f"{self.client_address[0]} {self.command} {path[:80]} {status} "
                             f"{self._sent}B {ms:.1f}ms {note}".rstrip())

    _status = 0


def _etag(name: str, st: os.stat_result) -> str:
    head = name.split("-", 1)[0]
    if re.fullmatch(r"[0-9a-f]{16}", head):  # content-addressed name (Store.add_file)
        return f'"{head}"'
    return f'"{int(st.st_mtime):x}-{st.st_size:x}"'


def _stderr_log(line: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} {line}", file=sys.stderr, flush=True)


class FotaServer:
    """The server, in-process: start() serves on a thread, stop() shuts it down cleanly.

    `log` gets one line per request; `clock` gives the time for day counters and bans
    (tests move it forward)."""

    def __init__(self, data_dir: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 0,
                 redirect_base: str | None = None, daily_limit: int = DAILY_LIMIT,
                 log: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = Store(data_dir)
        self.host = host
        self.port = port
        if redirect_base and not redirect_base.endswith("/"):
            redirect_base += "/"
        self.redirect_base = redirect_base
        self.daily_limit = daily_limit
        self.log = log or _stderr_log
        self.clock = clock
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> FotaServer:
        try:
            self._httpd = _HTTPServer((self.host, self.port), self)
        except OSError as e:
            raise UserError(f"cannot listen on {self.host}:{self.port}: {e.strerror}") from e
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.1,),
                                        name="mpfota-serve", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()  # no new connections
        httpd.close_connections()  # ends keep-alive waits and transfers in progress
        httpd.server_close()  # joins the handler threads
        if self._thread:
            self._thread.join(5)
        self.store.close()

    def __enter__(self) -> FotaServer:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- command line -----------------------------------------------------------------------

DEFAULT_DATA = os.environ.get("MPFOTA_SERVER_DATA", "mpfota-server")

SERVE_EPILOG = """examples:
  mpfota server publish --project KEY --firmware DEMO_LuatOS-SoC_ESP32 --version 001.000.001 pkg.bin
  mpfota serve --port 8080
      devices (libfota2): opts.url = "http://HOST:8080/upgrade?", opts.project_key = "KEY"
  mpfota serve --redirect-base http://cdn.example/fota/    302 to a static copy of DATA/files
  mpfota serve --host 0.0.0.0 --daily-limit 10 --data /srv/fota

Answers: 200 (or 206) with the package when there is an upgrade; otherwise 4xx/5xx with the
IoT platform's JSON: 27 latest, 21 banned, 40 cyclic ban, 3 invalid device, 17 no permission,
25 invalid project, 26 invalid firmware, 43 please wait. See docs/server.md.
"""

ADMIN_EPILOG = """examples:
  mpfota server publish app.pkg                 an mpfota package names its project, firmware,
                                                versions and base core itself (mpfota pack)
  mpfota server publish --project KEY --firmware FW --version 001.000.002 luatos.bin
  mpfota server publish --project KEY --firmware FW --version 1.0.1 --core 22 \\
      --from-core 17 pkg_from_v0017.bin        one package per installed core (seed 002)
  mpfota server publish --project KEY --firmware FW --version 1.0.1 --from-core 19
      (no file: announced; devices on core 19 get code 43 "please wait" until published)
  mpfota server releases
  mpfota server devices
  mpfota server unban 861234567890123          lift a ban (21 or the cyclic 40)
  mpfota server allow --project KEY 861234567890123 861234567890124
  mpfota server allow --project KEY            list the project's allow-list
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the reference FOTA server (LuatOS protocol)",
                       description="Serve FOTA packages to LuatOS-style clients (libfota2, "
                                   "update.lua, mpfota) with the IoT platform's rules.",
                       epilog=SERVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _data_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free)")
    p.add_argument("--redirect-base", metavar="URL",
                   help="answer upgrades with 302 to URL + file name (a static copy of "
                        "DATA/files: nginx, object storage, a CDN) instead of the body")
    p.add_argument("--daily-limit", type=int, default=DAILY_LIMIT, metavar="N",
                   help=f"upgrade offers per device and day before the cyclic ban, code 40 "
                        f"(default {DAILY_LIMIT}; 0: no limit)")
    p.add_argument("--quiet", action="store_true", help="no per-request log lines")
    p.set_defaults(func=cmd_serve)

    a = sub.add_parser("server", help="administer the FOTA server's releases and devices",
                       description="Releases, devices, bans and allow-lists of `mpfota serve` "
                                   "(works while the server runs).",
                       epilog=ADMIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    asub = a.add_subparsers(dest="action", metavar="ACTION", required=True)

    pub = asub.add_parser(
        "publish", help="add a package to a release (creating the release)",
        **examples("mpfota server publish app.pkg",
                   "mpfota server publish --project KEY --firmware FOTA2_DEMO_LuatOS-SoC_UNIX "
                   "--version 001.000.001 --core 2.0.0 --from-core 1.0.0 core.pkg"))
    _data_arg(pub)
    pub.add_argument("--project",
                     help="project_key the devices send (default: the package's PROJECT)")
    pub.add_argument("--firmware", help="firmware_name the devices send")
    pub.add_argument("--version",
                     help="script VERSION A.B.C the devices report after the update")
    pub.add_argument("--core", help="core version the package brings (a newer core is an "
                                    "upgrade even with the same script version)")
    pub.add_argument("--from-core",
                     help="installed core this package applies to (default * : any)")
    pub.add_argument("file", nargs="?",
                     help="the package file (omit: announce, not ready); an mpfota package "
                          "(mpfota pack) supplies the fields its manifest has")
    pub.set_defaults(func=cmd_publish)

    rel = asub.add_parser("releases", help="list releases and their packages",
                          **examples("mpfota server releases --data /srv/fota"))
    _data_arg(rel)
    rel.set_defaults(func=cmd_releases)

    ret = asub.add_parser("retract", help="withdraw a release", **examples(
        "mpfota server retract --project KEY --firmware FW --version 001.000.001"))
    _data_arg(ret)
    ret.add_argument("--project", required=True)
    ret.add_argument("--firmware", required=True)
    ret.add_argument("--version", required=True)
    ret.set_defaults(func=cmd_retract)

    dev = asub.add_parser("devices", help="list the devices seen",
                          **examples("mpfota server devices", "mpfota server devices --json"))
    _data_arg(dev)
    dev.add_argument("--json", action="store_true", help="JSON lines")
    dev.set_defaults(func=cmd_devices)

    for name, helptext, func in (("ban", "ban devices (code 21)", cmd_ban),
                                 ("unban", "lift bans (21 and the cyclic 40)", cmd_unban),
                                 ("forget", "drop devices' registration, counters and bans",
                                  cmd_forget)):
        s = asub.add_parser(name, help=helptext,
                            **examples(f"mpfota server {name} 867361302685621"))
        _data_arg(s)
        s.add_argument("devices", nargs="+", metavar="ID", help="imei / mac / uid")
        s.set_defaults(func=func)

    for name, helptext, func in (
            ("allow", "add devices to a project's allow-list (none given: list it)", cmd_allow),
            ("disallow", "remove devices from a project's allow-list", cmd_disallow)):
        s = asub.add_parser(name, help=helptext, **examples(
            f"mpfota server {name} --project KEY 867361302685621"))
        _data_arg(s)
        s.add_argument("--project", required=name == "disallow")
        s.add_argument("devices", nargs="*", metavar="ID")
        s.set_defaults(func=func)


def _data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=DEFAULT_DATA, metavar="DIR",
                   help="data directory: fota.db and files/ (default $MPFOTA_SERVER_DATA or "
                        "./mpfota-server)")


def _store(args: argparse.Namespace) -> Store:
    try:
        return Store(args.data)
    except (OSError, sqlite3.Error) as e:
        raise UserError(f"cannot open the server data in {args.data}: {e}") from e


def cmd_serve(args: argparse.Namespace) -> int:
    version_rules()
    redirect = args.redirect_base
    if redirect and not urlsplit(redirect).scheme.startswith("http"):
        raise UserError(f"--redirect-base {redirect!r}: expected an http(s):// URL")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: expected 0..65535")
    if args.daily_limit < 0:
        raise UserError(f"--daily-limit {args.daily_limit}: expected 0 (no limit) or more")
    try:
        srv = FotaServer(args.data, host=args.host, port=args.port, redirect_base=redirect,
                         daily_limit=args.daily_limit,
                         log=(lambda line: None) if args.quiet else None)
        srv.start()
    except OSError as exc:
        raise UserError(f"cannot serve from {args.data} on {args.host}:{args.port}: "
                        f"{exc.strerror or exc}") from None
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    print(f"mpfota serve: {srv.base} (data {Path(args.data).resolve()})"
          + (f", downloads redirected to {srv.redirect_base}" if redirect else ""),
          file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        srv.stop()
        for s, h in old.items():
            signal.signal(s, h)
    print("mpfota serve: stopped", file=sys.stderr)
    return 0


def package_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Release metadata from an mpfota package's manifest (docs/package-format.md): project
    (its PROJECT, the default project_key), firmware (the firmware name without the layout
    suffix: devices send PROJECT_LuatOS-SoC_BSP, the layout is checked on the device), version
    (to.script), core (to.core), from_core. Any other file (a LuatOS .bin, a core image) is
    an opaque blob: {} and the command line describes it."""
    from . import package  # only when publishing: the server itself does not need it

    with open(path, "rb") as f:
        if f.read(len(package.MAGIC)) != package.MAGIC:
            return {}
    info = package.read_manifest(path)  # PackageFormatError is a UserError
    firmware = version_rules().split_layout(info.firmware_name)[0]
    found = {"project": info.project, "firmware": firmware,
             "version": info.to_script, "core": info.to_core, "from_core": info.from_core}
    return {k: v for k, v in found.items() if v}


def _merge(option: str, given: str | None, meta: dict[str, str], key: str) -> str | None:
    """A release field from the command line or the package; they must agree when both."""
    found = meta.get(key)
    if given and found and canonical(key, given) != canonical(key, found):
        raise UserError(f"{option} {given!r} differs from the package's manifest ({found!r})")
    return given or found


def canonical(key: str, value: str) -> str:
    return canonical_core(value) if key in ("core", "from_core") else value


def cmd_publish(args: argparse.Namespace) -> int:
    if args.file and not Path(args.file).is_file():
        raise UserError(f"{args.file}: no such file")
    meta = package_metadata(args.file) if args.file else {}
    try:
        # The project_key devices send may differ from the package's PROJECT: --project wins.
        project = args.project or meta.get("project")
        firmware = _merge("--firmware", args.firmware, meta, "firmware")
        version = _merge("--version", args.version, meta, "version")
        core = _merge("--core", args.core, meta, "core")
        from_core = _merge("--from-core", args.from_core, meta, "from_core") or ANY_CORE
    except ValueError as e:
        raise UserError(str(e)) from e
    for name, value in (("--project", project), ("--firmware", firmware),
                        ("--version", version)):
        if not value:
            raise UserError(f"{name} is needed (the file is not a package that names it)")
        if len(value) > _FIELD_MAX or not value.isprintable():
            raise UserError(f"{name} {value[:40]!r}: expected printable text up to "
                            f"{_FIELD_MAX} characters")
    try:
        pkg = _store(args).publish(project, firmware, version, core=core, from_core=from_core,
                                   file=args.file)
    except ValueError as e:
        raise UserError(str(e)) from e
    state = f"{pkg.file} ({pkg.size} bytes, sha256 {pkg.sha256})" if pkg.file else "not ready (43)"
    print(f"published {project} {firmware} {version} from core {pkg.from_core}: {state}")
    return 0


def cmd_releases(args: argparse.Namespace) -> int:
    pkgs = _store(args).packages()
    if not pkgs:
        print("no releases")
    for p in pkgs:
        core = f" core {p.core}" if p.core else ""
        file = f"{p.file} {p.size}B sha256 {p.sha256}" if p.file else "(not ready: 43)"
        print(f"#{p.release} {p.project} {p.firmware} {p.version}{core} from {p.from_core}: "
              f"{file}")
    return 0


def cmd_retract(args: argparse.Namespace) -> int:
    if not _store(args).retract(args.project, args.firmware, args.version):
        raise UserError(f"no release {args.project} {args.firmware} {args.version}")
    print(f"retracted {args.project} {args.firmware} {args.version}")
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    devices = _store(args).devices()
    for d in devices:
        if args.json:
            print(json.dumps(d.__dict__, ensure_ascii=False))
            continue
        seen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.last_seen))
        ban = f" BANNED({d.ban})" if d.ban else ""
        print(f"{d.id} project={d.project} fw={d.firmware} v={d.version} last={seen} "
              f"code={'-' if d.last_code is None else d.last_code} requests={d.requests} "
              f"offers_today={d.offers_today}{ban}")
    if not devices and not args.json:
        print("no devices seen")
    return 0


def cmd_ban(args: argparse.Namespace) -> int:
    store = _store(args)
    for d in args.devices:
        store.ban(d, "admin")
        print(f"banned {d}")
    return 0


def cmd_unban(args: argparse.Namespace) -> int:
    store = _store(args)
    for d in args.devices:
        print(f"{'unbanned' if store.unban(d) else 'was not banned:'} {d}")
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    store = _store(args)
    for d in args.devices:
        print(f"{'forgot' if store.forget(d) else 'not seen:'} {d}")
    return 0


def cmd_allow(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.devices:
        if not args.project:
            raise UserError("--project is required to add devices")
        bad = [d for d in args.devices if not _ID_OK.fullmatch(d)]
        if bad:
            raise UserError(f"not a device id: {bad[0]!r}")
        store.allow(args.project, args.devices)
        print(f"allowed under {args.project}: {' '.join(args.devices)}")
        return 0
    for project, device in store.allow_list(args.project):
        print(f"{project} {device}")
    return 0


def cmd_disallow(args: argparse.Namespace) -> int:
    n = _store(args).disallow(args.project, args.devices)
    print(f"removed {n} from the allow-list of {args.project}")
    return 0
