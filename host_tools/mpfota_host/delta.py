"""`mpfota delta OLD NEW -o PATCH`: a differential core update (format: docs/delta.md).

The patch rebuilds NEW from OLD, where both are whole slot images: what the running slot holds
and what the spare slot must hold (unix-board core images with their 64-byte header, or raw
ESP32 app binaries). Matching is bsdiff's (the `bsdiff4` package); the patch re-encodes its
control triples and diff/extra bytes as four raw-DEFLATE streams that MicroPython's built-in
`deflate` module can read, each with the smallest window that costs under 1 % of its size.
Every patch is applied again here, with the device's own parser and apply loop
(device/mpfota/deltafmt.py under CPython), and compared with NEW before it is written.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from . import deltamatch, image, paths
from .deltacodec import GenerationError, Inflate, deflate_raw, put_varint, zigzag
from .errors import UserError
from .progress import Progress

DEFAULT_MAX_WBITS = 12
WINDOW_TOLERANCE = 0.01  # a smaller window is chosen while it costs less than 1 % more
FULL_IMAGE_SHARE = 0.9  # from this patch/new-image ratio on, `mpfota delta` suggests a full image
_NONZERO = re.compile(rb"[^\x00]+")


def fmt() -> ModuleType:
    """device/mpfota/deltafmt.py, the format shared with the device, loaded under CPython."""
    return paths.device_module("deltafmt")


# --- encoding --------------------------------------------------------------------------------


def encode_ctrl(triples: list[tuple[int, int, int]]) -> bytes:
    out = bytearray()
    for x, y, z in triples:
        put_varint(x, out)
        put_varint(y, out)
        put_varint(zigzag(z), out)
    return bytes(out)


def encode_runs(diff: bytes) -> tuple[bytes, bytes]:
    """(runs stream, nonzero diff bytes): where the diff is not zero, and what it is there."""
    runs = bytearray()
    nonzero = bytearray()
    pos = 0
    for m in _NONZERO.finditer(diff):
        zeros, n = m.start() - pos, m.end() - m.start()
        if n <= 3:
            put_varint(zeros << 2 | n, runs)
        else:
            put_varint(zeros << 2, runs)
            put_varint(n - 4, runs)
        nonzero += m.group()
        pos = m.end()
    return bytes(runs), bytes(nonzero)


def compress(data: bytes, max_wbits: int) -> tuple[int, bytes]:
    """(wbits, raw DEFLATE of data): the smallest window within WINDOW_TOLERANCE of the best."""
    f = fmt()
    tries = [(w, deflate_raw(data, w)) for w in range(f.MIN_WBITS, max_wbits + 1)]
    best = min(len(p) for _, p in tries)
    return next((w, p) for w, p in tries if len(p) <= best * (1 + WINDOW_TOLERANCE))


@dataclass
class Patch:
    data: bytes
    header: object  # deltafmt.Header
    raw_sizes: list[int]
    triples: int

    def summary(self) -> str:
        h = self.header
        parts = ", ".join(
            f"{name} {packed} B (w{wbits})"
            for name, (wbits, packed, _) in zip(fmt().STREAM_NAMES, h.streams, strict=True)
        )
        return (
            f"{len(self.data)} bytes = {100 * len(self.data) / h.to_size:.2f} % of the "
            f"{h.to_size}-byte new image; {self.triples} triples; {parts}"
        )


def raw_streams(old: bytes, new: bytes) -> tuple[list[bytes], int]:
    """The four streams before compression, [ctrl, runs, diff, extra], and the triple count."""
    triples, diff, extra = deltamatch.match(old, new)
    runs, nonzero = encode_runs(diff)
    return [encode_ctrl(triples), runs, nonzero, extra], len(triples)


def assemble(
    raws: list[bytes], triples: int, old: bytes, new: bytes, max_wbits: int = DEFAULT_MAX_WBITS
) -> bytes:
    """Header + compressed streams for the raw streams [ctrl, runs, diff, extra] (no check)."""
    f = fmt()
    streams = [compress(raw, max_wbits) for raw in raws]
    body = b"".join(p for _, p in streams)
    header = f.Header(
        len(old),
        hashlib.sha256(old).digest(),
        len(new),
        hashlib.sha256(new).digest(),
        triples,
        zlib.crc32(body),
        [(w, len(p), len(raw)) for (w, p), raw in zip(streams, raws, strict=True)],
    )
    return f.pack_header(header) + body


def reseal(data: bytes) -> bytes:
    """The patch with its header CRC and body CRC recomputed (for building damaged patches)."""
    f = fmt()
    out = bytearray(data)
    body_crc = zlib.crc32(out[f.HEADER_SIZE :]).to_bytes(4, "little")
    out[f.BODY_CRC_AT : f.BODY_CRC_AT + 4] = body_crc
    out[f.HEADER_SIZE - 4 : f.HEADER_SIZE] = zlib.crc32(out[: f.HEADER_SIZE - 4]).to_bytes(
        4, "little"
    )
    return bytes(out)


def make_patch(
    old: bytes, new: bytes, max_wbits: int = DEFAULT_MAX_WBITS, progress: Progress | None = None
) -> Patch:
    """The patch rebuilding `new` from `old`, checked by applying it."""
    f = fmt()
    if not old or not new:
        raise GenerationError("OLD and NEW must not be empty")
    if not f.MIN_WBITS <= max_wbits <= f.MAX_WBITS:
        raise UserError(f"--wbits must be in {f.MIN_WBITS}..{f.MAX_WBITS}")
    raws, triples = raw_streams(old, new)
    data = assemble(raws, triples, old, new, max_wbits)
    try:
        rebuilt = apply_patch(old, data, progress)
    except f.PatchError as exc:
        raise GenerationError(
            f"internal error: the patch fails its own check ({exc}); please report"
        )
    if rebuilt != new:
        raise GenerationError("internal error: the patch does not rebuild NEW (please report)")
    return Patch(data, f.parse_header(data), [len(r) for r in raws], triples)


# --- applying on the host (the device's apply loop, fed by zlib) ------------------------------


class SectorOut:
    """The slot writer's space()/advance() over a bytearray, one 4 KiB sector at a time."""

    def __init__(self, size: int, sector: int = 4096) -> None:
        self.buf = bytearray(size)
        self._mv = memoryview(self.buf)
        self.sector = sector
        self.written = 0

    def space(self) -> memoryview:
        end = min(self.written - self.written % self.sector + self.sector, len(self.buf))
        return self._mv[self.written : end]

    def advance(self, n: int) -> None:
        self.written += n
        if self.written > len(self.buf):
            raise ValueError("wrote past the end")


def apply_patch(
    old: bytes, data: bytes, progress: Progress | None = None, check_base: bool = True
) -> bytes:
    """Rebuild the new image from `old` and patch `data`; fmt().PatchError when it is bad.

    Performs the device's checks in the same order (header, size, body CRC, base digest,
    apply, result digest)."""
    f = fmt()
    h = f.parse_header(data)
    if len(data) != h.total_size:
        raise f.PatchError(f"patch is {len(data)} bytes, its header announces {h.total_size}")
    if zlib.crc32(data[f.HEADER_SIZE :]) != h.body_crc:
        raise f.PatchError("body CRC mismatch (corrupt patch)")
    if check_base and (
        len(old) < h.from_size or hashlib.sha256(old[: h.from_size]).digest() != h.from_sha256
    ):
        raise f.PatchError("made for another base image")
    readers = []
    for i, name in enumerate(f.STREAM_NAMES):
        wbits, packed, raw = h.streams[i]
        off = h.offset(i)
        readers.append(f.Reader(Inflate(data[off : off + packed], wbits), name, raw))
    out = SectorOut(h.to_size)
    mv_old = memoryview(old)

    def read_old(pos: int, mv: memoryview) -> None:
        mv[:] = mv_old[pos : pos + len(mv)]

    done = [0]

    def report(n: int, total: int) -> None:
        if progress is not None:
            progress.update(n - done[0])
        done[0] = n

    try:
        f.apply_streams(h, readers, read_old, out, report)
    except (zlib.error, EOFError) as exc:
        raise f.PatchError(f"corrupt stream data ({exc})") from None
    result = bytes(out.buf)
    if hashlib.sha256(result).digest() != h.to_sha256:
        raise f.PatchError("the result's sha256 does not match the header")
    return result


# --- command line ----------------------------------------------------------------------------


def read_slot_image(path: str) -> tuple[bytes, str]:
    """File contents and a description; a unix core image is verified first."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data:
        raise GenerationError(f"{path} is empty")
    if data[:4] == image.MAGIC:
        try:
            header = image.verify(data)
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from None
        if len(data) != header.total_length:
            raise UserError(f"{path}: {len(data) - header.total_length} bytes after the image")
        return data, f"core image {header.version}"
    return data, "raw binary"


def _generate(args: argparse.Namespace, old: bytes, new: bytes):
    """The patch in the format args.format asks for (checked by applying it)."""
    if args.format == 2:
        from . import deltastream

        wbits = deltastream.DEFAULT_WBITS if args.wbits is None else args.wbits
        return deltastream.make_stream_patch(old, new, args.unit_bytes, wbits)
    progress = Progress("delta: checking", len(new))
    try:
        wbits = DEFAULT_MAX_WBITS if args.wbits is None else args.wbits
        return make_patch(old, new, wbits, progress)
    finally:
        progress.close()


def cmd_delta(args: argparse.Namespace) -> int:
    old, old_kind = read_slot_image(args.old)
    new, new_kind = read_slot_image(args.new)
    if (old_kind == "raw binary") != (new_kind == "raw binary"):
        raise UserError(
            f"OLD is a {old_kind} but NEW is a {new_kind}: give two core images or two raw "
            "binaries (the patch maps one slot's content to the other's)"
        )
    print(f"OLD {args.old}: {old_kind}, {len(old)} bytes", file=sys.stderr)
    print(f"NEW {args.new}: {new_kind}, {len(new)} bytes", file=sys.stderr)
    print("delta: matching (bsdiff) and compressing ...", file=sys.stderr, flush=True)
    try:
        patch = _generate(args, old, new)
    except MemoryError:
        raise GenerationError(
            f"not enough memory to match images of {len(old)} and {len(new)} bytes (bsdiff "
            "needs about 17 times the size of OLD)"
        ) from None
    try:
        Path(args.output).write_bytes(patch.data)
    except OSError as exc:
        raise UserError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"{args.output}: {patch.summary()}")
    if len(patch.data) >= FULL_IMAGE_SHARE * len(new):
        print(
            f"warning: the patch is {100 * len(patch.data) / len(new):.0f} % of the new image; "
            "a full image update costs about the same and needs no matching base",
            file=sys.stderr,
        )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "delta",
        help="make a differential core update (patch) from OLD to NEW",
        description=__doc__,
        epilog="examples:\n  mpfota delta core-1.0.0.img core-1.1.0.img -o 1.0.0-1.1.0.patch\n"
        "  mpfota delta core-1.0.0.img core-1.1.0.img -o 1.0.0-1.1.0.patch --format 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("old", metavar="OLD", help="the image the board runs now")
    p.add_argument("new", metavar="NEW", help="the image to update to")
    p.add_argument("-o", "--output", required=True, metavar="PATCH", help="patch file to write")
    p.add_argument(
        "--wbits",
        type=int,
        default=None,
        metavar="N",
        help=f"largest DEFLATE window, 2**N bytes on the device (9..15; default "
        f"{DEFAULT_MAX_WBITS} per stream for format 1, 10 for format 2)",
    )
    p.add_argument(
        "--format",
        type=int,
        choices=(1, 2),
        default=1,
        help="1: four streams, stored on the board before it is applied; 2: units applied as "
        "they arrive, resumable at sector boundaries (docs/delta.md)",
    )
    p.add_argument(
        "--unit-bytes",
        type=int,
        default=4096,
        metavar="N",
        help="format 2: largest unit of DEFLATE data, the buffer the board holds (default 4096)",
    )
    p.set_defaults(func=cmd_delta)
