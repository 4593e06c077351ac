"""Fixtures for the ESP32 board's device tests (tests/device/test_esp32_board.py).

`esp32_board`: a virtual board whose slot 0 holds an ESP-IDF app image labelled 1.0.0 (the
device side runs boards/esp32 against the fakes in tests/fakes/esp32). `esp32_factory_board`:
the same flash seen through a partition table with a factory app and no OTA slots.
`esp32_images`: a directory of ESP-IDF app images, good and damaged, for the device to flash.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

SLOT_SIZE = 128 * 1024
FS_SIZE = 64 * 1024


class Esp32Board:
    """A virtual board directory; device side it is its path, and MPFOTA_FLASH is set."""

    def __init__(self, path: Path, env: dict[str, str] | None = None) -> None:
        self.path = path
        self.env = {"MPFOTA_FLASH": str(path), **(env or {})}

    def to_device(self) -> str:
        return str(self.path)

    def device_env(self) -> dict[str, str]:
        return dict(self.env)


def payload(seed: str, size: int) -> bytes:
    """Deterministic bytes standing in for an app's code and data."""
    out = bytearray()
    h = hashlib.sha256(seed.encode()).digest()
    while len(out) < size:
        h = hashlib.sha256(h).digest()
        out += h
    return bytes(out[:size])


def _make_board(path: Path, env: dict[str, str] | None = None) -> Esp32Board:
    from mpfota_host import esp32image, vboard

    vboard.init(path, slot_size=SLOT_SIZE, fs_size=FS_SIZE)  # slot 0: an MPFI image, replaced:
    app = esp32image.make_app_image(payload("core-1.0.0", 24_000), "1.0.0")
    vboard.program_slot(path, 0, app + b"\xff" * (SLOT_SIZE - len(app)))
    return Esp32Board(path, env)


@pytest.fixture
def esp32_board(tmp_path) -> Esp32Board:
    return _make_board(tmp_path / "esp32")


@pytest.fixture
def esp32_factory_board(tmp_path) -> Esp32Board:
    return _make_board(tmp_path / "esp32", {"MPFOTA_ESP32_TABLE": "factory"})


def _flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


def image_set() -> dict[str, bytes]:
    """name -> image bytes; names starting with "bad_" must be refused."""
    from mpfota_host import esp32image, image

    make = esp32image.make_app_image
    good = make(payload("app-2.0.0", 30_001), "2.0.0")
    nohash = make(payload("app-2.0.2", 9_000), "2.0.2", hash_appended=False)
    checksum_at = len(good) - esp32image.HASH_LEN - 1
    return {
        "good": good,
        "one_segment": make(payload("app-2.0.1", 5_000), "2.0.1", segments=1),
        "nohash": nohash,
        "noversion": make(payload("app-nover", 4_000), ""),
        "bad_flipped": _flip(good, 20_000),
        "bad_flipped_nohash": _flip(nohash, 5_000),
        "bad_magic": b"\xe8" + good[1:],
        "bad_segments": good[:1] + b"\x00" + good[2:],
        "bad_truncated": good[:-100],
        "bad_hash": _flip(good, len(good) - 1),
        "bad_checksum": _flip(good, checksum_at),
        "bad_chip": make(payload("app-s3", 8_000), "2.0.0", chip_id=esp32image.CHIP_ESP32S3),
        "bad_mpfi": image.make_image(payload("unix", 8_000), "2.0.0"),
    }


@pytest.fixture
def esp32_images(tmp_path) -> str:
    d = tmp_path / "esp32-images"
    d.mkdir()
    for name, data in image_set().items():
        (d / f"{name}.bin").write_bytes(data)
    return str(d)
