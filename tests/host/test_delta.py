"""The delta generator and the patch format under CPython: round trips, sizes, the CLI, every
class of bad patch, and hypothesis fuzzing of the parser and apply loop (the device's own
deltafmt module, fed by zlib)."""

from __future__ import annotations

import hashlib
import random
import zlib

import pytest
from fixtures_delta import BAD, CORPUS, CORPUS_NEW, CORPUS_OLD, damaged, small_bodies
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpfota_host import cli, delta, deltacodec, image

F = delta.fmt()
FUZZ = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def roundtrip(old: bytes, new: bytes) -> bytes:
    patch = delta.make_patch(old, new)
    assert delta.apply_patch(old, patch.data) == new
    return patch.data


def test_header_fields_and_layout():
    old, new = small_bodies()
    data = roundtrip(old, new)
    h = F.parse_header(data)
    assert data[:4] == b"MPFD" and data[4] == 1 and F.HEADER_SIZE == 140
    assert (h.from_size, h.to_size) == (len(old), len(new))
    assert h.from_sha256 == hashlib.sha256(old).digest()
    assert h.to_sha256 == hashlib.sha256(new).digest()
    assert h.total_size == len(data)
    assert zlib.crc32(data[F.HEADER_SIZE :]) == h.body_crc
    assert all(F.MIN_WBITS <= w <= delta.DEFAULT_MAX_WBITS for w, _, _ in h.streams)
    assert F.pack_header(h) == data[: F.HEADER_SIZE]


@pytest.mark.parametrize(
    "case",
    ["identical", "unrelated", "one_byte", "grow", "shrink", "long_changes", "zeros"],
)
def test_round_trips(case):
    rng = random.Random(case)
    base = rng.randbytes(20_000)
    old, new = {
        "identical": (base, base),
        "unrelated": (base, rng.randbytes(9_000)),
        "one_byte": (b"\x01", b"\x02"),
        "grow": (base[:3000], base[:3000] * 5 + b"tail"),
        "shrink": (base, base[5000:6000]),
        # nonzero diff runs longer than 3 bytes (the escape in the runs stream)
        "long_changes": (
            base,
            bytes(b ^ 0x55 if 100 <= i % 1000 < 140 else b for i, b in enumerate(base)),
        ),
        "zeros": (bytes(30_000), bytes(10_000) + b"\x01" * 7 + bytes(20_000)),
    }[case]
    roundtrip(old, new)


def test_window_choice_and_limit():
    old, new = small_bodies()
    data = delta.make_patch(old, new, max_wbits=9).data
    assert all(w == 9 for w, _, _ in F.parse_header(data).streams)
    assert delta.apply_patch(old, data) == new


def test_corpus_patch_beats_detools_lzma():
    old_path, new_path = CORPUS / CORPUS_OLD, CORPUS / CORPUS_NEW
    if not old_path.exists():
        pytest.skip("firmware corpus not present")
    old, new = old_path.read_bytes(), new_path.read_bytes()
    patch = delta.make_patch(old, new)
    print(patch.summary())
    assert len(patch.data) < 71_803  # detools bsdiff + LZMA (8 MiB dictionary)
    assert len(patch.data) < 75_985  # bsdiff4 BSDIFF40 (bz2)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_patches_are_refused(name, delta_small):
    bad = (delta_small.dir / f"bad-{name}.bin").read_bytes()
    with pytest.raises(F.PatchError) as err:
        delta.apply_patch(delta_small.old, bad)
    assert BAD[name] in str(err.value)


# --- the command line ------------------------------------------------------------------------


def test_cli_makes_a_checked_patch(tmp_path, capsys):
    old, new = small_bodies()
    (tmp_path / "a.img").write_bytes(image.make_image(old, "1.0.0"))
    (tmp_path / "b.img").write_bytes(image.make_image(new, "2.0.0"))
    out = tmp_path / "p.bin"
    assert (
        cli.main(
            [
                "delta",
                str(tmp_path / "a.img"),
                str(tmp_path / "b.img"),
                "-o",
                str(out),
                "--wbits",
                "10",
            ]
        )
        == 0
    )
    text = capsys.readouterr()
    assert "core image 1.0.0" in text.err and "triples" in text.out
    data = out.read_bytes()
    assert delta.apply_patch(image.make_image(old, "1.0.0"), data) == image.make_image(new, "2.0.0")


@pytest.mark.parametrize(
    "setup, words, status",
    [
        ("missing", "cannot read", 2),
        ("mixed", "give two core images or two raw binaries", 2),
        ("broken_image", "does not match the SHA-256", 2),
        ("empty", "is empty", 1),  # a failed generation, not a usage error
        ("wbits", "--wbits must be in 9..15", 2),
    ],
)
def test_cli_errors(setup, words, status, tmp_path, capsys):
    old, new = small_bodies()
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(image.make_image(old, "1.0.0"))
    b.write_bytes(image.make_image(new, "2.0.0"))
    extra: list[str] = []
    if setup == "missing":
        b = tmp_path / "nope"
    elif setup == "mixed":
        b.write_bytes(new)
    elif setup == "broken_image":
        data = bytearray(a.read_bytes())
        data[-1] ^= 1
        a.write_bytes(bytes(data))
    elif setup == "empty":
        a.write_bytes(b"")
    elif setup == "wbits":
        extra = ["--wbits", "16"]
    code = cli.main(["delta", str(a), str(b), "-o", str(tmp_path / "p"), *extra])
    err = capsys.readouterr().err
    assert code == status and words in err
    assert "Traceback" not in err and err.count("error:") == 1
    assert not (tmp_path / "p").exists()


# --- fuzzing ---------------------------------------------------------------------------------


def applies_or_refuses(old: bytes, data: bytes, new: bytes | None = None) -> None:
    """A patch either rebuilds exactly its announced image or raises PatchError: nothing else."""
    try:
        out = delta.apply_patch(old, data)
    except F.PatchError:
        return
    assert hashlib.sha256(out).digest() == F.parse_header(data).to_sha256
    if new is not None:
        assert out == new


@pytest.fixture(scope="module")
def small():
    old, new = small_bodies()
    return old, new, delta.make_patch(old, new).data


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_garbage_is_refused(blob):
    for data in (
        blob,
        F.MAGIC + blob,
        delta.reseal(F.MAGIC + b"\x01\x04" + blob) if len(blob) >= F.HEADER_SIZE else blob,
    ):
        with pytest.raises(F.PatchError):
            F.parse_header(data) if len(data) < F.HEADER_SIZE else delta.apply_patch(b"x", data)


@FUZZ
@given(st.data())
def test_fuzz_mutated_patches(small, data):
    old, new, patch = small
    buf = bytearray(patch)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        at = data.draw(st.integers(0, len(buf) - 1))
        if kind == "flip":
            buf[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set":
            buf[at] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del buf[at : at + data.draw(st.integers(1, 64))]
        else:
            buf[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    # Sealed again, so that the CRCs pass and the mutation reaches the apply loop.
    sealed = delta.reseal(bytes(buf)) if len(buf) >= F.HEADER_SIZE else bytes(buf)
    applies_or_refuses(old, bytes(buf), new)
    applies_or_refuses(old, sealed)


@FUZZ
@given(st.data())
def test_fuzz_structured_streams(data):
    # Well-formed streams with arbitrary content, mostly consistent with each other so that
    # the apply loop runs deep: every count, seek and run is still checked.
    old = bytes(range(256)) * 16
    triples = data.draw(
        st.lists(
            st.tuples(st.integers(0, 600), st.integers(0, 600), st.integers(-3000, 3000)),
            max_size=8,
        )
    )
    total_x = sum(t[0] for t in triples)
    total_y = sum(t[1] for t in triples)
    fuzz = st.integers(-3, 3) if data.draw(st.booleans()) else st.just(0)
    to_size = max(1, total_x + total_y + data.draw(fuzz))
    n_extra = max(0, total_y + data.draw(fuzz))
    extra = data.draw(st.binary(min_size=n_extra, max_size=n_extra))
    runs = bytearray()
    nonzero = bytearray()
    for zeros, n in data.draw(
        st.lists(st.tuples(st.integers(0, 400), st.integers(1, 6)), max_size=10)
    ):
        deltacodec.put_varint(zeros << 2 | n if n <= 3 else zeros << 2, runs)
        if n > 3:
            deltacodec.put_varint(n - 4, runs)
        nonzero += bytes([data.draw(st.integers(1, 255))]) * n
    if data.draw(st.booleans()):
        runs += data.draw(st.binary(max_size=6))
    raws = [delta.encode_ctrl(triples), bytes(runs), bytes(nonzero), extra]
    applies_or_refuses(old, delta.assemble(raws, len(triples), old, b"\0" * to_size))


@FUZZ
@given(
    st.binary(min_size=1, max_size=2000),
    st.lists(
        st.tuples(st.integers(0, 2000), st.integers(0, 40), st.binary(max_size=40)), max_size=6
    ),
)
def test_fuzz_round_trip(old, edits):
    new = bytearray(old)
    for at, cut, insert in edits:
        at = min(at, len(new))
        new[at : at + cut] = insert
    if not new:
        new = bytearray(b"\0")
    roundtrip(old, bytes(new))


def test_damaged_variants_cover_every_class(small):
    old, new, patch = small
    assert set(damaged(old, new, patch)) == set(BAD)
