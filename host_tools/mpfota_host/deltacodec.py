"""Host-side pieces both delta formats share: varints, zigzag, bsdiff's control triples, raw
DEFLATE both ways (zlib standing in for the device's `deflate` module), and the error a failed
generation raises. Format 1 is `delta`, format 2 `deltastream`, the matching `deltamatch`.
"""

from __future__ import annotations

import zlib

from .errors import UserError


class GenerationError(UserError):
    """The patch could not be made (empty image, out of memory, its own check failed): exit
    status 1, where bad command-line usage stays 2."""

    exit_status = 1


def put_varint(value: int, out: bytearray) -> None:
    if value < 0:
        raise ValueError("varints are unsigned")
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def zigzag(value: int) -> int:
    return value << 1 if value >= 0 else ((-value) << 1) - 1


def bsdiff_triples(old: bytes, new: bytes) -> list[tuple[int, int, int]]:
    """bsdiff's control triples (x diff bytes, y extra bytes, z seek)."""
    try:
        import bsdiff4.core
    except ImportError:
        raise UserError("the bsdiff4 package is missing: run `make setup`") from None
    ctrl, _, _ = bsdiff4.core.diff(bytes(old), bytes(new))
    dec = bsdiff4.core.decode_int64
    return [
        (dec(ctrl[i : i + 8]), dec(ctrl[i + 8 : i + 16]), dec(ctrl[i + 16 : i + 24]))
        for i in range(0, len(ctrl), 24)
    ]


def deflate_raw(data: bytes, wbits: int) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, -wbits, 9)
    return comp.compress(data) + comp.flush()


class Inflate:
    """A raw-DEFLATE stream over `data` with readinto(), like MicroPython's deflate.DeflateIO."""

    def __init__(self, data: bytes, wbits: int) -> None:
        self._d = zlib.decompressobj(-wbits)
        self._in = bytes(data)
        self._out = b""

    def readinto(self, buf) -> int:
        want = len(buf)
        while len(self._out) < want and not self._d.eof:
            # Input held back when the last call stopped at max_length goes in first. With no
            # input left, zlib may still hold decoded bytes (a long match cut by max_length):
            # an empty call drains them; only when that yields nothing is the stream cut.
            src = self._d.unconsumed_tail or self._in
            self._in = b""
            got = self._d.decompress(src, want - len(self._out))
            if not got and not src:
                raise EOFError("raw DEFLATE stream cut short")
            self._out += got
        n = min(want, len(self._out))
        buf[:n] = self._out[:n]
        self._out = self._out[n:]
        return n
