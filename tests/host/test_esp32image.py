"""mpfota_host.esp32image builds ESP-IDF app images that follow the format, byte for byte."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mpfota_host import esp32image as e


def test_layout_of_a_two_segment_image():
    payload = bytes(range(256)) * 40 + b"xyz"
    img = e.make_app_image(payload, "1.2.3")
    magic, count, mode, speed_size, entry = struct.unpack_from("<BBBBI", img)
    assert (magic, count) == (0xE9, 2)
    assert img[23] == 1  # hash_appended
    assert struct.unpack_from("<H", img, 12)[0] == e.CHIP_ESP32
    # First segment: DROM, starting with esp_app_desc_t.
    addr0, len0 = struct.unpack_from("<II", img, 24)
    assert e.DROM_BASE <= addr0 < e.DROM_END
    assert struct.unpack_from("<I", img, 32)[0] == e.APP_DESC_MAGIC
    assert img[e.VERSION_OFFSET:e.VERSION_OFFSET + 32].rstrip(b"\0") == b"1.2.3"
    # Second segment: IROM, the entry point is in it.
    addr1, len1 = struct.unpack_from("<II", img, 32 + len0)
    assert e.IROM_BASE <= addr1 < e.IROM_END and entry == addr1
    assert len0 % 4 == 0 and len1 % 4 == 0
    seg0, seg1 = img[32:32 + len0], img[40 + len0:40 + len0 + len1]
    half = len(payload) // 2
    assert seg0[256:] == payload[:half] + b"\0" * (-(256 + half) % 4)
    assert seg1 == payload[half:] + b"\0" * (-(len(payload) - half) % 4)
    data = seg0 + seg1
    # Checksum byte ends a 16-byte block, then the SHA-256 of everything before it.
    body_end = 40 + len0 + len1
    end = (body_end + 16) & ~15
    assert len(img) == end + 32
    checksum = 0xEF
    for b in data:
        checksum ^= b
    assert img[end - 1] == checksum
    assert img[body_end:end - 1] == b"\0" * (end - 1 - body_end)
    assert hashlib.sha256(img[:end]).digest() == img[end:]


def test_parse_reports_what_it_built():
    img = e.make_app_image(b"\x01" * 1000, "9.9.9-rc1")
    info = e.parse_app_image(img + b"\xff" * 100)  # bytes after the image are ignored
    assert info.length == len(img)
    assert info.version == "9.9.9-rc1"
    assert info.hash_appended and info.chip_id == e.CHIP_ESP32
    assert len(info.segments) == 2


def test_variants():
    one = e.parse_app_image(e.make_app_image(b"abc", "1", segments=1))
    assert len(one.segments) == 1 and one.version == "1"
    plain = e.make_app_image(b"abc", "2", hash_appended=False)
    info = e.parse_app_image(plain)
    assert not info.hash_appended and info.length == len(plain) and len(plain) % 16 == 0
    s3 = e.parse_app_image(e.make_app_image(b"abc", "3", chip_id=e.CHIP_ESP32S3))
    assert s3.chip_id == e.CHIP_ESP32S3
    assert e.parse_app_image(e.make_app_image(b"", "")).version == ""


def test_version_must_fit_the_descriptor():
    e.make_app_image(b"", "v" * 31)
    with pytest.raises(ValueError):
        e.make_app_image(b"", "v" * 32)
    with pytest.raises(ValueError):
        e.make_app_image(b"", "1", segments=3)


def _flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x80
    return bytes(out)


def _segment0(img: bytes, addr: int, length: int) -> bytes:
    return img[:24] + struct.pack("<II", addr, length) + img[32:]


@pytest.mark.parametrize("damage, message", [
    (lambda img: b"\xe8" + img[1:], "magic"),
    (lambda img: img[:1] + b"\0" + img[2:], "segment count"),
    (lambda img: img[:1] + b"\x11" + img[2:], "segment count"),
    (lambda img: _flip(img, 600), "checksum"),
    (lambda img: _flip(img, len(img) - 33), "checksum"),
    (lambda img: _flip(img, len(img) - 1), "SHA-256"),
    (lambda img: img[:-1], "truncated"),
    (lambda img: img[:30], "truncated"),
    (lambda img: _segment0(img, e.DROM_BASE + 0x20, 0x103), "multiple of 4"),
    (lambda img: _segment0(img, e.DROM_BASE, 0x100), "aligned"),
])
def test_parse_refuses_damage(damage, message):
    img = e.make_app_image(bytes(range(200)) * 5, "1.0.0")
    with pytest.raises(ValueError, match=message):
        e.parse_app_image(damage(img))


@settings(max_examples=60, deadline=None)
@given(payload=st.binary(max_size=3000), version=st.text("0123456789.abc-", max_size=31),
       segments=st.sampled_from([1, 2]), hashed=st.booleans())
def test_any_payload_gives_a_valid_image(payload, version, segments, hashed):
    img = e.make_app_image(payload, version, segments=segments, hash_appended=hashed)
    info = e.parse_app_image(img)
    assert info.length == len(img)
    assert info.version == version
    assert len(info.segments) == segments
    # Every mapped segment sits at its load address's offset within a 64 KiB MMU page.
    pos = 24
    for addr, length in info.segments:
        assert (pos + 8) % e.MMU_PAGE == addr % e.MMU_PAGE
        pos += 8 + length
