"""Deterministic core images for tests: a different body for each version."""

from __future__ import annotations

import hashlib

from mpfota_host import image


def core_body(version: str, size: int = 40_000) -> bytes:
    seed = hashlib.sha256(version.encode()).digest()
    out = bytearray()
    while len(out) < size:
        seed = hashlib.sha256(seed).digest()
        out += seed
    return bytes(out[:size])


def core_image(version: str, size: int = 40_000) -> bytes:
    """A unix-board core image (mpfota_host.image) labelled `version`."""
    return image.make_image(core_body(version, size), version)
