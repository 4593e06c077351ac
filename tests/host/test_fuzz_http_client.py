"""Fuzzing of the device's HTTP client (device/mpfota/http.py, in the MicroPython unix port)
against a hostile server on 127.0.0.1: hypothesis builds responses (status lines, headers,
Content-Length or chunked framing with extensions and trailers, or a body that ends with the
connection), then damages some of them (wrong lengths, bad chunk-size lines, missing CRLF, cuts,
flipped bytes). Every response must end in a body or in HTTPError with a LuatOS code, never in
another exception or a hang.

The oracle is strict: `expected()` is an independent model of what the client defines for any
byte stream (the rules of device/mpfota/http.py's docstring and the parsers': line limits, status
line, header names and kept values, framing, chunk sizes and trailers), and every response must
end exactly as it says: the same error code, or the same status and exactly the same body bytes
(so a body longer than its Content-Length must be cut there, a short one is ERR_CLOSE).

The pure parsers these build on are fuzzed under CPython (test_httpparse.py,
test_fuzz_parsers.py); this checks the framing state machine that only runs on the device.
`make fuzz` raises the number of batches with MPFOTA_FUZZ_EXAMPLES.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import socketserver
import threading
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpdevice import run_code

BATCH = 40  # responses per MicroPython run
# The codes a response can earn: -2 head, -3 chunked body, -5 closed early, -6 receive error.
ALLOWED = {-2, -3, -5, -6}
ERR_HEADER, ERR_BODY, ERR_CLOSE = -2, -3, -5
LINE_BUF = 1024  # the head buffer the device code below passes: a line (with its LF) must fit
MAX_HEADER_LINES = 64
MAX_DIGITS = 15  # Content-Length
MAX_HEX = 12  # chunk sizes
MAX_TRAILERS = 65
KEPT = {"content-length", "transfer-encoding", "location", "content-range", "etag",
        "last-modified", "retry-after", "connection"}
TCHAR = set(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
UNKNOWN = ("unknown",)  # a header the model does not parse (Content-Range, Retry-After)


def batches(default: int) -> int:
    n = int(os.environ.get("MPFOTA_FUZZ_EXAMPLES") or 0)
    return max(default, n // BATCH) if n else default


@dataclass
class Resp:
    raw: bytes
    body: bytes
    valid: bool  # an undamaged 200: the client must return exactly `body`


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock = self.request
        sock.settimeout(5)
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 8192:
            chunk = sock.recv(4096)
            if not chunk:
                return
            head += chunk
        path = head.split(b" ", 2)[1].decode()
        raw = self.server.responses[int(path.rsplit("/", 1)[1])].raw
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)  # then read to the end: no reset under the client
            while sock.recv(4096):
                pass
        except OSError:
            pass


class HostileServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.responses: list[Resp] = []
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return "http://127.0.0.1:%d" % self.server_address[1]

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def hostile():
    srv = HostileServer()
    yield srv
    srv.stop()


# --- the oracle: what the client must make of a byte stream -----------------------------------


class _End(Exception):
    def __init__(self, outcome: tuple) -> None:
        self.outcome = outcome


def _err(code: int) -> _End:
    return _End(("err", code))


class _Stream:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.pos = 0

    def line(self, err: int) -> bytes:
        """The next line without CRLF / LF; too long for the buffer: `err`; EOF: ERR_CLOSE."""
        i = self.raw.find(b"\n", self.pos)
        if i < 0 or i + 1 - self.pos > LINE_BUF:
            if len(self.raw) - self.pos >= LINE_BUF:
                raise _err(err)  # the buffer fills up without a line end
            raise _err(ERR_CLOSE)
        a, self.pos = self.pos, i + 1
        return self.raw[a:i - 1 if i > a and self.raw[i - 1] == 13 else i]

    def take(self, n: int) -> bytes:
        if len(self.raw) - self.pos < n:
            raise _err(ERR_CLOSE)
        self.pos += n
        return self.raw[self.pos - n:self.pos]


def _status(line: bytes) -> int:
    ok = (len(line) >= 12 and line[:7] == b"HTTP/1." and line[7:8].isdigit()
          and line[8] == 32 and line[9:12].isdigit() and (len(line) == 12 or line[12] == 32))
    if not ok or int(line[9:12]) < 100:
        raise _err(ERR_HEADER)
    return int(line[9:12])


def _header(line: bytes) -> tuple[str, str] | None:
    if line[:1] in (b" ", b"\t"):
        return None  # obsolete folding: ignored
    i = line.find(b":")
    if i <= 0 or any(c not in TCHAR for c in line[:i]):
        raise _err(ERR_HEADER)
    name = line[:i].decode().lower()
    if name not in KEPT:
        return None
    value = line[i + 1:]
    if any((c < 32 and c != 9) or c > 126 for c in value):
        raise _err(ERR_HEADER)
    return name, value.decode().strip(" \t")


def _content_length(value: str) -> int:
    parts = [p.strip(" \t") for p in value.split(",")]
    if any(not p or len(p) > MAX_DIGITS or not p.isascii() or not p.isdigit() for p in parts) \
            or len({int(p) for p in parts}) > 1:
        raise _err(ERR_HEADER)
    return int(parts[0])


def _head(s: _Stream) -> tuple[int, str | None, int | None]:
    lines = 0
    while True:
        status = _status(s.line(ERR_HEADER))
        te = cl = None
        while line := s.line(ERR_HEADER):
            lines += 1
            if lines > MAX_HEADER_LINES:
                raise _err(ERR_HEADER)
            kv = _header(line)
            if kv is None:
                continue
            name, value = kv
            if name == "content-length":
                n = _content_length(value)
                if cl is not None and n != cl:
                    raise _err(ERR_HEADER)
                cl = n
            elif name == "transfer-encoding":
                te = value if te is None else te + "," + value
            elif name in ("content-range", "retry-after"):
                raise _End(UNKNOWN)
        if status >= 200:
            return status, te, cl
        lines += 1  # an interim 1xx answer: skipped, its lines count


def _chunked(s: _Stream) -> bytes:
    body = b""
    while True:
        if body and s.line(ERR_BODY):
            raise _err(ERR_BODY)  # chunk data not followed by CRLF
        line = s.line(ERR_BODY)
        size = line.split(b";", 1)[0].rstrip(b" \t")
        if not size or len(size) > MAX_HEX or any(c not in b"0123456789abcdefABCDEF"
                                                  for c in size):
            raise _err(ERR_BODY)
        n = int(size, 16)
        if n == 0:
            for _ in range(MAX_TRAILERS):
                if not s.line(ERR_BODY):
                    return body
            raise _err(ERR_BODY)
        body += s.take(n)


def expected(raw: bytes) -> tuple:
    """("err", code), ("body", status, bytes), or UNKNOWN: what the client defines for `raw`
    as the whole answer to a GET (the server closes after it)."""
    s = _Stream(raw)
    try:
        status, te, cl = _head(s)
        if status in (204, 304):
            return ("body", status, b"")
        if status == 206:
            raise _err(ERR_HEADER)  # 206 without a Content-Range
        if te is not None:
            chunked = te.split(",")[-1].strip(" \t").lower() == "chunked"
            return ("body", status, _chunked(s) if chunked else raw[s.pos:])
        if cl is not None:
            return ("body", status, s.take(cl))
        return ("body", status, raw[s.pos:])
    except _End as end:
        return end.outcome


# --- responses -------------------------------------------------------------------------------

def _chunks(body: bytes, sizes: list[int]) -> list[bytes]:
    out, pos = [], 0
    for s in sizes:
        if pos >= len(body):
            break
        out.append(body[pos:pos + max(1, s)])
        pos += max(1, s)
    if pos < len(body):
        out.append(body[pos:])
    return out


@st.composite
def responses(draw) -> Resp:
    body = draw(st.binary(max_size=3000))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    status = draw(st.sampled_from([200] * 6 + [204, 206, 304, 404, 500, 100, 199, 999]))
    reason = draw(st.sampled_from([b"OK", b"", b"Whatever it is", b"\xc3\xa9"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]))
    headers = [b"Server: hostile", b"X-Pad: " + b"p" * draw(st.integers(0, 300))]
    if draw(st.booleans()):
        headers.append(b"ETag: \"abc\"")
    payload = body
    if framing == "length":
        headers.append(b"Content-Length: %d" % len(body))
    elif framing == "chunked":
        headers.append(b"Transfer-Encoding: " + draw(st.sampled_from([b"chunked", b"Chunked",
                                                                      b"gzip, chunked"])))
        sizes = draw(st.lists(st.integers(1, 1200), max_size=6))
        parts = []
        for c in _chunks(body, sizes):
            ext = draw(st.sampled_from([b"", b";name=value", b" ; x", b";q=\"a b\""]))
            size = draw(st.sampled_from([b"%x", b"%X", b"000%x"])) % len(c)
            parts.append(size + ext + b"\r\n" + c + b"\r\n")
        trailer = draw(st.sampled_from([b"", b"Trailer-Field: 1\r\n"]))
        payload = b"".join(parts) + b"0\r\n" + trailer + b"\r\n"
    valid = status == 200
    head = version + b" %d " % status + reason + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n"
    raw = head + payload
    damage = draw(st.sampled_from(["none"] * 4 + ["cut", "flip", "length", "size", "crlf",
                                                  "insert", "dup-length"]))
    if damage != "none":
        valid = False
        at = draw(st.integers(0, max(0, len(raw) - 1)))
        if damage == "cut":
            raw = raw[:at]
        elif damage == "flip" and raw:
            raw = raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1:]
        elif damage == "insert":
            raw = raw[:at] + draw(st.sampled_from([b"\r\n", b"\n", b"\x00", b":", b"\r\n\r\n",
                                                   b"ffffffffffffffff\r\n"])) + raw[at:]
        elif damage == "length":  # the one Content-Length is wrong (or, framed otherwise, added)
            delta = draw(st.sampled_from([-1, -100, 1, 100, -(10**6), 10**20]))
            wrong = b"Content-Length: %d" % (len(body) + delta)
            raw = (head.replace(b"Content-Length: %d" % len(body), wrong) if framing == "length"
                   else head.replace(b"Server: hostile", wrong)) + payload
        elif damage == "size" and framing == "chunked":
            raw = head + draw(st.sampled_from([b"zz\r\n", b"-1\r\n", b"1" * 40 + b"\r\n",
                                               b"\r\n", b"10\r\nshort\r\n0\r\n\r\n"]))
        elif damage == "crlf" and framing == "chunked":
            raw = head + payload.replace(b"\r\n", b"\n", 2)
        elif damage == "dup-length":
            raw = head.replace(b"Server: hostile", b"Content-Length: 1\r\nContent-Length: 2") \
                + payload
        else:
            valid = damage == "none"
    return Resp(raw, body, valid)


DEVICE = """
import asyncio, binascii, hashlib, json
from mpfota import http

BASE = %r
N = %d


async def one(i):
    buf = bytearray(1024)
    mv = memoryview(bytearray(700))
    try:
        r = await http.request("GET", BASE + "/r/%%d" %% i, buf, read_timeout_ms=4000,
                               deadline_ms=10000, follow_redirects=False)
        h = hashlib.sha256()
        n = 0
        while True:
            k = await r.readinto(mv)
            if not k:
                break
            h.update(mv[:k])
            n += k
        r.close()
        return {"status": r.status, "n": n, "sha": binascii.hexlify(h.digest()).decode()}
    except http.HTTPError as e:
        return {"err": e.code, "msg": str(e)}
    except Exception as e:
        return {"crash": repr(e)}


for i in range(N):
    print("R", json.dumps(asyncio.run(one(i))))
"""


def run_batch(server: HostileServer, batch: list[Resp]) -> list[dict]:
    server.responses = batch
    proc = run_code(DEVICE % (server.base, len(batch)), timeout=120)
    got = [json.loads(line[2:]) for line in proc.stdout.splitlines() if line.startswith("R ")]
    assert proc.returncode == 0 and len(got) == len(batch), proc.stdout[-3000:] + proc.stderr
    return got


def outcome(r: dict) -> tuple:
    """A device result in the oracle's terms (the body as its length and SHA-256)."""
    if "err" in r:
        return ("err", r["err"])
    return ("body", r["status"], r["n"], r["sha"])


def check(batch: list[Resp], got: list[dict]) -> None:
    for resp, r in zip(batch, got, strict=True):
        where = f"response {resp.raw[:300]!r} -> {r}"
        assert "crash" not in r, where
        want = expected(resp.raw)
        if resp.valid:  # the generator's own word: an undamaged 200
            assert want == ("body", 200, resp.body), where
        if want == UNKNOWN:
            assert r.get("err") in ALLOWED or r.get("n", 0) <= len(resp.raw), where
            continue
        if want[0] == "body":
            want = ("body", want[1], len(want[2]), hashlib.sha256(want[2]).hexdigest())
        assert outcome(r) == want, f"{where}: expected {want}"


@settings(max_examples=batches(3), deadline=None, derandomize=not os.environ.get(
    "MPFOTA_FUZZ_EXAMPLES"), suppress_health_check=list(HealthCheck))
@given(st.lists(responses(), min_size=BATCH, max_size=BATCH))
def test_hostile_responses_end_in_a_body_or_a_defined_error(hostile, batch):
    check(batch, run_batch(hostile, batch))


def test_known_framings(hostile):
    """Hand-written cases, including every crash the fuzzing found (none so far)."""
    body = bytes(range(256)) * 5
    cases = [
        Resp(b"HTTP/1.1 200 OK\r\nContent-Length: 1280\r\n\r\n" + body, body, True),
        Resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n500\r\n" + body +
             b"\r\n0\r\nX: y\r\n\r\n", body, True),
        Resp(b"HTTP/1.0 200 OK\r\n\r\n" + body, body, True),
        Resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\na\r\n" * 2000 +
             b"0\r\n\r\n", b"a" * 2000, True),
        Resp(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nx", b"", False),
        Resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"0" * 5000 + b"1\r\n",
             b"", False),
        Resp(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 500 + b"\r\n", b"", False),
        Resp(b"HTTP/1.1 200 OK\r\nX: " + b"y" * 5000 + b"\r\n\r\n", b"", False),
        Resp(b"", b"", False),
        Resp(b"\r\n\r\n", b"", False),
        # a body longer than its Content-Length: cut there; a shorter one: closed early
        Resp(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + body, b"", False),
        Resp(b"HTTP/1.1 200 OK\r\nContent-Length: 1281\r\n\r\n" + body, b"", False),
    ]
    got = run_batch(hostile, cases)
    check(cases, got)
    assert [r.get("err") for r in got[4:]] == [-2, -3, -2, -2, -5, -2, None, -5], got
    assert (got[10]["n"], got[10]["sha"]) == (1000, hashlib.sha256(body[:1000]).hexdigest())
