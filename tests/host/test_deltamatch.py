"""The generator's own parts: the matcher (mpfota_host.deltamatch: bsdiff's covers decided
again by a shortest path), the optimal-parse DEFLATE encoder of format 2 (decoded by zlib and
by MicroPython's deflate with the distance at the very edge of the window), the run cache
pieces, and the corpus sizes the issue asks for (ESP8266 pair format 2 <= 69,879 B, the old
format-1 figure; pyboard pair <= 7,322 B, the old format-2 figure)."""

from __future__ import annotations

import random
import shutil
import subprocess
import zlib

import pytest
from fixtures_delta import CORPUS, CORPUS_NEW, CORPUS_OLD, PAIR_KINDS, realistic_pair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpfota_host import delta, deltamatch, deltastream, paths

PYBOARD = ("pybv11-1f5d945af.bin", "pybv11-1f5d945af-dirty.bin")
FUZZ = settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def rebuild(old: bytes, new_size: int, triples, diff: bytes, extra: bytes) -> bytes:
    """NEW from bsdiff-style triples (old position 0 at the start), as format 1 applies them."""
    out = bytearray()
    pos = d = e = 0
    for x, y, z in triples:
        out += bytes((old[pos + i] + diff[d + i]) & 0xFF for i in range(x))
        out += extra[e : e + y]
        pos, d, e = pos + x + z, d + x, e + y
    assert len(out) == new_size
    return bytes(out)


@pytest.mark.parametrize("kind", PAIR_KINDS)
def test_segments_rebuild_new(kind):
    old, new = realistic_pair(kind, 7, 20_000, 600, 48)
    segs = deltamatch.segments(old, new)
    deltamatch.check(old, new, segs)
    triples, diff, extra = deltamatch.match(old, new)
    assert rebuild(old, len(new), triples, diff, extra) == new


@FUZZ
@given(st.binary(min_size=1, max_size=3000), st.binary(min_size=1, max_size=3000))
def test_segments_of_any_pair(old, new):
    segs = deltamatch.segments(old, new)
    deltamatch.check(old, new, segs)
    triples, diff, extra = deltamatch.match(old, new)
    assert rebuild(old, len(new), triples, diff, extra) == new


def test_a_first_segment_away_from_0_is_reached_by_an_empty_triple():
    # The format starts at old position 0: a cover that starts elsewhere needs a seek first.
    base = random.Random(3).randbytes(8_000)
    old, new = base, base[5_000:6_000]
    triples, diff, extra = deltamatch.match(old, new)
    assert triples[0][:2] == (0, 0) and triples[0][2] > 0
    assert rebuild(old, len(new), triples, diff, extra) == new


def test_a_piece_of_old_code_inside_new_code_becomes_diff_bytes():
    # New code between two unchanged stretches, with 600 bytes in its middle copied from far
    # away in OLD and 1 byte in 6 of them changed (a moved piece, re-linked): bsdiff finds no
    # cover there and sends literal bytes; the shortest path diffs the piece against OLD at
    # its own alignment, found through the 4-byte pieces of OLD.
    rng = random.Random(1)
    old = bytearray(rng.randbytes(60_000))
    piece = bytearray(old[40_000:40_600])
    for i in range(0, len(piece), 6):
        piece[i] ^= 0x5A
    new_code = rng.randbytes(300) + bytes(piece) + rng.randbytes(300)
    new = bytes(old[:10_000]) + new_code + bytes(old[10_000:])
    bsdiff = deltamatch.bsdiff_segments(bytes(old), new)
    refined = deltamatch.segments(bytes(old), new)
    deltamatch.check(bytes(old), new, refined)
    assert sum(s[2] for s in bsdiff) >= 1_200
    assert sum(s[2] for s in refined) < 700
    # The piece is diffed at its own alignment (old 40,000 for new 10,300).
    assert any(s[3] - s[0] == 40_000 - 10_300 and s[1] >= 500 for s in refined)


def test_merge_joins_continued_segments_and_drops_empty_ones():
    segs = [[0, 10, 0, 100], [10, 5, 3, 110], [18, 0, 0, 0], [18, 0, 2, 0], [20, 4, 0, 7]]
    assert deltamatch.merge(segs) == [[0, 15, 5, 100], [20, 4, 0, 7]]


# --- the DEFLATE encoder --------------------------------------------------------------------


def samples():
    rng = random.Random(9)
    old, new = realistic_pair("shift", 5, 30_000, 900, -40)
    stream = deltastream.Encoder(old, new).unit(0, len(new))[1]
    return {
        "one byte": b"\x07",
        "zeros": bytes(5_000),
        "random": rng.randbytes(3_000),
        "op stream": stream[:6_000],
        "repeats at the window edge": (rng.randbytes(1024) * 4)[:3_500],
        "text": b"".join(b"line %d of the log\n" % (i % 37) for i in range(300)),
    }


@pytest.mark.parametrize("name", list(samples()))
@pytest.mark.parametrize("wbits", [9, 10, 12])
def test_deflate_optimal_round_trips_within_its_window(name, wbits):
    data = samples()[name]
    packed = deltastream.deflate_optimal(data, wbits)
    d = zlib.decompressobj(-wbits)
    assert d.decompress(packed) == data and d.eof and not d.unused_data
    # The parse takes its matches from these only (zlib would not refuse a distance past the
    # window while the bytes are still in its output buffer, so this is checked here).
    found = deltastream._find_matches(data, 1 << wbits)
    assert all(0 < dist <= 1 << wbits and 3 <= n <= 258 for c in found for n, dist in c)


def test_deflate_optimal_beats_zlib_on_op_streams():
    data = samples()["op stream"]
    assert len(deltastream.deflate_optimal(data, 10)) < len(deltastream.deflate_raw(data, 10))


MICROPYTHON = paths.REPO / ".venv" / "bin" / "micropython"
INFLATE = """
import deflate, io, sys
src = open(sys.argv[1], "rb").read()
d = deflate.DeflateIO(io.BytesIO(src), deflate.RAW, int(sys.argv[2]))
out = bytearray()
while True:
    b = d.read(7)
    if not b:
        break
    out += b
open(sys.argv[3], "wb").write(out)
"""


@pytest.mark.skipif(not (MICROPYTHON.exists() or shutil.which("micropython")), reason="no port")
def test_micropython_decodes_matches_a_whole_window_back(tmp_path):
    # Data that repeats every 1,024 bytes: the encoder's matches reach exactly 2**10 back.
    data = samples()["repeats at the window edge"]
    packed = deltastream.deflate_optimal(data, 10)
    found = deltastream._find_matches(data, 1024)
    assert any(dist == 1024 for cands in found for _, dist in cands)
    (tmp_path / "script.py").write_text(INFLATE)
    (tmp_path / "in").write_bytes(packed)
    exe = str(MICROPYTHON) if MICROPYTHON.exists() else "micropython"
    args = [exe, str(tmp_path / "script.py"), str(tmp_path / "in"), "10", str(tmp_path / "out")]
    subprocess.run(args, check=True, timeout=60)
    assert (tmp_path / "out").read_bytes() == data


def test_huffman_lengths_are_limited_and_complete():
    freqs = [2**i for i in range(20)]  # a Fibonacci-like spread wants codes of 19 bits
    lengths = deltastream._huffman_lengths(freqs, 15)
    assert max(lengths) <= 15
    assert sum(2.0**-n for n in lengths if n) == 1.0  # Kraft: a complete code
    assert sorted(n for n in deltastream._huffman_lengths([0, 5, 0], 7) if n) == [1, 1]


# --- the run cache ----------------------------------------------------------------------------


def test_cached_pieces_follow_the_device_cache():
    recent: list[bytes] = []
    assert deltastream.cached_pieces(b"\xc0", recent) == [b"\xc0"]
    assert deltastream.cached_pieces(b"\xff", recent) == [b"\xff"]
    assert recent == [b"\xff", b"\xc0"]
    # Both halves are cached: two entries of one byte each instead of an entry and 2 bytes.
    assert deltastream.cached_pieces(b"\xc0\xff", recent) == [b"\xc0", b"\xff"]
    assert recent == [b"\xff", b"\xc0"]
    # Not all of it is cached: one entry with the bytes, and it joins the cache in front.
    assert deltastream.cached_pieces(b"\xc0\x01", recent) == [b"\xc0\x01"]
    assert recent == [b"\xc0\x01", b"\xff", b"\xc0"]
    for run in (b"\x01", b"\x02", b"\x03", b"\x04"):
        deltastream.cached_pieces(run, recent)
    assert recent == [b"\x04", b"\x03", b"\x02", b"\x01"]  # 4 places, the oldest dropped
    assert deltastream.cached_pieces(b"\x09" * 6, recent) == [b"\x09" * 6]  # long: not cached
    assert recent == [b"\x04", b"\x03", b"\x02", b"\x01"]


# --- sizes on the corpus ------------------------------------------------------------------------


def corpus(pair):
    if not (CORPUS / pair[0]).is_file():
        pytest.skip("firmware corpus not present")
    return (CORPUS / pair[0]).read_bytes(), (CORPUS / pair[1]).read_bytes()


def test_esp8266_pair_sizes():
    old, new = corpus((CORPUS_OLD, CORPUS_NEW))
    stream = deltastream.make_stream_patch(old, new)
    assert len(stream.data) <= 69_879  # was 72,696 with bsdiff's covers and zlib
    assert len(delta.make_patch(old, new).data) <= 67_500  # format 1: was 69,879


def test_pyboard_pair_size():
    old, new = corpus(PYBOARD)
    assert len(deltastream.make_stream_patch(old, new).data) <= 7_322
