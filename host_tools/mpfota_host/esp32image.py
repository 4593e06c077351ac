"""Minimal but valid ESP-IDF application images, for testing the ESP32 board on the host.

The layout follows ESP-IDF's app image format (esp_app_format.h / esp_image_format.c):

    offset  size  field
    0       24    image header: magic 0xE9, segment count, SPI mode, SPI speed/size,
                  entry address, WP pin, SPI pin drive, chip id, min chip rev,
                  min/max chip rev (full), 4 reserved bytes, hash_appended
    24      8     segment header: load address, data length (a multiple of 4)
    32      n     segment data; the first segment starts with esp_app_desc_t (256 bytes,
                  magic 0xABCD5432, version[32] at offset 16 of the descriptor)
    ...           further segments, each an 8-byte header and its data
    ...           zero padding and a checksum byte, so that the image length is a multiple
                  of 16; checksum = 0xEF XOR every byte of every segment's data
    ...           32-byte SHA-256 of everything before it (when hash_appended = 1)

`make_app_image` builds one; `parse_app_image` checks one the way the bootloader does (used by
the tests to check the builder, and handy for inspecting an image by hand).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

IMAGE_MAGIC = 0xE9
APP_DESC_MAGIC = 0xABCD5432
CHECKSUM_SEED = 0xEF
MAX_SEGMENTS = 16
HASH_LEN = 32

CHIP_ESP32 = 0x0000  # esp_chip_id_t; CONFIG_IDF_FIRMWARE_CHIP_ID of MicroPython's ESP32 builds
CHIP_ESP32S3 = 0x0009

# The ESP32's flash-mapped data (DROM) and code (IROM) windows. A mapped segment must sit at
# the same offset within a 64 KiB MMU page in flash as its load address does in memory
# (esp_image_format.c checks it; app partitions start on a 64 KiB boundary).
DROM_BASE, DROM_END = 0x3F400000, 0x3F800000
IROM_BASE, IROM_END = 0x400D0000, 0x40400000
MMU_PAGE = 0x10000

_HEADER = struct.Struct("<BBBBIB3sHBHH4sB")
_SEGMENT = struct.Struct("<II")
_APP_DESC = struct.Struct("<III I32s32s16s16s32s32sHHB3s72s")
assert _HEADER.size == 24
assert _SEGMENT.size == 8
assert _APP_DESC.size == 256

VERSION_OFFSET = _HEADER.size + _SEGMENT.size + 16  # where esp_app_desc_t.version lands


def _c_string(text: str | bytes, size: int, what: str) -> bytes:
    raw = text if isinstance(text, bytes) else text.encode()  # bytes: as they are (a test's)
    if len(raw) >= size:
        raise ValueError(f"{what} {text!r} does not fit {size - 1} bytes")
    return raw


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def app_desc(version: str | bytes, project: str = "mpfota-test", idf_ver: str = "v5.2.2",
             elf_sha256: bytes = b"\0" * 32) -> bytes:
    """An esp_app_desc_t (256 bytes)."""
    return _APP_DESC.pack(
        APP_DESC_MAGIC, 0, 0, 0,
        _c_string(version, 32, "version"), _c_string(project, 32, "project name"),
        b"00:00:00", b"Jan  1 2026", _c_string(idf_ver, 32, "IDF version"), elf_sha256,
        0, 0xFFFF, 16, b"\0" * 3, b"\0" * 72,
    )


def make_app_image(payload: bytes, version: str | bytes, *, segments: int = 2,
                   chip_id: int = CHIP_ESP32, hash_appended: bool = True) -> bytes:
    """An ESP32 app image holding `payload`, whose app description carries `version`.

    The first segment (DROM) is the app description followed by the first part of the payload;
    with `segments=2` the rest of the payload goes in an IROM segment.
    """
    if segments not in (1, 2):
        raise ValueError("segments must be 1 or 2")
    payload = bytes(payload)
    desc = app_desc(version, elf_sha256=hashlib.sha256(payload).digest())
    if segments == 1:
        parts = [(DROM_BASE, desc + payload)]
    else:
        half = len(payload) // 2
        parts = [(DROM_BASE, desc + payload[:half]), (IROM_BASE, payload[half:])]
    out = bytearray(_HEADER.size)
    checksum = CHECKSUM_SEED
    for base, data in parts:
        data = _pad4(data)
        addr = base + (len(out) + _SEGMENT.size) % MMU_PAGE
        out += _SEGMENT.pack(addr, len(data)) + data
        for b in data:
            checksum ^= b
    out[:_HEADER.size] = _HEADER.pack(  # entry point: the start of the last segment
        IMAGE_MAGIC, len(parts), 2, 0x20, addr, 0xEE, b"\0\0\0", chip_id, 0, 0, 399,
        b"\0" * 4, 1 if hash_appended else 0,
    )
    out += b"\0" * (-(len(out) + 1) % 16)
    out.append(checksum)
    if hash_appended:
        out += hashlib.sha256(out).digest()
    return bytes(out)


@dataclass(frozen=True)
class AppImage:
    length: int  # bytes the image occupies, appended hash included
    chip_id: int
    segments: tuple[tuple[int, int], ...]  # (load address, data length)
    hash_appended: bool
    version: str | None  # from esp_app_desc_t, None when the first segment has none


def parse_app_image(data: bytes) -> AppImage:
    """Check an app image as ESP-IDF's esp_image_verify does (format, checksum, hash).

    Raises ValueError naming the first problem. Bytes after the image are ignored.
    """
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise ValueError("too short for an image header")
    fields = _HEADER.unpack_from(data)
    magic, count, chip_id, hash_flag = fields[0], fields[1], fields[7], fields[12]
    if magic != IMAGE_MAGIC:
        raise ValueError(f"bad magic 0x{magic:02x}")
    if not 1 <= count <= MAX_SEGMENTS:
        raise ValueError(f"bad segment count {count}")
    pos = _HEADER.size
    checksum = CHECKSUM_SEED
    segs = []
    version = None
    for i in range(count):
        if pos + _SEGMENT.size > len(data):
            raise ValueError(f"segment {i} header is truncated")
        addr, length = _SEGMENT.unpack_from(data, pos)
        pos += _SEGMENT.size
        if length % 4:
            raise ValueError(f"segment {i} length {length} is not a multiple of 4")
        if pos + length > len(data):
            raise ValueError(f"segment {i} data is truncated")
        if (DROM_BASE <= addr < DROM_END or IROM_BASE <= addr < IROM_END) and (
                pos % MMU_PAGE != addr % MMU_PAGE):
            raise ValueError(f"segment {i} at 0x{addr:08x} is not aligned with its flash offset")
        seg = data[pos:pos + length]
        for b in seg:
            checksum ^= b
        if i == 0 and length >= _APP_DESC.size:
            desc = _APP_DESC.unpack_from(seg)
            if desc[0] == APP_DESC_MAGIC:
                version = desc[4].split(b"\0")[0].decode()
        segs.append((addr, length))
        pos += length
    end = (pos + 1 + 15) & ~15
    if end > len(data):
        raise ValueError("checksum block is truncated")
    if data[end - 1] != checksum:
        raise ValueError(f"checksum 0x{data[end - 1]:02x} != computed 0x{checksum:02x}")
    if hash_flag:
        if end + HASH_LEN > len(data):
            raise ValueError("appended SHA-256 is truncated")
        if hashlib.sha256(data[:end]).digest() != data[end:end + HASH_LEN]:
            raise ValueError("appended SHA-256 does not match")
        end += HASH_LEN
    return AppImage(end, chip_id, tuple(segs), bool(hash_flag), version)
