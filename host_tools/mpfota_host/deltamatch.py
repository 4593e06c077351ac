"""Matching for delta patches: which bytes of NEW are made from bytes of OLD (diff bytes, new
minus old) and which are sent as they are (literal bytes). docs/delta.md, "Matching".

bsdiff (the `bsdiff4` package) finds the covers: long stretches of NEW that match OLD at one
alignment, with a few bytes different. Between two covers it leaves literal bytes, and where
its covers meet it draws the border by counting equal bytes. Both are decided again here, for
every stretch between two covers (with `MARGIN` bytes of each cover around it), as a shortest
path over the stretch's bytes whose states are "literal" and "diff at alignment d" for a few
candidate alignments: the two covers', those of the covers near them, and the alignments at
which short pieces of the stretch occur in OLD (a 4-byte index of OLD votes for them). A path
costs what the patch would spend, estimated in bits: a literal byte and a nonzero diff byte
cost what their value costs in an order-0 model of the current matching, a run of nonzero
diff bytes an entry more, and a change of alignment an op header. Firmware gains from this
because a changed function is new code mixed with pieces of the old one at shifted places:
those pieces become diff bytes at their own alignment instead of literal bytes.

The result is a list of segments [out, x, y, old]: x diff bytes of NEW[out:] against
OLD[old:], then y literal bytes; they cover NEW in order.
"""

from __future__ import annotations

import math
from collections import Counter

from .deltacodec import bsdiff_triples, zigzag

Segment = list[int]  # [out, x, y, old]

MARGIN = 128  # bytes of each neighbouring cover that a stretch may give or take
NEIGHBOURS = 16  # covers nearby whose alignments are candidates (half before, half after)
SEEDS = 16  # alignments found through OLD's 4-grams, at most, per stretch
SEED_BYTES = 4
SEED_CAP = 16  # a 4-gram found more often than this in OLD says nothing
SEED_VOTES = 1  # an alignment needs that many 4-grams of the stretch
PASSES = 2
# Costs in bits (tuned on the corpus pairs, see docs/delta.md): the first nonzero diff byte
# after a zero one starts an entry; an op header; a zero diff byte inside a zero run.
ENTRY_BITS = 5.0
OP_BITS = 30.0
SEEK_BITS = 8.0
ZERO_BITS = 0.02
LITERAL_SCALE = 1.0
NONZERO_SCALE = 1.1  # nonzero diff bytes where the stretches are cost more than the average
_INF = float("inf")


def bsdiff_segments(old: bytes, new: bytes) -> list[Segment]:
    """bsdiff's covers as segments."""
    triples = bsdiff_triples(old, new)
    segs = []
    out = at = 0
    for x, y, z in triples:
        if x or y:
            segs.append([out, x, y, at])
        out, at = out + x + y, at + x + z
    return segs


def diff_bytes(old: bytes, new: bytes, segs: list[Segment]) -> tuple[bytes, bytes]:
    """(diff bytes of all segments, literal bytes of all segments), each in order."""
    diff = bytearray()
    extra = bytearray()
    for out, x, y, at in segs:
        diff += bytes([(a - b) & 0xFF for a, b in zip(new[out : out + x], old[at : at + x])])
        extra += new[out + x : out + x + y]
    return bytes(diff), bytes(extra)


def triples_of(segs: list[Segment]) -> list[tuple[int, int, int]]:
    """Control triples (x, y, seek after) of the segments, as bsdiff writes them (old
    position 0 at the start: a first segment elsewhere is reached by an empty triple)."""
    result = [(0, 0, segs[0][3])] if segs and segs[0][3] else []
    for k, (_, x, y, at) in enumerate(segs):
        seek = segs[k + 1][3] - (at + x) if k + 1 < len(segs) else 0
        result.append((x, y, seek))
    return result


def _varint_len(value: int) -> int:
    n = 1
    while value >= 0x80:
        value >>= 7
        n += 1
    return n


def _bit_costs(counts: Counter, scale: float) -> list[float]:
    total = sum(counts.values()) + 256
    return [scale * -math.log2((counts[b] + 1) / total) for b in range(256)]


def cost_tables(old: bytes, new: bytes, segs: list[Segment]) -> tuple[list[float], list[float]]:
    """Bits per literal byte value and per nonzero diff byte value (order-0, add-one)."""
    lit: Counter = Counter()
    nonzero: Counter = Counter()
    for out, x, y, at in segs:
        lit.update(new[out + x : out + x + y])
        nonzero.update((a - b) & 0xFF for a, b in zip(new[out : out + x], old[at : at + x]))
    del nonzero[0]
    return _bit_costs(lit, LITERAL_SCALE), _bit_costs(nonzero, NONZERO_SCALE)


class Seeds:
    """Where the 4-byte pieces of OLD are (up to SEED_CAP + 1 places each: a piece found more
    often says nothing). A piece found once is kept as its place alone, to save memory."""

    def __init__(self, old: bytes) -> None:
        index: dict[bytes, int | list[int]] = {}
        get = index.get
        for i in range(len(old) - SEED_BYTES + 1):
            key = old[i : i + SEED_BYTES]
            places = get(key)
            if places is None:
                index[key] = i
            elif type(places) is int:
                index[key] = [places, i]
            elif len(places) <= SEED_CAP:
                places.append(i)
        self.index = index

    def alignments(self, new: bytes, start: int, end: int) -> list[int]:
        """Alignments (old - new position) that most 4-grams of NEW[start:end] vote for."""
        votes: Counter = Counter()
        get = self.index.get
        for i in range(start, end - SEED_BYTES + 1):
            places = get(new[i : i + SEED_BYTES])
            if places is None:
                continue
            if type(places) is int:
                votes[places - i] += 1
            elif len(places) <= SEED_CAP:
                votes.update(p - i for p in places)
        return [d for d, v in votes.most_common(SEEDS) if v >= SEED_VOTES]


def _shortest_path(
    old: bytes, new: bytes, start: int, end: int, cands: list[int], lit_bits, nz_bits
) -> list[int]:
    """The cheapest state for every byte of NEW[start:end]: -1 literal, c diff at cands[c].
    The path starts inside cands[0] (the cover before) and ends inside cands[1] (after)."""
    nold = len(old)
    count = len(cands)
    # State 0: literal; 1 + 2c: diff at cands[c], last byte zero; 2 + 2c: last byte nonzero.
    size = 1 + 2 * count
    cost = [_INF] * size
    cost[1] = 0.0
    back = []
    # An op header: its seek costs more bytes the farther the alignment is from the cover's.
    op_bits = [OP_BITS + SEEK_BITS * (_varint_len(zigzag(d - cands[0])) - 1) for d in cands]
    for i in range(start, end):
        b = new[i]
        best = _INF
        best_state = 0
        for st in range(size):
            if cost[st] < best:
                best = cost[st]
                best_state = st
        nxt = [_INF] * size
        ptr = [0] * size
        nxt[0] = best + lit_bits[b]
        ptr[0] = best_state
        for c in range(count):
            at = i + cands[c]
            if not 0 <= at < nold:
                continue
            zs = 1 + 2 * c
            ns = zs + 1
            # Entering this alignment from any other state costs an op header.
            if best_state == zs or best_state == ns:
                enter = _INF
                enter_state = 0
                for st in range(size):
                    if st != zs and st != ns and cost[st] < enter:
                        enter = cost[st]
                        enter_state = st
            else:
                enter = best
                enter_state = best_state
            enter += op_bits[c]
            d = (b - old[at]) & 0xFF
            if d == 0:
                m, p = cost[zs], zs
                if cost[ns] < m:
                    m, p = cost[ns], ns
                if enter < m:
                    m, p = enter, enter_state
                nxt[zs] = m + ZERO_BITS
                ptr[zs] = p
            else:
                m, p = cost[ns], ns
                if cost[zs] + ENTRY_BITS < m:
                    m, p = cost[zs] + ENTRY_BITS, zs
                if enter + ENTRY_BITS < m:
                    m, p = enter + ENTRY_BITS, enter_state
                nxt[ns] = m + nz_bits[d]
                ptr[ns] = p
        cost = nxt
        back.append(ptr)
    st = 3 if cost[3] <= cost[4] else 4
    path = [0] * (end - start)
    for j in range(end - start - 1, -1, -1):
        path[j] = (st - 1) // 2 if st else -1
        st = back[j][st]
    return path


def refine(old: bytes, new: bytes, segs: list[Segment], seeds: Seeds | None) -> list[Segment]:
    """One pass: every stretch between two covers decided again (see the module doc)."""
    lit_bits, nz_bits = cost_tables(old, new, segs)
    orig = segs
    result = [list(orig[0])]
    for k in range(1, len(orig)):
        prev = result[-1]
        cur = list(orig[k])
        if not prev[1] or not cur[1]:
            result.append(cur)
            continue
        da, db = prev[3] - prev[0], cur[3] - cur[0]
        if da == db:  # a literal in place of as many old bytes: tried, costs more than it saves
            result.append(cur)
            continue
        take_a, take_b = min(MARGIN, prev[1] // 2), min(MARGIN, cur[1] // 2)
        start, end = prev[0] + prev[1] - take_a, cur[0] + take_b
        cands = [da, db]
        for j in range(1, NEIGHBOURS // 2 + 1):
            for n in (k - 1 - j, k + j):
                if 0 <= n < len(orig):
                    d = orig[n][3] - orig[n][0]
                    if d not in cands:
                        cands.append(d)
        if seeds is not None:
            cands += [d for d in seeds.alignments(new, start, end) if d not in cands]
        path = _shortest_path(old, new, start, end, cands, lit_bits, nz_bits)
        # Runs of one state: [state, length].
        runs: list[list[int]] = []
        for st in path:
            if runs and runs[-1][0] == st:
                runs[-1][1] += 1
            else:
                runs.append([st, 1])
        # The last run (in cands[1]) becomes the front of the next cover.
        tail = runs.pop()[1]
        pos = start
        i = 0
        prev[1] -= take_a
        if runs and runs[0][0] == 0:
            prev[1] += runs[0][1]
            pos += runs[0][1]
            i = 1
        prev[2] = 0
        while i < len(runs) and runs[i][0] == -1:
            prev[2] += runs[i][1]
            pos += runs[i][1]
            i += 1
        while i < len(runs):
            st, n = runs[i]
            seg = [pos, n, 0, pos + cands[st]]
            pos += n
            i += 1
            while i < len(runs) and runs[i][0] == -1:
                seg[2] += runs[i][1]
                pos += runs[i][1]
                i += 1
            result.append(seg)
        assert pos == end - tail
        cur[1] -= pos - cur[0]
        cur[0] = pos
        cur[3] = pos + db
        result.append(cur)
    return merge(result)


def merge(segs: list[Segment]) -> list[Segment]:
    """Segments with neither diff nor literal bytes dropped; a diff-only segment joined to
    the next one when that continues it at the same alignment."""
    result: list[Segment] = []
    for seg in segs:
        if not seg[1] and not seg[2]:
            continue
        if result:
            last = result[-1]
            if not last[2] and last[0] + last[1] == seg[0] and last[3] + last[1] == seg[3]:
                last[1] += seg[1]
                last[2] = seg[2]
                continue
            if not seg[1]:
                last[2] += seg[2]
                continue
        result.append(list(seg))
    return result


def segments(old: bytes, new: bytes) -> list[Segment]:
    """The segments rebuilding NEW from OLD: bsdiff's, then PASSES passes of refine()."""
    segs = bsdiff_segments(old, new)
    if not segs:
        return [[0, 0, len(new), 0]]
    seeds = Seeds(old) if len(old) >= SEED_BYTES else None
    for _ in range(PASSES):
        segs = refine(old, new, segs, seeds)
    return segs


def check(old: bytes, new: bytes, segs: list[Segment]) -> None:
    """AssertionError unless the segments cover NEW in order with every diff range in OLD."""
    out = 0
    for at, x, y, base in segs:
        assert at == out and x >= 0 and y >= 0 and x + y > 0, (at, x, y, base)
        assert not x or 0 <= base and base + x <= len(old), (at, x, y, base)
        out += x + y
    assert out == len(new), (out, len(new))


def match(old: bytes, new: bytes) -> tuple[list[tuple[int, int, int]], bytes, bytes]:
    """Control triples (x diff bytes, y extra bytes, z seek), diff and extra bytes: bsdiff's
    covers, refined here."""
    segs = segments(old, new)
    diff, extra = diff_bytes(old, new, segs)
    return triples_of(segs), diff, extra
