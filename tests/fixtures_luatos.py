"""Fixtures for the LuatOS front-ends (libfota2, update, periodic checks).

Loaded as a plugin from tests/conftest.py (pytest_plugins). Device tests receive to_device():

luatos_server: {"base", "refused" (a base URL where connections are refused), "images":
    {name: {"size", "md5", "path", "version"}}} - a real HTTP server on 127.0.0.1 (the test
    server of tests/host/httpserver.py) with these extra paths:
        /t/TAG/REST...      REST as usual, recorded with tag TAG (for /_requests?tag=TAG)
        /fw/NAME            the core image NAME when the device's version is lower than the
                            image's (query core_version=N, else version=a.b.c...), else 404
                            with the IoT platform's {"code": 27} ("already latest")
        /after/KEY/N/REST   the first N requests with KEY get ?a_status= (default 404) with
                            ?a_body= (default the platform's {"code": 43}) and Retry-After
                            ?a_retry=S, or what the path ?a_path=PATH (URL-encoded)
                            answers; later ones get REST (which sees the same query)
luatos_vectors: {"dir": tests/vectors, "data": {file stem: content}}
cat1_board, wifi_board, mcu_board, anonymous_board: virtual boards (VBoard, as `vboard`) with
    the identities of tests/vectors/boards.json (core image labelled with core_version).
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

TESTS = Path(__file__).resolve().parent
VECTORS = TESTS / "vectors"
sys.path.insert(0, str(TESTS / "host"))

import httpserver as hs  # noqa: E402  (tests/host is put on sys.path just above)

IMAGES = {"core-2.0.0": "2.0.0", "core-V2014": "V2014", "core-3.0.0": "3.0.0"}
IOT_WAIT = {"code": 43, "msg": "please wait"}
IOT_LATEST = hs.IOT_ANSWER


def _version_tuple(text: str) -> tuple[int, ...]:
    text = text[1:] if text[:1] in ("V", "v") else text
    return tuple(int(p) for p in text.split("."))


class LuatOSServer(hs.HTTPTestServer):
    """The HTTP test server plus the paths above."""

    def __init__(self) -> None:
        super().__init__()
        self.images: dict[str, dict] = {}
        self._counts: dict[str, int] = {}
        self._count_lock = threading.Lock()
        self.refused_port = hs.closed_port()

    def add_image(self, name: str, data: bytes, version: str) -> None:
        self.add_blob(name, data)
        self.images[name] = {
            "size": len(data),
            "md5": hashlib.md5(data).hexdigest(),
            "path": "/blob/" + name,
            "version": version,
        }

    def to_device(self) -> dict:
        d = super().to_device()
        d["images"] = self.images
        d["refused"] = f"http://127.0.0.1:{self.refused_port}"
        return d

    def _dispatch(self, conn, req):
        parts = req.path.strip("/").split("/")
        if parts[0] == "t" and len(parts) >= 3:
            req.query["tag"] = [parts[1]]
            req.path = "/" + "/".join(parts[2:])
        return super()._dispatch(conn, req)

    def _do_fw(self, conn, req, args):
        name = args[0]
        blob = self._blob(name)
        want = _version_tuple(self.images[name]["version"])
        try:
            if req.arg("core_version") is not None:
                have = (int(req.arg("core_version")),)
                want = want[:1]
            else:
                have = _version_tuple(req.arg("version", ""))[: len(want)]
        except ValueError:
            self._respond(conn, 400, json.dumps({"code": 3, "msg": "bad version"}).encode())
            return True
        if have < want:
            self._respond(conn, 200, blob.data, [("Content-Type", "application/octet-stream")])
        else:
            self._respond(
                conn, 404, json.dumps(IOT_LATEST).encode(), [("Content-Type", "application/json")]
            )
        return True

    def _do_after(self, conn, req, args):
        key, n = args[0], int(args[1])
        with self._count_lock:
            seen = self._counts.get(key, 0)
            self._counts[key] = seen + 1
        if seen < n and req.arg("a_path"):
            first = req.arg("a_path")
            sub = hs.Recorded(
                req.method,
                first,
                urlsplit(first).path,
                parse_qs(urlsplit(first).query),
                req.headers,
                req.body,
            )
            return super()._dispatch(conn, sub)
        if seen < n:
            headers = [("Content-Type", "application/json")]
            if req.arg("a_retry") is not None:
                headers.append(("Retry-After", req.arg("a_retry")))
            body = req.arg("a_body")
            data = body.encode() if body is not None else json.dumps(IOT_WAIT).encode()
            self._respond(conn, int(req.arg("a_status", "404")), data, headers)
            return True
        rest = "/" + "/".join(args[2:])
        req.path = rest
        return super()._dispatch(conn, req)


@pytest.fixture(scope="session")
def luatos_server():
    from mpfota_host import image

    srv = LuatOSServer()
    for name, version in IMAGES.items():
        srv.add_image(name, image.make_image(image.factory_body(version, 40_000), version), version)
    srv.add_blob("not-an-image", hs.random_bytes(30_000, 99))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def luatos_vectors():
    data = {p.stem: json.loads(p.read_text()) for p in sorted(VECTORS.glob("*.json"))}
    return {"dir": str(VECTORS), "data": data}


class _Board:
    def __init__(self, path: Path) -> None:
        self.path = path

    def to_device(self) -> str:
        return str(self.path)

    def device_env(self) -> dict[str, str]:
        return {"MPFOTA_FLASH": str(self.path)}


def _identity_board(tmp_path: Path, name: str) -> _Board:
    from mpfota_host import image, vboard

    ident = json.loads((VECTORS / "boards.json").read_text())[name]
    version = ident["core_version"]
    core = image.make_image(image.factory_body(version, 40_000), version)
    path = tmp_path / name
    vboard.init(
        path,
        slot_size=256 * 1024,
        fs_size=256 * 1024,
        core_image=core,
        identity={
            "imei": ident["imei"],
            "mac": ident["mac"],
            "uid": ident["uid"],
            "bsp": ident["bsp"],
        },
    )
    return _Board(path)


@pytest.fixture
def cat1_board(tmp_path):
    return _identity_board(tmp_path, "cat1")


@pytest.fixture
def wifi_board(tmp_path):
    return _identity_board(tmp_path, "wifi")


@pytest.fixture
def mcu_board(tmp_path):
    return _identity_board(tmp_path, "mcu")


@pytest.fixture
def anonymous_board(tmp_path):
    return _identity_board(tmp_path, "anonymous")
