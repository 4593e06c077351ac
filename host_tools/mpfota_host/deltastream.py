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
import heapq
import re
import zlib
from dataclasses import dataclass
from types import ModuleType

from . import paths
from .deltacodec import GenerationError, Inflate, deflate_raw, put_varint, zigzag
from .deltamatch import match
from .errors import UserError

DEFAULT_UNIT_MAX = 4096  # bytes of DEFLATE data the device holds for one unit
MIN_UNIT_MAX = 512
DEFAULT_WBITS = 10  # a 1 KiB window: 13 KiB less heap than 12 on the board for 0.3 % more
SECTOR = 4096
FEED = 1460  # the host check feeds the patch in pieces of one TCP segment
_NONZERO = re.compile(rb"[^\x00]+")


def fmt() -> ModuleType:
    """device/mpfota/deltastream.py, the format and applier shared with the device."""
    return paths.device_module("deltastream")


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
            put_varint(zeros << 3 | 4 + at, self.out)
            self.runs.insert(0, self.runs.pop(at))
            return True
        if 1 <= len(run) <= 3:
            put_varint(zeros << 3 | len(run), self.out)
        else:
            put_varint(zeros << 3, self.out)
            put_varint(len(run), self.out)
        if not 1 <= len(run) <= 4:
            return False
        self.out += run
        self.runs = [run, *self.runs[: size - 1]]
        return True


def cached_pieces(run: bytes, recent: list[bytes], most: int = 2) -> list[bytes]:
    """The run as one entry, or as up to `most` pieces (entries of no zeros) that are all in
    the run cache when their turn comes: each then costs an entry byte and none of its own.
    `recent` (most recently used first) is updated the way the device updates its cache."""
    size = fmt().RUN_CACHE
    pieces = [run]
    if run not in recent and len(run) > 1:
        trial = list(recent)
        found: list[bytes] = []
        i = 0
        while i < len(run) and len(found) < most:
            piece = next((run[i : i + n] for n in (4, 3, 2, 1) if run[i : i + n] in trial), None)
            if piece is None:
                break
            trial.remove(piece)
            trial.insert(0, piece)
            found.append(piece)
            i += len(piece)
        if i == len(run):
            pieces = found
    for piece in pieces:
        if piece in recent:
            recent.remove(piece)
        elif 1 <= len(piece) <= 4:
            del recent[size - 1 :]
        else:
            continue
        recent.insert(0, piece)
    return pieces


class Encoder:
    """Op streams for output ranges of NEW, from bsdiff's triples."""

    def __init__(self, old: bytes, new: bytes) -> None:
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
        recent: list[bytes] = []  # the run cache as the device will have it
        for m in _NONZERO.finditer(diff):
            zeros = m.start() - pos
            for piece in cached_pieces(m.group(), recent):
                entries.append((zeros, piece))
                zeros = 0
            pos = m.end()
        if pos < len(diff):
            entries.append((len(diff) - pos, b""))
        out = bytearray()
        nxt = iter(entries)
        cache = RunCache(out)
        zeros, nonzero, follow = 0, b"", False
        for k, (old_at, x, y, d, lit) in enumerate(parts):
            seek = parts[k + 1][0] - (old_at + x) if k + 1 < len(parts) else 0
            put_varint(x, out)
            put_varint(y, out)
            put_varint(zigzag(seek), out)
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


# --- raw DEFLATE within a small window, optimally parsed ---------------------------------------
#
# zlib parses greedily (lazy matching) and stops looking for a match 262 bytes short of its
# window. This encoder finds, for every position of the data, the matches within the window
# (the nearest one of each length that is longer than any nearer one), then chooses literals
# and matches by a shortest path whose costs are the bit lengths of the Huffman codes of the
# last path, a few times over, and writes one dynamic-Huffman block per stream.

_LEN_BASE = (3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83)
_LEN_BASE += (99, 115, 131, 163, 195, 227, 258)
_LEN_EXTRA = (0,) * 8 + (1,) * 4 + (2,) * 4 + (3,) * 4 + (4,) * 4 + (5,) * 4 + (0,)
_DIST_BASE = (1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769)
_DIST_BASE += (1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577)
_DIST_EXTRA = (0, 0) + tuple(n for n in range(14) for _ in (0, 1))
_CLEN_ORDER = (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15)
_MAX_MATCH = 258
_CHAIN = 512  # candidates looked at per position, nearest first
ROUNDS = 4  # parses per stream (the costs settle after two or three)


def _symbol_tables():
    len_sym = [0] * (_MAX_MATCH + 1)
    for s, base in enumerate(_LEN_BASE):
        top = _LEN_BASE[s + 1] if s + 1 < len(_LEN_BASE) else _MAX_MATCH + 1
        for n in range(base, min(top, _MAX_MATCH + 1)):
            len_sym[n] = s
    len_sym[_MAX_MATCH] = 28
    dist_sym = [0] * (32768 + 1)
    for s, base in enumerate(_DIST_BASE):
        top = _DIST_BASE[s + 1] if s + 1 < len(_DIST_BASE) else 32769
        for d in range(base, top):
            dist_sym[d] = s
    return len_sym, dist_sym


_LEN_SYM, _DIST_SYM = _symbol_tables()


def _find_matches(data: bytes, window: int) -> list:
    """For every position, [(length, distance), ...] with lengths and distances increasing:
    the nearest match of at least 3 bytes, then each farther one that is longer."""
    n = len(data)
    chains: dict = {}
    found = [()] * n
    for i in range(n - 2):
        key = data[i : i + 3]
        chain = chains.get(key)
        if chain is None:
            chains[key] = [i]
            continue
        limit = min(_MAX_MATCH, n - i)
        cands = []
        best = 2
        lo = i - window
        looked = 0
        for j in range(len(chain) - 1, -1, -1):
            p = chain[j]
            if p < lo or looked == _CHAIN:
                break
            looked += 1
            if best >= limit:
                break
            if data[p + best] != data[i + best]:
                continue
            k = 3
            while k + 16 <= limit and data[p + k : p + k + 16] == data[i + k : i + k + 16]:
                k += 16
            while k < limit and data[p + k] == data[i + k]:
                k += 1
            if k > best:
                cands.append((k, i - p))
                best = k
        found[i] = cands
        chain.append(i)
        if len(chain) > 2 * window and chain[0] < lo:
            chains[key] = [p for p in chain if p >= lo]
    return found


def _huffman_lengths(freqs: list, limit: int) -> list:
    """Code lengths for freqs (0 for unused symbols), none longer than limit; at least two
    symbols get a code, so that every code is complete."""
    freqs = list(freqs)
    used = [s for s, f in enumerate(freqs) if f]
    while len(used) < 2:
        s = next(s for s in range(len(freqs)) if not freqs[s])
        freqs[s] = 1
        used.append(s)
    while True:
        heap = [(freqs[s], s, (s,)) for s in used]
        heapq.heapify(heap)
        lengths = [0] * len(freqs)
        tie = len(freqs)
        while len(heap) > 1:
            f1, _, a = heapq.heappop(heap)
            f2, _, b = heapq.heappop(heap)
            for s in a + b:
                lengths[s] += 1
            heapq.heappush(heap, (f1 + f2, tie, a + b))
            tie += 1
        if max(lengths) <= limit:
            return lengths
        freqs = [(f + 1) // 2 if f else 0 for f in freqs]


def _codes(lengths: list) -> list:
    """Canonical codes, bit-reversed so that they can be written least significant bit first."""
    count = [0] * 16
    for n in lengths:
        if n:
            count[n] += 1
    nxt = [0] * 16
    code = 0
    for bits in range(1, 16):
        code = (code + count[bits - 1]) << 1 if bits > 1 else 0
        nxt[bits] = code
    codes = [0] * len(lengths)
    for s, n in enumerate(lengths):
        if n:
            c = nxt[n]
            nxt[n] += 1
            codes[s] = int(format(c, f"0{n}b")[::-1], 2)
    return codes


class _Bits:
    def __init__(self) -> None:
        self.acc = 0
        self.n = 0
        self.out = bytearray()

    def put(self, value: int, bits: int) -> None:
        self.acc |= value << self.n
        self.n += bits
        while self.n >= 8:
            self.out.append(self.acc & 0xFF)
            self.acc >>= 8
            self.n -= 8

    def done(self) -> bytes:
        if self.n:
            self.out.append(self.acc & 0xFF)
        return bytes(self.out)


def _parse(data: bytes, found: list, lit_bits: list, len_bits: list, dist_bits: list) -> list:
    """The cheapest sequence of literals (length 1) and matches, as [(length, distance)]."""
    n = len(data)
    inf = float("inf")
    cost = [inf] * (n + 1)
    cost[0] = 0.0
    step = [(1, 0)] * (n + 1)
    for i in range(n):
        c = cost[i]
        t = c + lit_bits[data[i]]
        if t < cost[i + 1]:
            cost[i + 1] = t
            step[i + 1] = (1, 0)
        prev = 2
        for length, dist in found[i]:
            base = c + dist_bits[dist]
            if length - prev > 24:
                lengths = list(range(prev + 1, prev + 9)) + [
                    b for b in _LEN_BASE if prev + 9 <= b < length
                ] + [length]
            else:
                lengths = range(prev + 1, length + 1)
            for k in lengths:
                t = base + len_bits[k]
                if t < cost[i + k]:
                    cost[i + k] = t
                    step[i + k] = (k, dist)
            prev = length
    seq = []
    i = n
    while i:
        k, dist = step[i]
        seq.append((k, dist))
        i -= k
    seq.reverse()
    return seq


def _stats(data: bytes, seq: list) -> tuple[list, list]:
    lit = [0] * 286
    dist = [0] * 30
    i = 0
    for k, d in seq:
        if d:
            lit[257 + _LEN_SYM[k]] += 1
            dist[_DIST_SYM[d]] += 1
        else:
            lit[data[i]] += 1
        i += k
    lit[256] = 1
    return lit, dist


def _costs(lit_len: list, dist_len: list) -> tuple[list, list, list]:
    """Bits of every literal value, match length (3..258) and distance, for the parser; an
    unused symbol is priced as if it had a code one bit longer than the longest."""
    worst_l = max(lit_len) + 1
    worst_d = max(dist_len) + 1
    lit_bits = [lit_len[b] or worst_l for b in range(256)]
    len_bits = [0.0] * (_MAX_MATCH + 1)
    for k in range(3, _MAX_MATCH + 1):
        s = _LEN_SYM[k]
        len_bits[k] = (lit_len[257 + s] or worst_l) + _LEN_EXTRA[s]
    dist_bits = [0.0] * (32768 + 1)
    for d in range(1, 32769):
        s = _DIST_SYM[d]
        dist_bits[d] = (dist_len[s] or worst_d) + _DIST_EXTRA[s]
    return lit_bits, len_bits, dist_bits


def _write_block(data: bytes, seq: list) -> bytes:
    lit_freq, dist_freq = _stats(data, seq)
    lit_len = _huffman_lengths(lit_freq, 15)
    dist_len = _huffman_lengths(dist_freq, 15)
    hlit = max(s for s in range(286) if lit_len[s]) + 1
    hdist = max(s for s in range(30) if dist_len[s]) + 1
    hlit = max(hlit, 257)
    lengths = lit_len[:hlit] + dist_len[:hdist]
    # Run-length code the code lengths (16: repeat the last 3..6 times; 17, 18: zeros).
    rle = []
    i = 0
    while i < len(lengths):
        v = lengths[i]
        run = 1
        while i + run < len(lengths) and lengths[i + run] == v:
            run += 1
        i += run
        if v == 0:
            while run >= 11:
                r = min(run, 138)
                rle.append((18, r - 11, 7))
                run -= r
            if run >= 3:
                rle.append((17, run - 3, 3))
                run = 0
            rle += [(0, 0, 0)] * run
        else:
            rle.append((v, 0, 0))
            run -= 1
            while run >= 3:
                r = min(run, 6)
                rle.append((16, r - 3, 2))
                run -= r
            rle += [(v, 0, 0)] * run
    clen_freq = [0] * 19
    for s, _, _ in rle:
        clen_freq[s] += 1
    clen_len = _huffman_lengths(clen_freq, 7)
    hclen = max(k for k in range(19) if clen_len[_CLEN_ORDER[k]]) + 1
    hclen = max(hclen, 4)
    lit_code, dist_code, clen_code = _codes(lit_len), _codes(dist_len), _codes(clen_len)
    w = _Bits()
    w.put(1, 1)  # BFINAL
    w.put(2, 2)  # dynamic Huffman
    w.put(hlit - 257, 5)
    w.put(hdist - 1, 5)
    w.put(hclen - 4, 4)
    for k in range(hclen):
        w.put(clen_len[_CLEN_ORDER[k]], 3)
    for s, extra, bits in rle:
        w.put(clen_code[s], clen_len[s])
        if bits:
            w.put(extra, bits)
    put = w.put
    i = 0
    for k, d in seq:
        if d:
            s = _LEN_SYM[k]
            put(lit_code[257 + s], lit_len[257 + s])
            if _LEN_EXTRA[s]:
                put(k - _LEN_BASE[s], _LEN_EXTRA[s])
            s = _DIST_SYM[d]
            put(dist_code[s], dist_len[s])
            if _DIST_EXTRA[s]:
                put(d - _DIST_BASE[s], _DIST_EXTRA[s])
        else:
            b = data[i]
            put(lit_code[b], lit_len[b])
        i += k
    put(lit_code[256], lit_len[256])
    return w.done()


def deflate_best(data: bytes, wbits: int, packed: bytes) -> bytes:
    """The smaller of `packed` (zlib's raw DEFLATE of data) and deflate_optimal(data)."""
    mine = deflate_optimal(data, wbits)
    return mine if len(mine) < len(packed) else packed


def deflate_optimal(data: bytes, wbits: int, rounds: int = ROUNDS) -> bytes:
    """Raw DEFLATE of data (one dynamic block) whose distances stay within 2**wbits."""
    found = _find_matches(data, 1 << wbits)
    # First round: a rough model (a literal 8 bits, a match 8 bits + its extra bits).
    lit_len = [8] * 286
    dist_len = [5] * 30
    best = None
    for _ in range(rounds):
        seq = _parse(data, found, *_costs(lit_len, dist_len))
        block = _write_block(data, seq)
        if best is None or len(block) < len(best):
            best = block
        lit_freq, dist_freq = _stats(data, seq)
        lit_len = _huffman_lengths(lit_freq, 15)
        dist_len = _huffman_lengths(dist_freq, 15)
    return best


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
    for u in units:  # the cuts are made with zlib; the final packing is the smallest we have
        u.packed = deflate_best(enc.unit(u.start, u.end)[1], wbits, u.packed)
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
