"""HTTP(S) test servers as pytest fixtures, for device tests and host tests.

Loaded as a plugin from tests/conftest.py (`pytest_plugins = ["fixtures_http"]`). The servers
are real (tests/host/httpserver.py), on 127.0.0.1, started once per session and stopped at
teardown. A device test receives `to_device()`:

http_server: {"base": "http://127.0.0.1:PORT", "port", "blobs": {name: {"size", "md5", "etag",
    "last_modified"}}, "refused": a base URL where the connection is refused, "blackhole": a
    base URL where connect hangs}
tls_server: {"base": "https://127.0.0.1:PORT", "base_localhost", "wrong_host_base" (a
    certificate for wrong.example), "mtls_base" (demands a client certificate), "plain_base"
    (the http_server), "ca", "ca_der_hex", "other_ca", "client_cert", "client_key",
    "client_key_encrypted", "client_key_password", "blobs"}
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "host"))

import httpserver as hs  # noqa: E402

# Blobs served by every test server: sizes that do not divide the usual 4096-byte buffer.
BLOB_SIZES = {"small": 1000, "medium": 100_003, "big": 1024 * 1024 + 7}


def _add_blobs(server: hs.HTTPTestServer):
    for seed, (name, size) in enumerate(BLOB_SIZES.items()):
        server.add_blob(name, hs.random_bytes(size, seed))


class HTTPFixture:
    """The plain server plus a refused and a black-holed port."""

    def __init__(self):
        self.server = hs.HTTPTestServer()
        _add_blobs(self.server)
        self.blackhole = hs.Blackhole()
        self.refused_port = hs.closed_port()
        self.server.start()

    def __getattr__(self, name):  # requests, blobs, base, requests_tagged, add_blob ...
        return getattr(self.server, name)

    def to_device(self) -> dict:
        d = self.server.to_device()
        d["refused"] = "http://127.0.0.1:%d" % self.refused_port
        d["blackhole"] = "http://127.0.0.1:%d" % self.blackhole.port
        return d

    def close(self):
        self.server.stop()
        self.blackhole.close()


class TLSFixture:
    """Three TLS servers: good certificate, wrong-host certificate, client certificate demanded."""

    def __init__(self, directory: Path, plain: HTTPFixture):
        self.pki = pki = hs.make_pki()
        self.plain = plain
        self.server = hs.HTTPTestServer(hs.server_context(pki, directory))
        self.wrong_host = hs.HTTPTestServer(hs.server_context(pki, directory, wrong_host=True))
        self.mtls = hs.HTTPTestServer(hs.server_context(pki, directory, require_client_cert=True))
        for s in (self.server, self.wrong_host, self.mtls):
            _add_blobs(s)
            s.start()

    def __getattr__(self, name):
        return getattr(self.server, name)

    def to_device(self) -> dict:
        pki = self.pki
        return {
            "base": self.server.base,
            "base_localhost": "https://localhost:%d" % self.server.port,
            "wrong_host_base": self.wrong_host.base,
            "mtls_base": self.mtls.base,
            "plain_base": self.plain.base,
            "blobs": self.server.to_device()["blobs"],
            "ca": pki.ca,
            "ca_der_hex": pki.ca_der.hex(),
            "other_ca": pki.other_ca,
            "client_cert": pki.client_cert,
            "client_key": pki.client_key,
            "client_key_encrypted": pki.client_key_encrypted,
            "client_key_password": hs.CLIENT_KEY_PASSWORD.decode(),
        }

    def close(self):
        for s in (self.server, self.wrong_host, self.mtls):
            s.stop()


@pytest.fixture(scope="session")
def http_server():
    fx = HTTPFixture()
    yield fx
    fx.close()


@pytest.fixture(scope="session")
def tls_server(tmp_path_factory, http_server):
    fx = TLSFixture(tmp_path_factory.mktemp("tls"), http_server)
    yield fx
    fx.close()
