"""Soak of the reference server (mpfota_host.server.FotaServer): N simulated devices hold it for
a bounded time (the `mpfota serve-load` engine: check and full download, "already latest",
resume with Range + If-Range) with 0 errors, several rounds in a row on one server; and the
server process gives back every socket, file and thread it took (counted in /proc/self/fd and
threading). The device side of the soak is tests/device/test_soak.py. docs/reliability.md."""

from __future__ import annotations

import os
import threading
import time

import pytest
from mpfota_host.server import FotaServer
from mpfota_host.serverload import publish_load_release, run_load

DEVICES = int(os.environ.get("MPFOTA_SOAK_DEVICES") or 48)
SECONDS = float(os.environ.get("MPFOTA_SOAK_SECONDS") or 1.5)
ROUNDS = 3


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def settle(baseline_threads: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while threading.active_count() > baseline_threads and time.monotonic() < deadline:
        time.sleep(0.05)
    return threading.active_count()


@pytest.mark.slow
def test_server_holds_many_devices_with_no_error_and_no_leak(tmp_path):
    fds0, threads0 = open_fds(), threading.active_count()
    server = FotaServer(tmp_path / "data", daily_limit=0, log=lambda line: None).start()
    results = []
    try:
        package = publish_load_release(server, tmp_path, 64 * 1024)
        fds_started = open_fds()
        for _ in range(ROUNDS):  # the same server, round after round
            results.append(run_load(server, package, devices=DEVICES, seconds=SECONDS))
            settle(threads0 + 1)
        fds_rounds = open_fds()
    finally:
        server.stop()
    for r in results:
        print("\n".join(r.lines()))
    errors = [e for r in results for e in r.errors]
    assert errors == [], errors[:10]
    assert all(r.requests >= DEVICES * 3 for r in results), [r.requests for r in results]
    # between rounds the server holds no connection of a finished device ...
    assert fds_rounds <= fds_started + 2, (fds_started, fds_rounds)
    # ... and once stopped, nothing at all (a thread of another test's server may have ended
    # meanwhile, so fewer than before is fine: a leak is more)
    assert settle(threads0) <= threads0, threading.enumerate()
    assert open_fds() <= fds0 + 1, (fds0, open_fds())
