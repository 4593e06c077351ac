"""A real MQTT broker (mosquitto) on 127.0.0.1 as a pytest fixture, for device and host tests.

Loaded as a plugin from tests/conftest.py (`pytest_plugins`). One broker per session, started
from a generated configuration (no persistence, ephemeral ports on 127.0.0.1) and stopped at
teardown. Three listeners:

  port       anonymous
  auth_port  password only: the username/password of the test device's Aliyun credentials,
             computed here with CPython's hmac (so a device that connects there has signed
             exactly as the platform expects)
  tls_port   anonymous, TLS with a test CA (`ca`, PEM) and a 127.0.0.1 / localhost certificate

A device test receives `to_device()`: {"host", "port", "auth_port", "tls_port", "ca",
"device": {"pk", "dn", "ds", "client_id", "username", "password", "timestamp"}}.
`aliyun_vectors` gives credential and HMAC cases computed with CPython, for the device side.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "host"))

import httpserver as hs  # noqa: E402

# The test device (any strings will do: the broker only checks username and password).
PK = "a1MpFotaPK"
DN = "vboard-01"
DS = "3f1c0d9e8b7a6c5d4e3f2a1b0c9d8e7f"
LINKSDK_TIMESTAMP = "2524608000000"


def aliyun_credentials(pk: str, dn: str, ds: str, client_id: str | None = None,
                       timestamp: str = LINKSDK_TIMESTAMP, tls: bool = False) -> dict:
    """The Aliyun MQTT login, computed independently of the device code (CPython hmac)."""
    cid = client_id if client_id is not None else f"{pk}.{dn}"
    content = f"clientId{cid}deviceName{dn}productKey{pk}timestamp{timestamp}"
    return {
        "client_id": f"{cid}|securemode={2 if tls else 3},signmethod=hmacsha256,"
                     f"timestamp={timestamp}|",
        "username": f"{dn}&{pk}",
        "password": hmac.new(ds.encode(), content.encode(), hashlib.sha256).hexdigest(),
    }


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class MQTTBroker:
    """mosquitto with the three listeners above, in `directory`."""

    def __init__(self, directory: Path) -> None:
        if shutil.which("mosquitto") is None or shutil.which("mosquitto_passwd") is None:
            raise RuntimeError("mosquitto is not installed (make setup installs it)")
        self.dir = directory
        self.pki = hs.make_pki()
        self.creds = aliyun_credentials(PK, DN, DS)
        self.proc: subprocess.Popen | None = None
        (directory / "server.crt").write_text(self.pki.server_cert)
        (directory / "server.key").write_text(self.pki.server_key)
        passwd = directory / "passwd"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), self.creds["username"],
                        self.creds["password"]], check=True, capture_output=True, timeout=30)
        os.chmod(passwd, 0o600)
        for _ in range(3):  # a port taken between free_port() and bind: try new ports
            self.port, self.auth_port, self.tls_port = free_port(), free_port(), free_port()
            if self._start():
                return
        raise RuntimeError(f"mosquitto did not start: {self.log_text()}")

    def _config(self) -> str:
        d = self.dir
        return "\n".join([
            "per_listener_settings true",
            "persistence false",
            f"user {getpass.getuser()}",
            f"log_dest file {d / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"listener {self.auth_port} 127.0.0.1",
            "allow_anonymous false",
            f"password_file {d / 'passwd'}",
            f"listener {self.tls_port} 127.0.0.1",
            "allow_anonymous true",
            f"certfile {d / 'server.crt'}",
            f"keyfile {d / 'server.key'}",
            "",
        ])

    def _start(self) -> bool:
        conf = self.dir / "mosquitto.conf"
        conf.write_text(self._config())
        self.proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if all(_accepts(p) for p in (self.port, self.auth_port, self.tls_port)):
                return True
            time.sleep(0.05)
        self.stop()
        return False

    def log_text(self) -> str:
        try:
            return (self.dir / "mosquitto.log").read_text()[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def device(self) -> dict:
        return {"pk": PK, "dn": DN, "ds": DS, "timestamp": LINKSDK_TIMESTAMP, **self.creds}

    def to_device(self) -> dict:
        return {"host": "127.0.0.1", "port": self.port, "auth_port": self.auth_port,
                "tls_port": self.tls_port, "ca": self.pki.ca, "device": self.device()}


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory):
    broker = MQTTBroker(tmp_path_factory.mktemp("mosquitto"))
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def aliyun_vectors():
    """Credential and HMAC cases computed with CPython, to check the device's own code."""
    creds = []
    for pk, dn, ds, cid, ts, tls in [
        (PK, DN, DS, None, LINKSDK_TIMESTAMP, False),
        ("testProduct", "testDevice", "testSecret", None, "1700000000000", False),
        ("a1B2c3D4e5F", "dev_中文", "x" * 100, "mac-0242ac110002", "1", True),
    ]:
        c = aliyun_credentials(pk, dn, ds, cid, ts, tls)
        creds.append({"args": [pk, dn, ds, cid, ts, tls], **c})
    macs = []
    for key, msg, name in [
        (b"", b"", "sha256"),
        (b"key", b"The quick brown fox jumps over the lazy dog", "sha256"),
        (b"\x0b" * 20, b"Hi There", "sha256"),
        (bytes(range(64)), bytes(range(200)), "sha256"),  # key of exactly one block
        (bytes(range(131)), b"a longer key is hashed first" * 5, "sha256"),
        (b"k" * 65, b"x", "sha1"),
        (b"k" * 100, b"x", "md5"),
    ]:
        macs.append({"key": key.hex(), "msg": msg.hex(), "digest": name,
                     "mac": hmac.new(key, msg, name).hexdigest()})
    return {"credentials": creds, "hmac": macs}
