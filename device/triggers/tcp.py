# Scenario 2 of seed 001 (§6.4.2): the device keeps a TCP connection to a command server and
# starts a FOTA when the server sends
#
#     {"fota": "true", "url": "http://host/FOTA2_DEMO_001.000.001_LuatOS-SoC_V2012_Air780EHV_1.soc"}
#
# As LuatOS's tcp_self_receiver.lua + customer_srv_fota.lua, with replies so the server knows
# what happened. One message per line (a message with no newline counts once nothing more
# arrives for IDLE_MS, as a LuatOS socket.rx batch does); every reply is one JSON line:
#
#   on connect        {"event": "hello", "id": IMEI/MAC/UID, "project": PROJECT,
#                      "version": VERSION, "core": core version}
#   fota accepted     {"event": "accepted", "url": url}      libfota2.request() started
#   one is running    {"event": "busy"}                       refused (LuatOS fota_running)
#   fota not "true"   {"event": "ignored", "reason": ...}
#   bad message       {"event": "error", "error": "json" | "type" | "fota" | "url" |
#                      "too_long", "detail": ...}             and nothing else happens
#   FOTA finished     {"event": "result", "code": 0..5}       the libfota2 callback code,
#                                                             sent before the app's callback
# The url is the whole download URL: it is requested as it is (libfota2's "###" form); a
# "version" member, when present, goes to opts.version. The connection is re-made RECONNECT_MS
# after it fails or closes. docs/scenarios.md has the details.
import json

from mpfota import log
from triggers import Connection

try:
    from micropython import const
except ImportError:  # CPython: parse() and fota_opts() are plain logic, fuzzed there
    def const(x):
        return x


MAX_LINE = const(1024)
IDLE_MS = const(300)
CONNECT_MS = const(10000)
RECONNECT_MS = 5000


_WS = " \t\r\n"
_MAX_DEPTH = const(16)


def json_error(s):
    # RFC 8259 syntax check of text s: None when it is one JSON value, else the cause. (The
    # unix and ESP32 ports' json.loads accept some malformed text, e.g. a missing ":"; CPython's
    # accepts NaN: the device decides on the standard, the same everywhere.)
    try:
        i = _skip(s, _value(s, _skip(s, 0), 0))
    except ValueError as exc:
        return str(exc)
    if i != len(s):
        return "extra data at %d" % i
    return None


def _skip(s, i):
    n = len(s)
    while i < n and s[i] in _WS:
        i += 1
    return i


def _value(s, i, depth):
    # Index after the JSON value that starts at s[i]; ValueError when there is none.
    if i >= len(s):
        raise ValueError("unexpected end")
    c = s[i]
    if c == "{" or c == "[":
        if depth >= _MAX_DEPTH:
            raise ValueError("nested deeper than %d" % _MAX_DEPTH)
        return _container(s, i, depth + 1)
    if c == '"':
        return _string(s, i)
    for word in ("true", "false", "null"):
        if s.startswith(word, i):
            return i + len(word)
    return _number(s, i)


def _container(s, i, depth):
    close = "}" if s[i] == "{" else "]"
    i = _skip(s, i + 1)
    if i < len(s) and s[i] == close:
        return i + 1
    while True:
        if close == "}":
            if i >= len(s) or s[i] != '"':
                raise ValueError("expected a member name at %d" % i)
            i = _skip(s, _string(s, i))
            if i >= len(s) or s[i] != ":":
                raise ValueError("expected ':' at %d" % i)
            i = _skip(s, i + 1)
        i = _skip(s, _value(s, i, depth))
        if i < len(s) and s[i] == ",":
            i = _skip(s, i + 1)
            continue
        if i < len(s) and s[i] == close:
            return i + 1
        raise ValueError("expected ',' or '%s' at %d" % (close, i))


def _string(s, i):
    n = len(s)
    i += 1
    while i < n:
        c = s[i]
        if c == '"':
            return i + 1
        if c < " ":
            raise ValueError("control character in a string at %d" % i)
        if c == "\\":
            i += 1
            if i >= n:
                break
            e = s[i]
            if e == "u":
                h = s[i + 1 : i + 5]
                if len(h) != 4 or not all(x in "0123456789abcdefABCDEF" for x in h):
                    raise ValueError("bad \\u escape at %d" % i)
                i += 4
            elif e not in '"\\/bfnrt':
                raise ValueError("bad escape at %d" % i)
        i += 1
    raise ValueError("unterminated string")


def _digits(s, i):
    j = i
    while j < len(s) and "0" <= s[j] <= "9":
        j += 1
    return j


def _number(s, i):
    j = i + 1 if s[i] == "-" else i
    k = _digits(s, j)
    if k == j or (s[j] == "0" and k > j + 1):
        raise ValueError("unexpected %r at %d" % (s[i], i))
    if k < len(s) and s[k] == ".":
        m = _digits(s, k + 1)
        if m == k + 1:
            raise ValueError("bad number at %d" % i)
        k = m
    if k < len(s) and s[k] in "eE":
        m = k + 1
        if m < len(s) and s[m] in "+-":
            m += 1
        e = _digits(s, m)
        if e == m:
            raise ValueError("bad number at %d" % i)
        k = e
    return k


def parse(line):
    # One message (bytes or str) -> a dict: {"event": "fota", "url", "version"} for a command,
    # else the reply to send ({"event": "ignored" | "error", ...}); None for a blank line.
    if isinstance(line, (bytes, bytearray, memoryview)):
        try:
            line = bytes(line).decode()
        except UnicodeError:
            return {"event": "error", "error": "json", "detail": "not UTF-8 text"}
    line = line.strip(_WS)
    if not line:
        return None
    cause = json_error(line)
    if cause is not None:
        return {"event": "error", "error": "json", "detail": cause}
    try:
        msg = json.loads(line)
    except ValueError as exc:  # valid JSON this json module cannot take (e.g. a huge number)
        return {"event": "error", "error": "json", "detail": str(exc) or "not JSON"}
    if not isinstance(msg, dict):
        return {"event": "error", "error": "type", "detail": "not a JSON object"}
    fota = msg.get("fota")
    if fota is None or fota is False or fota == "":
        return {"event": "error", "error": "fota", "detail": "no fota member"}
    url = msg.get("url")
    if not isinstance(url, str) or not url.strip("#").strip():
        return {"event": "error", "error": "url", "detail": "no url string"}
    if fota != "true" and fota is not True:
        return {"event": "ignored", "reason": "fota is %s, not \"true\"" % json.dumps(fota)}
    version = msg.get("version")
    if version is not None and not isinstance(version, str):
        return {"event": "error", "error": "version", "detail": "version is not a string"}
    return {"event": "fota", "url": url, "version": version}


def fota_opts(base, cmd):
    # The libfota2 opts for one command: a copy of the app's opts with the command's url
    # (requested as it is) and version.
    o = dict(base or {})
    url = cmd["url"]
    o["url"] = url if url.startswith("###") else "###" + url
    if cmd.get("version"):
        o["version"] = cmd["version"]
    return o


class Client(Connection):
    # The connection to the command server (start() makes one and runs it as an lsys task).
    tag = "tcp_trigger"

    def __init__(self, host, port, cb=None, opts=None, reconnect_ms=RECONNECT_MS, start=None):
        self.host = host
        self.port = int(port)
        self.cb = cb
        self.opts = opts
        self.reconnect_ms = reconnect_ms
        self.start_fn = start  # None: libfota2.request
        self.commands = 0
        self._buf = bytearray(MAX_LINE)

    # ---- replies ----

    def send(self, obj):
        # One JSON line to the server now (a small write goes out at once); False when offline.
        w = self.link
        if w is None:
            return False
        try:
            w.write(json.dumps(obj).encode() + b"\n")
        except OSError as exc:
            from mpfota import log

            log.warn("tcp_trigger", "reply lost:", exc)
            return False
        return True

    def _hello(self):
        # False when it cannot be sent: MicroPython's open_connection() returns before the
        # connection is known to be made, and a refused one fails on the first write.
        import board
        import lsys

        import triggers

        return self.send({"event": "hello", "id": triggers.device_id(),
                          "project": lsys.PROJECT, "version": lsys.VERSION,
                          "core": board.core_version()})

    # ---- messages ----

    def _result(self, ret):
        self.send({"event": "result", "code": ret})
        if self.cb is not None:
            self.cb(ret)

    def handle(self, line):
        # Act on one received message and answer it.
        import lsys

        import triggers

        lsys.publish("RECV_SELF_DATA_SERVER", bytes(line))
        r = parse(line)
        if r is None:
            return
        log = lsys.log
        if r["event"] == "error":
            log.error("data_processing", r["error"], "error:", r["detail"])
            self.send(r)
            return
        if r["event"] == "ignored":
            log.warn("data_processing", "ignored:", r["reason"])
            self.send(r)
            return
        self.commands += 1
        log.info("接收到数据", "url", r["url"])
        started = False
        if not triggers.busy():
            log.info("开始检查升级")
            try:
                started = triggers.request(self._result, fota_opts(self.opts, r), self.start_fn)
            # a request that cannot even start is reported, not fatal
            except Exception as exc:  # noqa: BLE001
                log.error("tcp_trigger", "request failed:", exc)
                self.send({"event": "error", "error": "request", "detail": str(exc)})
                return
        else:
            log.warn("fota_task", "FOTA 正在运行，跳过本次请求")
        self.send({"event": "accepted", "url": r["url"]} if started else {"event": "busy"})

    def _handle_safely(self, line):
        # A fault while handling one message is logged and answered; the connection goes on.
        try:
            self.handle(line)
        except Exception as exc:  # noqa: BLE001
            import lsys

            lsys.log.error("tcp_trigger", "message not handled:", repr(exc))
            self.send({"event": "error", "error": "internal", "detail": repr(exc)})

    # ---- the connection ----

    async def _session(self, reader):
        import asyncio

        mv = memoryview(self._buf)
        n = 0  # bytes waiting in the buffer
        skipping = False  # inside an over-long line: drop it up to its newline
        while True:
            w = self.link
            if w is not None:
                await w.drain()  # replies a full socket buffer held back (normally none)
            try:
                got = await asyncio.wait_for_ms(reader.readinto(mv[n:]), IDLE_MS)
            except asyncio.TimeoutError:
                if n and not skipping:  # a message without newline: take it as it is
                    self._handle_safely(mv[:n])
                    n = 0
                continue
            if not got:
                return  # closed by the server
            start = 0
            end = n + got
            for i in range(n, end):
                if self._buf[i] == 10:  # "\n"
                    if skipping:
                        skipping = False
                    else:
                        self._handle_safely(mv[start:i])
                    start = i + 1
            n = end - start
            if start and n:
                self._buf[:n] = mv[start:end]
            if n == MAX_LINE:
                if not skipping:
                    self.send({"event": "error", "error": "too_long",
                               "detail": "no newline in %d bytes" % MAX_LINE})
                    import lsys

                    lsys.log.error("tcp_trigger", "message longer than", MAX_LINE, "bytes")
                skipping = True
                n = 0

    async def _open(self):
        import asyncio

        try:
            reader, writer = await asyncio.wait_for_ms(
                asyncio.open_connection(self.host, self.port), CONNECT_MS)
        except (OSError, asyncio.TimeoutError) as exc:
            log.warn("tcp_trigger", "connect", self.host, self.port, "failed:",
                     "timeout" if isinstance(exc, asyncio.TimeoutError) else exc)
            return None
        self.link = writer  # _hello() sends through it
        if not self._hello():
            self.link = None
            writer.close()
            log.warn("tcp_trigger", "connect", self.host, self.port, "failed")
            return None
        log.info("tcp_trigger", "connected", self.host, self.port)
        self._reader = reader
        return writer

    async def _serve(self, writer):
        await self._session(self._reader)

    def _close(self, writer, bye):
        self._reader = None
        try:
            writer.close()
        except OSError:
            pass


def start(host, port, cb=None, opts=None, reconnect_ms=RECONNECT_MS, start=None):
    # Connect to the command server at host:port (after the network is up) and keep the
    # connection; a command starts libfota2.request(cb, fota_opts(opts, command)).
    return Client(host, port, cb, opts, reconnect_ms, start).start()
