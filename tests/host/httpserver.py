"""A real HTTP/1.1 test server for the device HTTP client (CPython, threads, raw sockets).

It listens on 127.0.0.1 (an ephemeral port), plain or TLS, answers each connection on its own
daemon thread and closes it after one response. Raw sockets rather than http.server, because
many behaviours are deliberately broken HTTP. Behaviours are chosen by the path, so a device
test can compose them from the URL alone:

    /blob/NAME            a registered blob; ?te=length|chunked|close, &chunk=N (chunk size),
                          &ext=1 (chunk extensions), &trailer=1; Range "bytes=a-" / "bytes=a-b"
                          and If-Range (ETag or Last-Modified) honoured; HEAD too;
                          &shift=N answers a Range with a Content-Range N bytes off (broken)
    /echo                 200, JSON of the request: method, target, headers, body
    /redirect?to=LOC&code=302           one redirect to LOC, as given (relative is fine)
    /hop/N?style=abs|path|rel|dotdot|scheme&code=302&to=PATH
                          N redirects (hop N -> N-1 ... -> 0), then /hop/0 serves PATH
    /loop/a, /loop/b      redirect to each other; /loop/self redirects to itself
    /status/CODE?body=TEXT&retry=S&len=N  that status with a JSON body (default: a LuatOS IoT
                          platform answer), Retry-After when retry is given, or N bytes of "x"
    /truncate/NAME?at=N&te=length|chunked&rst=1   announces the blob, sends N bytes, closes
                          (rst=1: reset instead of FIN)
    /overlong/NAME?extra=N   Content-Length of the blob, then the blob and N more bytes
    /empty?te=length|chunked|close      200 with an empty body
    /interim              "100 Continue" before the real answer
    /garbage?kind=text|http2|short|binary   a broken status line
    /endless-headers      header lines until the client gives up (bounded)
    /long-header?len=N, /long-status?len=N  one line of about N bytes
    /bad-chunk?kind=size|crlf|huge      a malformed chunked body
    /trickle?n=N&ms=M&phase=body|head   N body bytes (or the head), one byte every M ms
    /silent?ms=M&after=request|head     says nothing for M ms (after the head: mid-body)
    /close-early          reads the request and closes without answering
    /_requests?tag=T      JSON of the recorded requests whose query has tag=T

Every request (method, target, path, query, headers, body) is recorded in `.requests`.
Every loop is bounded, and `stop()` ends all of them.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"
IOT_ANSWER = {"code": 27, "msg": "\u5df2\u662f\u6700\u65b0\u7248\u672c"}  # "already latest"
MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024


@dataclass
class Recorded:
    method: str
    target: str
    path: str
    query: dict
    headers: list
    body: bytes = b""

    def header(self, name: str):
        """The value of the first header called name (any case), or None."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def arg(self, name: str, default=None):
        vals = self.query.get(name)
        return vals[0] if vals else default

    def to_json(self) -> dict:
        return {
            "method": self.method,
            "target": self.target,
            "headers": self.headers,
            "body": self.body.decode("latin-1"),
        }


@dataclass
class Blob:
    name: str
    data: bytes
    md5: str = field(init=False)
    etag: str = field(init=False)

    def __post_init__(self):
        self.md5 = hashlib.md5(self.data).hexdigest()
        self.etag = '"%s"' % self.md5[:16]

    def to_device(self) -> dict:
        return {
            "size": len(self.data),
            "md5": self.md5,
            "etag": self.etag,
            "last_modified": LAST_MODIFIED,
        }


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


class _Abort(Exception):
    """End this connection now (the peer went away or the server is stopping)."""


class HTTPTestServer:
    def __init__(self, tls: ssl.SSLContext | None = None):
        self.tls = tls
        self.blobs: dict[str, Blob] = {}
        self.requests: list[Recorded] = []
        self.errors: list[str] = []  # server-side failures, for debugging a test
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.scheme = "https" if tls else "http"
        self.base = "%s://127.0.0.1:%d" % (self.scheme, self.port)

    # ------------------------------------------------------------------ control

    def add_blob(self, name: str, data: bytes) -> Blob:
        blob = Blob(name, data)
        self.blobs[name] = blob
        return blob

    def start(self) -> "HTTPTestServer":
        self._sock.listen(32)
        self._sock.settimeout(0.2)
        t = threading.Thread(target=self._accept_loop, name="httpserver-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in list(self._threads):
            t.join(timeout=5)
        self._sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def requests_tagged(self, tag: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.arg("tag") == tag]

    def to_device(self) -> dict:
        return {
            "base": self.base,
            "port": self.port,
            "blobs": {name: b.to_device() for name, b in self.blobs.items()},
        }

    # --------------------------------------------------------------- connections

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                raw, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._connection, args=(raw,), daemon=True)
            with self._lock:
                self._threads = [x for x in self._threads if x.is_alive()]
                self._threads.append(t)
            t.start()

    def _connection(self, raw: socket.socket):
        raw.settimeout(10)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = raw
        graceful = True
        with self._lock:
            self._conns.add(raw)
        try:
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(raw, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    self.errors.append("TLS handshake: %s" % e)
                    return
            req = self._read_request(conn)
            if req is None:
                return
            with self._lock:
                self.requests.append(req)
            graceful = self._dispatch(conn, req) is not False
        except _Abort:
            graceful = False
        except (OSError, ValueError) as e:
            self.errors.append("%s: %s" % (type(e).__name__, e))
            graceful = False
        finally:
            with self._lock:
                self._conns.discard(raw)
            self._close(conn, graceful)

    def _close(self, conn, graceful: bool):
        try:
            if graceful and isinstance(conn, ssl.SSLSocket):
                # Send close_notify (a body framed by the close then ends cleanly) and close
                # at once, as web servers do, instead of waiting for the client's.
                conn.setblocking(False)
                conn.unwrap()
            elif graceful:
                conn.shutdown(socket.SHUT_WR)
        except (OSError, ValueError):
            pass
        conn.close()

    def _read_request(self, conn) -> Recorded | None:
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > MAX_HEAD:
                raise _Abort()
            try:
                chunk = conn.recv(4096)
            except socket.timeout:
                return None
            if not chunk:
                return None
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append([k.strip(), v.strip()])
        req = Recorded(method, target, "", {}, headers)
        length = int(req.header("content-length") or 0)
        if length > MAX_BODY:
            raise _Abort()
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                raise _Abort()
            rest += chunk
        req.body = rest[:length]
        parts = urlsplit(target)
        req.path = parts.path
        req.query = parse_qs(parts.query, keep_blank_values=True)
        return req

    # ------------------------------------------------------------------ helpers

    def _send(self, conn, data: bytes):
        if self._stop.is_set():
            raise _Abort()
        try:
            conn.sendall(data)
        except OSError:
            raise _Abort() from None

    def _sleep(self, ms: float):
        if self._stop.wait(ms / 1000):
            raise _Abort()

    def _respond(
        self,
        conn,
        status: int,
        body: bytes = b"",
        headers=(),
        reason="X",
        te="length",
        chunk=None,
        ext=False,
        trailer=False,
    ):
        head = "HTTP/1.1 %d %s\r\n" % (status, reason)
        for k, v in headers:
            head += "%s: %s\r\n" % (k, v)
        if te == "length":
            head += "Content-Length: %d\r\n" % len(body)
        elif te == "chunked":
            head += "Transfer-Encoding: chunked\r\n"
        head += "Connection: close\r\n\r\n"
        if te != "chunked":
            self._send(conn, head.encode("latin-1") + body)
            return
        self._send(conn, head.encode("latin-1"))
        size = chunk or 4096
        out = b""
        for i in range(0, len(body), size):
            piece = body[i : i + size]
            out += b"%x%s\r\n%s\r\n" % (len(piece), b';ext=1;q="a b"' if ext else b"", piece)
            if len(out) > 65536:
                self._send(conn, out)
                out = b""
        out += b"0\r\n"
        if trailer:
            out += b"X-Trailer: yes\r\nX-Other: 1\r\n"
        self._send(conn, out + b"\r\n")

    def _blob(self, name: str) -> Blob:
        if name not in self.blobs:
            raise KeyError(name)
        return self.blobs[name]

    def _location(self, req: Recorded, path: str) -> str:
        return "%s%s" % (self.base, path)

    # ---------------------------------------------------------------- behaviours

    def _dispatch(self, conn, req: Recorded):
        parts = req.path.strip("/").split("/")
        name = "_do_" + parts[0].replace("-", "_").lstrip("_")
        if parts[0] == "_requests":
            name = "_do_requests"
        handler = getattr(self, name, None)
        if handler is None:
            self._respond(conn, 404, b'{"error": "no such path"}', reason="Not Found")
            return True
        try:
            return handler(conn, req, parts[1:])
        except KeyError as e:
            self._respond(conn, 404, json.dumps({"error": "unknown %s" % e}).encode())
            return True

    def _do_blob(self, conn, req, args):
        blob = self._blob(args[0])
        data = blob.data
        headers = [
            ("ETag", blob.etag),
            ("Last-Modified", LAST_MODIFIED),
            ("Content-Type", "application/octet-stream"),
        ]
        status, reason = 200, "OK"
        rng = req.header("range")
        if_range = req.header("if-range")
        if rng and (if_range is None or if_range in (blob.etag, LAST_MODIFIED)):
            start, end = self._parse_range(rng, len(data))
            if start is None:
                self._respond(
                    conn,
                    416,
                    b"",
                    [("Content-Range", "bytes */%d" % len(data))],
                    reason="Range Not Satisfiable",
                )
                return True
            shift = int(req.arg("shift", "0"))
            headers.append(
                (
                    "Content-Range",
                    "bytes %d-%d/%d" % (start + shift, end + shift, len(data) + shift),
                )
            )
            data = data[start : end + 1]
            status, reason = 206, "Partial Content"
        if req.method == "HEAD":
            head = "HTTP/1.1 %d %s\r\n" % (status, reason)
            for k, v in headers:
                head += "%s: %s\r\n" % (k, v)
            head += "Content-Length: %d\r\nConnection: close\r\n\r\n" % len(data)
            self._send(conn, head.encode())
            return True
        self._respond(
            conn,
            status,
            data,
            headers,
            reason=reason,
            te=req.arg("te", "length"),
            chunk=int(req.arg("chunk", "4096")),
            ext=req.arg("ext") == "1",
            trailer=req.arg("trailer") == "1",
        )
        return True

    @staticmethod
    def _parse_range(value: str, size: int):
        unit, _, spec = value.partition("=")
        a, _, b = spec.strip().partition("-")
        if unit.strip() != "bytes" or not a.isdigit() or (b and not b.isdigit()):
            return None, None
        start = int(a)
        end = min(int(b), size - 1) if b else size - 1
        if start >= size or end < start:
            return None, None
        return start, end

    def _do_echo(self, conn, req, args):
        self._respond(
            conn, 200, json.dumps(req.to_json()).encode(), [("Content-Type", "application/json")]
        )
        return True

    def _do_requests(self, conn, req, args):
        tag = req.arg("tag")
        found = [r.to_json() for r in self.requests_tagged(tag) if r is not req]
        self._respond(conn, 200, json.dumps(found).encode(), [("Content-Type", "application/json")])
        return True

    def _do_redirect(self, conn, req, args):
        code = int(req.arg("code", "302"))
        self._respond(conn, code, b"moved", [("Location", req.arg("to", "/"))], reason="Moved")
        return True

    def _do_hop(self, conn, req, args):
        n = int(args[0])
        if n <= 0:
            target = req.arg("to", "/blob/small")
            sub = Recorded(
                req.method,
                target,
                urlsplit(target).path,
                parse_qs(urlsplit(target).query),
                req.headers,
                req.body,
            )
            return self._dispatch(conn, sub)
        query = urlsplit(req.target).query
        nxt = "%d?%s" % (n - 1, query)
        style = req.arg("style", "path")
        loc = {
            "abs": "%s/hop/%s" % (self.base, nxt),
            "scheme": "//127.0.0.1:%d/hop/%s" % (self.port, nxt),
            "path": "/hop/" + nxt,
            "rel": nxt,
            "dotdot": "../hop/./" + nxt,
        }[style]
        code = int(req.arg("code", "302"))
        self._respond(conn, code, b"", [("Location", loc)], reason="Moved")
        return True

    def _do_loop(self, conn, req, args):
        loc = {"a": "/loop/b", "b": "/loop/a"}.get(args[0], "/loop/" + args[0])
        self._respond(conn, 302, b"", [("Location", loc)], reason="Found")
        return True

    def _do_status(self, conn, req, args):
        code = int(args[0])
        headers = [("Content-Type", "application/json")]
        if req.arg("retry") is not None:
            headers.append(("Retry-After", req.arg("retry")))
        if req.arg("len") is not None:
            body = b"x" * int(req.arg("len"))
        elif req.arg("body") is not None:
            body = req.arg("body").encode()
        else:
            body = json.dumps(IOT_ANSWER).encode()
        self._respond(conn, code, body, headers, reason="Status")
        return True

    def _do_truncate(self, conn, req, args):
        blob = self._blob(args[0])
        at = int(req.arg("at", "100"))
        te = req.arg("te", "length")
        if te == "chunked":
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            body = b"%x\r\n" % len(blob.data) + blob.data[:at]
        else:
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(blob.data)
            body = blob.data[:at]
        self._send(conn, head + body)
        if req.arg("rst") == "1":
            self._sleep(50)  # let the data reach the client before the reset
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return False

    def _do_overlong(self, conn, req, args):
        blob = self._blob(args[0])
        extra = int(req.arg("extra", "1000"))
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(blob.data)
        self._send(conn, head + blob.data + b"X" * extra)
        return True

    def _do_empty(self, conn, req, args):
        self._respond(conn, 200, b"", te=req.arg("te", "length"))
        return True

    def _do_interim(self, conn, req, args):
        self._send(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
        self._respond(conn, 200, b"ok")
        return True

    def _do_garbage(self, conn, req, args):
        kind = req.arg("kind", "text")
        data = {
            "text": b"SPAM AND EGGS\r\n\r\n",
            "http2": b"HTTP/2 200\r\ncontent-length: 0\r\n\r\n",
            "short": b"HTTP/1.1 2\r\n\r\n",
            "binary": bytes(range(256)),
        }[kind]
        self._send(conn, data)
        return True

    def _do_endless_headers(self, conn, req, args):
        self._send(conn, b"HTTP/1.1 200 OK\r\n")
        for i in range(100000):
            self._send(conn, b"X-Filler-%d: more\r\n" % i)
        return False

    def _do_long_header(self, conn, req, args):
        n = int(req.arg("len", "8192"))
        self._send(
            conn, b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * n + b"\r\nContent-Length: 0\r\n\r\n"
        )
        return True

    def _do_long_status(self, conn, req, args):
        n = int(req.arg("len", "8192"))
        self._send(conn, b"HTTP/1.1 200 " + b"O" * n + b"\r\nContent-Length: 0\r\n\r\n")
        return True

    def _do_bad_chunk(self, conn, req, args):
        kind = req.arg("kind", "size")
        body = {
            "size": b"5\r\nhello\r\nzz\r\n",
            "crlf": b"5\r\nhelloXX3\r\nabc\r\n0\r\n\r\n",
            "huge": b"fffffffffffffffff\r\n",
        }[kind]
        self._send(conn, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        return True

    def _do_trickle(self, conn, req, args):
        n = int(req.arg("n", "20"))
        ms = float(req.arg("ms", "100"))
        body = b"t" * n
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n
        if req.arg("phase", "body") == "head":
            data, rest = head, body
        else:
            self._send(conn, head)
            data, rest = body, b""
        for i in range(len(data)):
            self._send(conn, data[i : i + 1])
            self._sleep(ms)
        self._send(conn, rest)
        return True

    def _do_silent(self, conn, req, args):
        ms = float(req.arg("ms", "5000"))
        if req.arg("after") == "head":
            self._send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        self._sleep(ms)
        return False

    def _do_close_early(self, conn, req, args):
        return False


class Blackhole:
    """A port whose accept queue is full: a client's SYN is dropped, its connect hangs."""

    def __init__(self):
        self._srv = socket.socket()
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(0)
        self.port = self._srv.getsockname()[1]
        self._fillers = []
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self._fillers.append(c)
        time.sleep(0.05)

    def close(self):
        for c in self._fillers:
            c.close()
        self._srv.close()


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connect is refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ------------------------------------------------------------------------- certificates


@dataclass
class PKI:
    """Test certificates (PEM text), made with `cryptography` at test time."""

    ca: str  # signs the server certificates
    other_ca: str  # signs nothing we serve
    client_ca: str  # signs the client certificate
    server_cert: str  # 127.0.0.1 and localhost
    server_key: str
    wrong_host_cert: str  # wrong.example only
    wrong_host_key: str
    client_cert: str
    client_key: str
    client_key_encrypted: str  # the same key, under CLIENT_KEY_PASSWORD
    ca_der: bytes


CLIENT_KEY_PASSWORD = b"secret"


def make_pki() -> PKI:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(subject, key, issuer, issuer_key, ca=False, sans=None, client=False):
        b = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            b = b.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
        else:
            usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def key():
        return ec.generate_private_key(ec.SECP256R1())

    def pem(c):
        return c.public_bytes(serialization.Encoding.PEM).decode()

    def key_pem(k, password=None):
        enc = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return k.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc
        ).decode()

    ca_key, other_key, client_ca_key = key(), key(), key()
    ca = cert("mpfota test CA", ca_key, "mpfota test CA", ca_key, ca=True)
    other = cert("mpfota other CA", other_key, "mpfota other CA", other_key, ca=True)
    client_ca = cert("mpfota client CA", client_ca_key, "mpfota client CA", client_ca_key, ca=True)
    server_key, wrong_key, client_key = key(), key(), key()
    server = cert(
        "127.0.0.1",
        server_key,
        "mpfota test CA",
        ca_key,
        sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    wrong = cert(
        "wrong.example", wrong_key, "mpfota test CA", ca_key, sans=[x509.DNSName("wrong.example")]
    )
    client = cert("mpfota device", client_key, "mpfota client CA", client_ca_key, client=True)
    return PKI(
        ca=pem(ca),
        other_ca=pem(other),
        client_ca=pem(client_ca),
        server_cert=pem(server),
        server_key=key_pem(server_key),
        wrong_host_cert=pem(wrong),
        wrong_host_key=key_pem(wrong_key),
        client_cert=pem(client),
        client_key=key_pem(client_key),
        client_key_encrypted=key_pem(client_key, CLIENT_KEY_PASSWORD),
        ca_der=ca.public_bytes(serialization.Encoding.DER),
    )


def server_context(
    pki: PKI, directory, wrong_host=False, require_client_cert=False
) -> ssl.SSLContext:
    """A TLS server context: the server (or wrong-host) certificate, optionally demanding a
    client certificate signed by the client CA."""
    from pathlib import Path

    d = Path(directory)
    tag = "wrong" if wrong_host else "server"
    certfile, keyfile = d / ("%s.crt" % tag), d / ("%s.key" % tag)
    certfile.write_text(pki.wrong_host_cert if wrong_host else pki.server_cert)
    keyfile.write_text(pki.wrong_host_key if wrong_host else pki.server_key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(certfile), str(keyfile))
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=pki.client_ca)
    return ctx
