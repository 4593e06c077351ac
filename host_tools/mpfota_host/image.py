"""Core images for the virtual (unix) board: `mpfota image make` and `mpfota image info`.

An image is a 64-byte header, then the body:

    offset  size  field
    0       4     magic b"MPFI"
    4       4     header size, u32 little-endian (64)
    8       4     body length, u32 little-endian
    12      20    version, ASCII, NUL-padded
    32      32    SHA-256 of the body

The board's bootloader boots a slot only when its header is well formed and the body matches
the digest (boards/unix/vpartition.py reads the same layout).
"""

from __future__ import annotations

import argparse
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .helptext import examples

MAGIC = b"MPFI"
HEADER_SIZE = 64
VERSION_SIZE = 20
_HEAD = struct.Struct("<4sII20s32s")
assert _HEAD.size == HEADER_SIZE


@dataclass(frozen=True)
class Header:
    version: str
    body_length: int
    sha256: bytes

    @property
    def total_length(self) -> int:
        return HEADER_SIZE + self.body_length


def check_version(version: str) -> bytes:
    """The version as header bytes; UserError when it cannot be stored."""
    if not version:
        raise UserError("the version is empty")
    if not version.isascii() or not version.isprintable():
        raise UserError(f"version {version!r}: only printable ASCII is allowed")
    raw = version.encode("ascii")
    if len(raw) > VERSION_SIZE:
        raise UserError(f"version {version!r} is longer than {VERSION_SIZE} characters")
    return raw


def make_image(body: bytes, version: str) -> bytes:
    """Header + body for `body`, labelled `version`."""
    raw = check_version(version)
    head = _HEAD.pack(MAGIC, HEADER_SIZE, len(body), raw, hashlib.sha256(body).digest())
    return head + bytes(body)


def parse_header(data: bytes) -> Header:
    """Read the header at the start of `data` (extra bytes after the image are allowed)."""
    if len(data) < HEADER_SIZE:
        raise UserError(f"{len(data)} bytes is too short for an image header ({HEADER_SIZE})")
    magic, hsize, body_len, raw_version, digest = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise UserError(f"not an mpfota core image (magic {magic!r}, expected {MAGIC!r})")
    if hsize != HEADER_SIZE:
        raise UserError(f"unsupported header size {hsize} (expected {HEADER_SIZE})")
    version = raw_version.rstrip(b"\0")
    try:
        text = version.decode("ascii")
    except UnicodeDecodeError:
        raise UserError("the version field is not ASCII") from None
    if not text or b"\0" in version:
        raise UserError("the version field is empty or malformed")
    return Header(text, body_len, digest)


def verify(data: bytes) -> Header:
    """Parse and check the body length and digest; UserError on any mismatch."""
    header = parse_header(data)
    if len(data) < header.total_length:
        raise UserError(
            f"image is truncated: header says {header.body_length} body bytes, "
            f"{len(data) - HEADER_SIZE} present"
        )
    body = data[HEADER_SIZE : header.total_length]
    if hashlib.sha256(body).digest() != header.sha256:
        raise UserError("the body does not match the SHA-256 in the header")
    return header


def factory_body(version: str, size: int = 8192) -> bytes:
    """A deterministic stand-in firmware body: a text banner, then pseudo-random bytes."""
    out = bytearray(f"mpfota unix core {version}\n".encode())
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{version}/{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None


def cmd_make(args: argparse.Namespace) -> int:
    body = _read(args.body)
    image = make_image(body, args.version)
    try:
        Path(args.output).write_bytes(image)
    except OSError as exc:
        raise UserError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(
        f"{args.output}: version {args.version}, body {len(body)} bytes, image {len(image)} bytes"
    )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    data = _read(args.image)
    try:
        header = parse_header(data)
    except UserError as exc:
        raise UserError(f"{args.image}: {exc}") from None
    print(f"file:     {args.image}")
    print(f"version:  {header.version}")
    print(f"body:     {header.body_length} bytes")
    print(f"sha256:   {header.sha256.hex()}")
    extra = len(data) - header.total_length
    try:
        verify(data)
    except UserError as exc:
        raise UserError(f"{args.image}: {exc}") from None
    print("verified: yes" + (f" ({extra} trailing bytes after the image)" if extra else ""))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "image", help="build or inspect a unix-board core image",
        **examples("mpfota image make --version 2.0.0 body.bin -o core.img",
                   "mpfota image info core.img"),
    )
    sub = parser.add_subparsers(dest="image_command", metavar="ACTION", required=True)

    make = sub.add_parser("make", help="wrap a body file into a core image",
                          **examples("mpfota image make --version 2.0.0 body.bin -o core.img"))
    make.add_argument("body", metavar="BODY", help="file holding the image body")
    make.add_argument("--version", required=True, help=f"version label (ASCII, <= {VERSION_SIZE})")
    make.add_argument("-o", "--output", required=True, metavar="IMG", help="image file to write")
    make.set_defaults(func=cmd_make)

    info = sub.add_parser("info", help="print and verify an image's header",
                          **examples("mpfota image info core.img"))
    info.add_argument("image", metavar="IMG")
    info.set_defaults(func=cmd_info)
