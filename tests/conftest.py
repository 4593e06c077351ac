"""Shared fixtures: the host tools on sys.path, the device runner importable, virtual boards."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS.parent / "host_tools"))

# Fixture modules in tests/fixtures_*.py (servers, brokers, boards, packages, patches).
pytest_plugins = [
    "fixtures_changing",
    "fixtures_delta",
    "fixtures_esp32",
    "fixtures_http",
    "fixtures_luatos",
    "fixtures_mqtt",
    "fixtures_package",
    "fixtures_server",
    "fixtures_triggers",
]

import pytest  # noqa: E402
from images import core_body  # noqa: E402


def pytest_terminal_summary(terminalreporter) -> None:
    """The power-cut sweep's one summary line (its figures are in build/reliability.txt),
    printed before pytest's own last line, on which `make test` ends."""
    sweep = sys.modules.get("sweep")
    for line in getattr(sweep, "SUMMARY", ()):
        terminalreporter.write_line(line)


class VBoard:
    """A virtual board directory (board.json + flash.bin), handed to device tests.

    Device side it is the path of the board (`MPFOTA_FLASH` is set, so `import board` finds it).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def to_device(self) -> str:
        return str(self.path)

    def device_env(self) -> dict[str, str]:
        return {"MPFOTA_FLASH": str(self.path)}

    def flash(self) -> bytes:
        return (self.path / "flash.bin").read_bytes()


@pytest.fixture
def make_vboard(tmp_path):
    """Factory: make_vboard(name, slot_size=..., fs_size=..., version="1.0.0") -> VBoard."""
    from mpfota_host import image, vboard

    def make(name: str = "board", slot_size: int = 256 * 1024, fs_size: int = 256 * 1024,
             version: str = "1.0.0") -> VBoard:
        path = tmp_path / name
        core = image.make_image(core_body(version), version)
        vboard.init(path, slot_size=slot_size, fs_size=fs_size, core_image=core)
        return VBoard(path)

    return make


@pytest.fixture
def vboard(make_vboard):
    """A fresh virtual board: two 256 KiB slots, core 1.0.0 in slot 0, 256 KiB littlefs."""
    return make_vboard()


@pytest.fixture
def big_vboard(make_vboard):
    """A virtual board with two 4 MiB slots, for tests that stream a multi-MB image."""
    return make_vboard(slot_size=4 << 20)


class UpdateServer:
    """The session HTTP test server, with core images for the default test board registered.

    Device side: http_server's dict plus "images": {name: {"size", "md5", "sha256", "path"}}.
    """

    IMAGES = {"core-2.0.0": ("2.0.0", 40_000), "core-3.0.0": ("3.0.0", 70_000),
              "core-huge": ("9.0.0", 300_000),
              "core-1.0.0": ("1.0.0", 40_000)}  # what the default test board runs

    def __init__(self, http_server) -> None:
        from mpfota_host import esp32image, image

        self.http = http_server
        self.images = {}
        for name, (version, size) in self.IMAGES.items():
            self.add(name, image.make_image(core_body(version, size), version), version)
        # The same version with another body: not the running image.
        self.add("core-1.0.0-rebuilt", image.make_image(core_body("1.0.0-rebuilt"), "1.0.0"),
                 "1.0.0")
        # A header whose version field is not text (its body and digest are right).
        bad = bytearray(image.make_image(core_body("2.0.1"), "2.0.1"))
        bad[12:15] = b"\xff\xfe\x80"
        self.add("core-version-not-text", bytes(bad), "2.0.1")
        # An ESP-IDF app image, for the ESP32 board (tests/fakes/esp32).
        self.add("esp32-2.0.0", esp32image.make_app_image(core_body("esp32", 30_000), "2.0.0"),
                 "2.0.0")
        # One whose app description's version is bytes that are no text (ESP-IDF boots it).
        self.add("esp32-version-not-text",
                 esp32image.make_app_image(core_body("esp32-b", 30_000), b"2.0.\xff\xfe"),
                 "2.0.??")

    def add(self, name: str, data: bytes, version: str) -> None:
        import hashlib

        self.http.add_blob(name, data)
        self.images[name] = {"size": len(data), "md5": hashlib.md5(data).hexdigest(),
                             "sha256": hashlib.sha256(data).hexdigest(),
                             "path": "/blob/" + name, "version": version}

    def to_device(self) -> dict:
        d = self.http.to_device()
        d["images"] = self.images
        return d


@pytest.fixture(scope="session")
def update_server(http_server):
    return UpdateServer(http_server)


@pytest.fixture(scope="session")
def tls_update_server(tls_server):
    """tls_server with the core image "core-2.0.0" (for the default test board) registered."""
    from mpfota_host import image

    tls_server.add_blob("core-2.0.0", image.make_image(core_body("2.0.0"), "2.0.0"))
    return tls_server
