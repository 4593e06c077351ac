"""`mpfota serve-load`: a bounded load test of the FOTA server (real sockets on 127.0.0.1).

N simulated devices (threads, CPython, one keep-alive connection each) run for a fixed time
against an in-process server on a free port. Each device, in a loop:

    1. checks with the old version and downloads the package (200, whole body, SHA-256
       compared; with a redirecting server, run_load(redirect=True) follows the 302);
    2. checks with the new version and expects the "already latest" answer (code 27);
    3. resumes: asks for the second half with Range + If-Range and expects 206.

Anything else is an error (a wrong status, a short or wrong body, a socket error). Prints:

    server.requests_per_s: X
    server.download_MB_per_s: X
    server.latency_ms.p50: X / .p99: X
    server.errors: 0

The server of a load test has no daily limit (each device downloads many times a minute).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .errors import UserError
from .server import FotaServer

PROJECT = "LOADTEST"
FIRMWARE = "LOAD_LuatOS-SoC_UNIX"
RELEASE = "001.000.001"  # the release's script VERSION
OLD, NEW = "2012.001.000", "2012.001.001"  # device versions before and after (libfota2 form)


@dataclass
class Stats:
    requests: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, n: int, ms: float) -> None:
        with self.lock:
            self.requests += 1
            self.bytes += n
            self.latencies.append(ms)

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)


class Device:
    """One simulated device: its own id and its own persistent connection."""

    def __init__(self, host: str, port: int, imei: str, path: str, sha256: str, size: int,
                 stats: Stats, redirect: bool) -> None:
        self.host, self.port = host, port
        self.imei = imei
        self.path = path
        self.sha256 = sha256
        self.size = size
        self.stats = stats
        self.redirect = redirect
        self.conn: http.client.HTTPConnection | None = None

    def url(self, version: str) -> str:
        return (f"{self.path}?imei={self.imei}&project_key={PROJECT}"
                f"&firmware_name={FIRMWARE}&version={version}")

    def get(self, target: str, headers: dict[str, str] | None = None,
            host: tuple[str, int] | None = None) -> tuple[int, dict[str, str], bytes]:
        t0 = time.monotonic()
        if host is not None:  # another server (the redirect target): a connection of its own
            conn = http.client.HTTPConnection(*host, timeout=30)
        else:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            conn = self.conn
        try:
            conn.request("GET", target, headers=headers or {})
            resp = conn.getresponse()
            body = resp.read()
            if resp.will_close or host is not None:
                conn.close()
                if host is None:
                    self.conn = None
        except Exception:
            conn.close()
            if host is None:
                self.conn = None
            raise
        self.stats.add(len(body), (time.monotonic() - t0) * 1000)
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body

    def round(self) -> None:
        status, headers, body = self.get(self.url(OLD))
        if self.redirect:
            if status != 302:
                raise AssertionError(f"check: expected 302, got {status}")
            loc = urlsplit(headers["location"])
            status, headers, body = self.get(loc.path, host=(loc.hostname, loc.port or 80))
        if status != 200 or hashlib.sha256(body).hexdigest() != self.sha256:
            raise AssertionError(f"download: status {status}, {len(body)} bytes, wrong content")
        status, _, body = self.get(self.url(NEW))
        if status < 300 or json.loads(body).get("code") != 27:
            raise AssertionError(f"latest: expected code 27, got {status} {body[:40]!r}")
        if not self.redirect:
            half = self.size // 2
            status, _, part = self.get(self.url(OLD), {"Range": f"bytes={half}-",
                                                       "If-Range": headers["etag"]})
            if status != 206 or len(part) != self.size - half:
                raise AssertionError(f"resume: expected 206, got {status} {len(part)} bytes")

    def run(self, deadline: float, max_rounds: int) -> None:
        for _ in range(max_rounds):
            if time.monotonic() >= deadline:
                break
            try:
                self.round()
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                self.stats.error(f"{self.imei}: {e.__class__.__name__}: {e}")
                if self.conn:
                    self.conn.close()
                    self.conn = None
        if self.conn:
            self.conn.close()


@dataclass
class LoadResult:
    devices: int
    seconds: float
    requests: int
    bytes: int
    errors: list[str]
    p50_ms: float
    p99_ms: float

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        return [f"server.devices: {self.devices}",
                f"server.requests: {self.requests}",
                f"server.requests_per_s: {self.requests_per_s:.1f}",
                f"server.download_MB_per_s: {self.bytes / self.seconds / 1e6:.1f}",
                f"server.latency_ms.p50: {self.p50_ms:.1f}",
                f"server.latency_ms.p99: {self.p99_ms:.1f}",
                f"server.errors: {len(self.errors)}"]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def run_load(server: FotaServer, package: bytes, devices: int, seconds: float,
             max_rounds: int = 10_000, redirect: bool = False) -> LoadResult:
    """Run `devices` simulated devices against a started server that holds the load-test
    release (publish_load_release) for `seconds` (and at most max_rounds rounds each)."""
    stats = Stats()
    sha = hashlib.sha256(package).hexdigest()
    host = urlsplit(server.base)
    t0 = time.monotonic()
    deadline = t0 + seconds
    threads = [threading.Thread(target=Device(host.hostname or "127.0.0.1", host.port or 80,
                                              f"86{i:013d}", "/upgrade", sha, len(package),
                                              stats, redirect).run,
                                args=(deadline, max_rounds), daemon=True)
               for i in range(devices)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    if any(t.is_alive() for t in threads):
        stats.error("a device did not finish within its time bound")
    elapsed = time.monotonic() - t0
    return LoadResult(devices, elapsed, stats.requests, stats.bytes, stats.errors,
                      _percentile(stats.latencies, 0.5), _percentile(stats.latencies, 0.99))


def publish_load_release(server: FotaServer, directory: Path, size: int) -> bytes:
    package = os.urandom(size)
    path = directory / "load-package.bin"
    path.write_bytes(package)
    server.store.publish(PROJECT, FIRMWARE, RELEASE, file=path)
    return package


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve-load", help="load-test the FOTA server with simulated devices",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  mpfota serve-load --devices 50 --seconds 5\n")
    p.add_argument("--devices", type=int, default=50, help="simulated devices (default 50)")
    p.add_argument("--seconds", type=float, default=5.0, help="duration (default 5)")
    p.add_argument("--size", type=int, default=256 * 1024,
                   help="package size in bytes (default 262144)")
    p.set_defaults(func=cmd_serve_load)


def cmd_serve_load(args: argparse.Namespace) -> int:
    if not 1 <= args.devices <= 2000:
        raise UserError("--devices: 1 to 2000")
    if not 0 < args.seconds <= 600:
        raise UserError("--seconds: more than 0, at most 600")
    if not 1 <= args.size <= 64 << 20:
        raise UserError("--size: 1 byte to 64 MiB")
    with (tempfile.TemporaryDirectory(prefix="mpfota-load-") as tmp,
          FotaServer(Path(tmp) / "data", daily_limit=0, log=lambda line: None) as srv):
        package = publish_load_release(srv, Path(tmp), args.size)
        result = run_load(srv, package, args.devices, args.seconds)
    for line in result.lines():
        print(line)
    for e in result.errors[:10]:
        print("  error:", e)
    return 1 if result.errors else 0
