"""Fuzzing of the device's HTTP client (device/mpfota/http.py, in the MicroPython unix port)
against a hostile server on 127.0.0.1: hypothesis builds responses (status lines, headers,
Content-Length or chunked framing with extensions and trailers, or a body that ends with the
connection), then damages some of them (wrong lengths, bad chunk-size lines, missing CRLF, cuts,
flipped bytes). Every response must end in a body or in HTTPError with a LuatOS code, never in
another exception or a hang; an undamaged 200 must give exactly its body.

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
        elif damage == "length":
            delta = draw(st.sampled_from([-1, 1, 100, -(10**6), 10**20]))
            raw = head.replace(b"Server: hostile",
                               b"Content-Length: %d" % (len(body) + delta)) + payload
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


def check(batch: list[Resp], got: list[dict]) -> None:
    for resp, r in zip(batch, got, strict=True):
        where = f"response {resp.raw[:300]!r} -> {r}"
        assert "crash" not in r, where
        if "err" in r:
            assert r["err"] in ALLOWED, where
            assert not resp.valid, where
            continue
        assert r["n"] <= len(resp.raw), where
        if resp.valid:
            assert r["status"] == 200, where
            assert (r["n"], r["sha"]) == (len(resp.body), hashlib.sha256(resp.body).hexdigest()), \
                where


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
    ]
    got = run_batch(hostile, cases)
    check(cases, got)
    assert [r.get("err") for r in got[4:]] == [-2, -3, -2, -2, -5, -2], got
