"""Delta format 2 under CPython: the generator, the device's own streamed Applier
(device/mpfota/deltastream.py) fed in pieces, resume from every checkpoint, every class of bad
patch, the unit budget, and hypothesis fuzzing of damaged patches."""

from __future__ import annotations

import hashlib
import random
import zlib

import pytest
from fixtures_delta import (
    CORPUS,
    CORPUS_NEW,
    CORPUS_OLD,
    PAIR_KINDS,
    STREAM_BAD,
    damaged_stream,
    realistic_pair,
    small_bodies,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpfota_host import cli
from mpfota_host import deltastream as ds

F = ds.fmt()
FUZZ = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.fixture(scope="module")
def small():
    old, new = small_bodies()
    return old, new, ds.make_stream_patch(old, new, unit_max=1024)


def test_header_and_units(small):
    old, new, patch = small
    h = F.parse_header(patch.data)
    assert patch.data[:4] == b"MPFD" and patch.data[4] == 2
    assert (h.from_size, h.to_size, h.units) == (len(old), len(new), len(patch.units))
    assert h.to_sha256 == hashlib.sha256(new).digest()
    assert F.pack_header(h) == patch.data[: F.HEADER_SIZE]
    assert h.unit_max == max(len(u.packed) for u in patch.units) <= 1024
    # The units tile NEW, and most end on a sector boundary (a resume point).
    assert [u.start for u in patch.units[1:]] == [u.end for u in patch.units[:-1]]
    assert patch.units[0].start == 0 and patch.units[-1].end == len(new)
    aligned = [u for u in patch.units[:-1] if u.end % ds.SECTOR == 0]
    assert len(aligned) >= len(patch.units) // 2


@pytest.mark.parametrize("kind", PAIR_KINDS)
@pytest.mark.parametrize("unit_max", [512, 4096])
def test_round_trips(kind, unit_max):
    old, new = realistic_pair(kind, 11, 30_000, 900, -40)
    patch = ds.make_stream_patch(old, new, unit_max=unit_max)
    assert ds.apply_stream_patch(old, patch.data) == new
    assert all(len(u.packed) <= unit_max for u in patch.units)


@pytest.mark.parametrize("feed", [1, 7, 4096, 1 << 20])
def test_any_piece_size(small, feed):
    old, new, patch = small
    assert ds.apply_stream_patch(old, patch.data, feed=feed) == new


def test_resume_from_every_checkpoint(small):
    old, new, patch = small
    sink = ds.MemorySink()
    ds.apply_stream_patch(old, patch.data, sink)
    assert len(sink.checkpoints) >= 3
    for patch_at, out_at, unit in sink.checkpoints:
        assert out_at % ds.SECTOR == 0 and 0 < out_at < len(new)
        rest = ds.MemorySink()
        ap = F.Applier(rest, ds.old_reader(old), ds.HostInflate)
        ap.resume(patch.data[: F.HEADER_SIZE], (patch_at, out_at, unit))
        tail = memoryview(patch.data)[patch_at:]
        off = 0
        while off < len(tail):
            off += ap.feed(tail[off:])
            while ap.step():
                pass
        ap.end()
        rest.finish()
        assert bytes(rest.data) == new[out_at:]


def test_resume_refuses_a_checkpoint_off_the_grid(small):
    old, _, patch = small
    ap = F.Applier(ds.MemorySink(), ds.old_reader(old), ds.HostInflate)
    with pytest.raises(F.PatchError, match="does not fit"):
        ap.resume(patch.data[: F.HEADER_SIZE], (200, 100, 1))


@pytest.fixture(scope="module")
def bad_set():
    old, new = small_bodies()
    return old, new, damaged_stream(old, new)


@pytest.mark.parametrize("name", sorted(STREAM_BAD))
def test_bad_patches_are_refused(name, bad_set):
    old, _, bad = bad_set
    with pytest.raises(F.PatchError) as err:
        ds.apply_stream_patch(old, bad[name])
    assert STREAM_BAD[name] in str(err.value)
    if name == "wrong_base":  # found mid-stream, not before the first byte
        assert "unit 0:" not in str(err.value)


def test_wrong_result_digest_is_caught_by_the_check(small):
    old, _, patch = small
    data = bytearray(patch.data)
    data[52:84] = hashlib.sha256(b"something else").digest()
    data[F.HEADER_SIZE - 4 : F.HEADER_SIZE] = zlib.crc32(data[: F.HEADER_SIZE - 4]).to_bytes(
        4, "little"
    )
    with pytest.raises(F.PatchError, match="sha256"):
        ds.apply_stream_patch(old, bytes(data))


def test_corpus_pairs(capsys):
    pairs = [(CORPUS_OLD, CORPUS_NEW), ("pybv11-1f5d945af.bin", "pybv11-1f5d945af-dirty.bin")]
    if not (CORPUS / CORPUS_OLD).is_file():
        pytest.skip("firmware corpus not present")
    for a, b in pairs:
        old, new = (CORPUS / a).read_bytes(), (CORPUS / b).read_bytes()
        patch = ds.make_stream_patch(old, new)
        print(a, patch.summary())
        assert len(patch.data) < 0.13 * len(new)  # bsdiff4 (BSDIFF40, bz2): 12.3 % and 2.4 %


def test_cli_format_2(tmp_path, capsys):
    old, new = small_bodies()
    (tmp_path / "a").write_bytes(old)
    (tmp_path / "b").write_bytes(new)
    argv = ["delta", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "p")]
    assert cli.main([*argv, "--format", "2", "--unit-bytes", "2048"]) == 0
    assert "format 2" in capsys.readouterr().out
    data = (tmp_path / "p").read_bytes()
    assert F.parse_header(data).unit_max <= 2048
    assert ds.apply_stream_patch(old, data) == new
    assert cli.main([*argv, "--format", "2", "--unit-bytes", "100"]) == 2
    err = capsys.readouterr().err
    assert "--unit-bytes must be in" in err and "Traceback" not in err


@pytest.mark.parametrize("fmt", ["1", "2"])
def test_cli_failed_self_check_exits_1(fmt, tmp_path, capsys, monkeypatch):
    # A patch that does not rebuild NEW: one line, exit status 1 (2 stays for usage errors).
    from mpfota_host import delta

    old, new = small_bodies()
    (tmp_path / "a").write_bytes(old)
    (tmp_path / "b").write_bytes(new)
    broken = lambda old, data, *a, **k: new[:-1]  # noqa: E731
    monkeypatch.setattr(delta, "apply_patch", broken)
    monkeypatch.setattr(ds, "apply_stream_patch", broken)
    argv = ["delta", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "p")]
    assert cli.main([*argv, "--format", fmt]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "internal error" in err[-1] and "Traceback" not in "".join(err)
    assert not (tmp_path / "p").exists()


# --- fuzzing ---------------------------------------------------------------------------------


def applies_or_refuses(old: bytes, data: bytes) -> None:
    try:
        out = ds.apply_stream_patch(old, data)
    except F.PatchError:
        return
    assert hashlib.sha256(out).digest() == F.parse_header(data).to_sha256


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_garbage(blob):
    applies_or_refuses(b"\x00" * 100, blob)
    applies_or_refuses(b"\x00" * 100, b"MPFD\x02" + blob)


@FUZZ
@given(st.data())
def test_fuzz_mutated_units_resealed(small, data):
    old, _, patch = small
    buf = bytearray(patch.data)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(F.HEADER_SIZE, len(buf) - 1))
        buf[at] ^= data.draw(st.integers(1, 255))
    applies_or_refuses(old, reseal_units(bytes(buf)))


def reseal_units(data: bytes) -> bytes:
    """Every unit's packed CRC recomputed, so that damage reaches the decoder and the ops."""
    out = bytearray(data)
    at = F.HEADER_SIZE
    while at + F.UNIT_SIZE <= len(out):
        packed = int.from_bytes(out[at : at + 2], "little")
        body = out[at + F.UNIT_SIZE : at + F.UNIT_SIZE + packed]
        out[at + 10 : at + 14] = zlib.crc32(body).to_bytes(4, "little")
        at += F.UNIT_SIZE + packed
    return bytes(out)


@FUZZ
@given(st.integers(0, 2**16), st.integers(1, 6000), st.integers(-50, 50))
def test_fuzz_round_trip(seed, size, amount):
    old, new = realistic_pair("shift", seed, size, random.Random(seed).randrange(size), amount)
    assert ds.apply_stream_patch(old, ds.make_stream_patch(old, new, unit_max=512).data) == new
