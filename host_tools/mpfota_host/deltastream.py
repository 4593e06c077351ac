"""Delta patches in format 2, applied by the board as they arrive (docs/delta.md, "Streamed
patches"): bsdiff's matching (as in format 1), re-encoded as units of one interleaved op
stream each, every unit its own raw DEFLATE stream no bigger than the device's unit buffer and,
where the data allows, ending on a sector boundary of the output (a resume point).

Every patch is applied again here, fed in network-sized pieces to the device's own Applier
(device/mpfota/deltastream.py under CPython), and compared with NEW before it is returned.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.util
import re
import zlib
from dataclasses import dataclass
from functools import cache
from types import ModuleType

from . import paths
from .delta import GenerationError
from .errors import UserError

DEFAULT_UNIT_MAX = 4096  # bytes of DEFLATE data the device holds for one unit
MIN_UNIT_MAX = 512
DEFAULT_WBITS = 10  # a 1 KiB window: 13 KiB less heap than 12 on the board for 0.3 % more
SECTOR = 4096
FEED = 1460  # the host check feeds the patch in pieces of one TCP segment
_NONZERO = re.compile(rb"[^\x00]+")


@cache
def fmt() -> ModuleType:
    """device/mpfota/deltastream.py, the format and applier shared with the device."""
    path = paths.DEVICE / "mpfota" / "deltastream.py"
    spec = importlib.util.spec_from_file_location("mpfota_deltastream", path)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot load the patch format from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _varint(value: int, out: bytearray) -> None:
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def _zigzag(value: int) -> int:
    return value << 1 if value >= 0 else ((-value) << 1) - 1


@dataclass
class Op:
    """One bsdiff triple placed in both images: x diff bytes at `old`, then y literal bytes."""

    out: int  # where it starts in NEW
    x: int
    y: int
    old: int  # where its diff bytes start in OLD
    diff: int  # offset of its diff bytes in bsdiff's diff string
    extra: int  # offset of its literal bytes in bsdiff's extra string


class RunCache:
    """Entries as the device reads them (device/mpfota/deltastream.py): a short run (1..4
    nonzero bytes) follows its entry at once and joins the cache of the last RUN_CACHE short
    runs, most recently used first; a run already there is named by its place (code 4..7)."""

    def __init__(self, out: bytearray) -> None:
        self.out = out
        self.runs: list[bytes] = []

    def entry(self, zeros: int, run: bytes) -> bool:
        """Write the entry for `zeros` zero bytes and then `run`; True when the run's bytes
        are written too (short runs), False when they follow where the diff reaches them."""
        size = fmt().RUN_CACHE
        if run in self.runs:
            at = self.runs.index(run)
            _varint(zeros << 3 | 4 + at, self.out)
            self.runs.insert(0, self.runs.pop(at))
            return True
        if 1 <= len(run) <= 3:
            _varint(zeros << 3 | len(run), self.out)
        else:
            _varint(zeros << 3, self.out)
            _varint(len(run), self.out)
        if not 1 <= len(run) <= 4:
            return False
        self.out += run
        self.runs = [run, *self.runs[: size - 1]]
        return True


class Encoder:
    """Op streams for output ranges of NEW, from bsdiff's triples."""

    def __init__(self, old: bytes, new: bytes) -> None:
        from .delta import match

        triples, self.diff, self.extra = match(old, new)
        self.ops: list[Op] = []
        out = old_at = d = e = 0
        for x, y, z in triples:
            if x or y:
                self.ops.append(Op(out, x, y, old_at, d, e))
            out, old_at, d, e = out + x + y, old_at + x + z, d + x, e + y
        self.starts = [op.out for op in self.ops]

    def clipped(self, start: int, end: int) -> list[tuple[int, int, int, bytes, bytes]]:
        """(old position, x, y, diff bytes, literal bytes) of the ops cut to [start, end)."""
        parts = []
        i = max(bisect.bisect_right(self.starts, start) - 1, 0)
        for op in self.ops[i:]:
            if op.out >= end:
                break
            ds, de = max(start, op.out), min(end, op.out + op.x)
            es, ee = max(start, op.out + op.x), min(end, op.out + op.x + op.y)
            x, y = max(de - ds, 0), max(ee - es, 0)
            if not x + y:
                continue
            old_at = op.old + (ds - op.out if x else op.x)
            diff = self.diff[op.diff + ds - op.out : op.diff + de - op.out] if x else b""
            skip = op.extra - op.out - op.x  # NEW offset -> offset in the extra string
            lit = self.extra[skip + es : skip + ee] if y else b""
            parts.append((old_at, x, y, diff, lit))
        return parts

    def unit(self, start: int, end: int) -> tuple[int, bytes]:
        """(old position at start, the op stream rebuilding NEW[start:end])."""
        parts = self.clipped(start, end)
        diff = b"".join(p[3] for p in parts)
        entries = []  # (zeros before, nonzero bytes)
        pos = 0
        for m in _NONZERO.finditer(diff):
            entries.append((m.start() - pos, m.group()))
            pos = m.end()
        if pos < len(diff):
            entries.append((len(diff) - pos, b""))
        out = bytearray()
        nxt = iter(entries)
        cache = RunCache(out)
        zeros, nonzero, follow = 0, b"", False
        for k, (old_at, x, y, d, lit) in enumerate(parts):
            seek = parts[k + 1][0] - (old_at + x) if k + 1 < len(parts) else 0
            _varint(x, out)
            _varint(y, out)
            _varint(_zigzag(seek), out)
            # The diff's entries and bytes go where the device's apply loop reads them.
            i = 0
            while i < x:
                if not zeros and not nonzero:
                    zeros, nonzero = next(nxt)
                    follow = not cache.entry(zeros, nonzero)  # else written with the entry
                if zeros:
                    s = min(zeros, x - i)
                    zeros -= s
                else:
                    s = min(len(nonzero), x - i)
                    if follow:
                        out += nonzero[:s]
                    nonzero = nonzero[s:]
                i += s
            out += lit
        return parts[0][0], bytes(out)


def deflate_raw(data: bytes, wbits: int) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, -wbits, 9)
    return comp.compress(data) + comp.flush()


@dataclass
class Unit:
    start: int
    end: int
    old: int
    packed: bytes


def cut_units(enc: Encoder, size: int, unit_max: int, wbits: int) -> list[Unit]:
    """Units covering NEW[0:size], each packing into unit_max bytes: as many whole sectors as
    fit; a sector that does not fit alone is split where the bytes allow."""
    units: list[Unit] = []
    start = 0

    def packed(end: int) -> Unit | None:
        old, ops = enc.unit(start, end)
        data = deflate_raw(ops, wbits)
        return Unit(start, end, old, data) if len(data) <= unit_max else None

    while start < size:
        first = min(start - start % SECTOR + SECTOR, size)
        best = packed(first)
        if best is None:  # not even to the next sector boundary: bisect the bytes
            lo, hi = start + 1, first  # lo: assumed to fit (one byte always does)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if packed(mid) is None:
                    hi = mid
                else:
                    lo = mid
            best = packed(lo)
        else:  # whole sectors: gallop, then bisect on the sector count
            good, step = first, SECTOR
            while good < size:
                trial = packed(min(good + step, size))
                if trial is None:
                    break
                best, good, step = trial, trial.end, step * 2
            lo, hi = good, min(good + step, size)
            while hi - lo > SECTOR:
                mid = lo + max((hi - lo) // 2 // SECTOR, 1) * SECTOR
                trial = packed(mid)
                if trial is None:
                    hi = mid
                else:
                    best, lo = trial, mid
        if best is None:
            raise GenerationError(f"--unit-bytes {unit_max} is too small for this image")
        units.append(best)
        start = best.end
    return units


def assemble(old: bytes, new: bytes, units: list[Unit], wbits: int) -> bytes:
    f = fmt()
    body = bytearray()
    for u in units:
        out_crc = zlib.crc32(new[u.start : u.end])
        body += f.pack_unit(len(u.packed), u.end - u.start, u.old, zlib.crc32(u.packed), out_crc)
        body += u.packed
    header = f.Header(
        wbits,
        max(len(u.packed) for u in units),
        SECTOR,
        len(old),
        hashlib.sha256(old).digest(),
        len(new),
        hashlib.sha256(new).digest(),
        len(units),
    )
    return f.pack_header(header) + bytes(body)


@dataclass
class StreamPatch:
    data: bytes
    units: list[Unit]

    def summary(self) -> str:
        h = fmt().parse_header(self.data)
        aligned = sum(1 for u in self.units if u.end % SECTOR == 0 or u.end == h.to_size)
        return (
            f"{len(self.data)} bytes = {100 * len(self.data) / h.to_size:.2f} % of the "
            f"{h.to_size}-byte new image; format 2: {len(self.units)} units of at most "
            f"{h.unit_max} B (w{h.wbits}), {aligned} of them resume points"
        )


def make_stream_patch(
    old: bytes, new: bytes, unit_max: int = DEFAULT_UNIT_MAX, wbits: int = DEFAULT_WBITS
) -> StreamPatch:
    """The format-2 patch rebuilding `new` from `old`, checked by applying it."""
    f = fmt()
    if not old or not new:
        raise GenerationError("OLD and NEW must not be empty")
    if not f.MIN_WBITS <= wbits <= f.MAX_WBITS:
        raise UserError(f"--wbits must be in {f.MIN_WBITS}..{f.MAX_WBITS}")
    if not MIN_UNIT_MAX <= unit_max <= 0xFFFF:
        raise UserError(f"--unit-bytes must be in {MIN_UNIT_MAX}..65535")
    units = cut_units(Encoder(old, new), len(new), unit_max, wbits)
    data = assemble(old, new, units, wbits)
    try:
        rebuilt = apply_stream_patch(old, data)
    except f.PatchError as exc:
        raise GenerationError(
            f"internal error: the patch fails its own check ({exc}); please report"
        )
    if rebuilt != new:
        raise GenerationError("internal error: the patch does not rebuild NEW (please report)")
    return StreamPatch(data, units)


# --- applying on the host: the device's Applier, fed in pieces ------------------------------


class HostInflate:
    """deflate.DeflateIO(src, RAW, wbits) for the Applier under CPython, with uzlib's errors."""

    def __init__(self, src, wbits: int) -> None:
        from .delta import Inflate

        self._z = Inflate(src.read(), wbits)

    def readinto(self, buf) -> int:
        try:
            return self._z.readinto(buf)
        except zlib.error as exc:
            raise OSError(22, str(exc)) from None


class MemorySink:
    """The Applier's sink over a bytearray, a sector buffer like the slot door's; remembers
    every checkpoint it was given."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._sector = memoryview(bytearray(SECTOR))
        self._fill = 0
        self.checkpoints: list[tuple[int, int, int]] = []

    def space(self) -> memoryview:
        return self._sector[self._fill :]

    def advance(self, n: int) -> None:
        self._fill += n
        if self._fill == SECTOR:
            self.finish()

    def finish(self) -> None:
        self.data += self._sector[: self._fill]
        self._fill = 0

    def checkpoint(self, state) -> None:
        self.checkpoints.append(tuple(state))


def old_reader(old: bytes):
    """The Applier's read_old(pos, mv) over the base image in memory."""
    view = memoryview(old)

    def read_old(pos: int, mv: memoryview) -> None:
        mv[:] = view[pos : pos + len(mv)]

    return read_old


def apply_stream_patch(
    old: bytes, data: bytes, sink: MemorySink | None = None, feed: int = FEED
) -> bytes:
    """NEW rebuilt from `old` and `data` as the device does it; fmt().PatchError when bad."""
    f = fmt()
    sink = sink if sink is not None else MemorySink()
    ap = f.Applier(sink, old_reader(old), HostInflate)
    view = memoryview(data)
    for at in range(0, len(data), feed):
        piece = view[at : at + feed]
        off = 0
        while off < len(piece):
            off += ap.feed(piece[off:])
            while ap.step():
                pass
    ap.end()
    sink.finish()
    result = bytes(sink.data)
    if hashlib.sha256(result).digest() != f.parse_header(data).to_sha256:
        raise f.PatchError("the result's sha256 does not match the header")
    return result
