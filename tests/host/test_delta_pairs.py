"""The generators on pairs shaped like real updates: hypothesis builds them (code shifted
early in the image with later pointers moved, appended data, identical images, a shorter new
image, long 0xFF runs) and every patch, in both formats, is round-tripped on the device's own
applier under CPython; the pyboard rebuild pair from the corpus is the regression test for a
generator that once failed its own check."""

from __future__ import annotations

import random

import pytest
from fixtures_delta import CORPUS, PAIR_KINDS, realistic_pair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpfota_host import cli, delta, deltastream

PYBOARD = ("pybv11-1f5d945af.bin", "pybv11-1f5d945af-dirty.bin")
PAIRS = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def pair_args():
    return st.tuples(
        st.sampled_from(PAIR_KINDS),
        st.integers(0, 2**16),
        st.integers(1, 24_000),
        st.integers(0, 2_000),
        st.integers(-300, 300).filter(bool),
    )


@PAIRS
@given(pair_args())
def test_realistic_pairs_round_trip(args):
    kind, seed, size, at, amount = args
    old, new = realistic_pair(kind, seed, size, min(at, size - 1), amount)
    # The generators apply each patch with the device's code and compare with NEW themselves;
    # applied again here so that the test does not rest on that internal check alone.
    patch = delta.make_patch(old, new)
    assert delta.apply_patch(old, patch.data) == new
    streamed = deltastream.make_stream_patch(old, new, unit_max=1024)
    assert deltastream.apply_stream_patch(old, streamed.data, feed=997) == new


@pytest.mark.parametrize("kind", PAIR_KINDS)
def test_each_kind_changes_what_it_says(kind):
    old, new = realistic_pair(kind, 7, 8_000, 1_000, 12)
    if kind == "identical":
        assert new == old
    elif kind == "append":
        assert new[: len(old)] == old and len(new) > len(old)
    elif kind == "shorter":
        assert len(new) < len(old)
    else:
        assert len(new) == len(old) + 12
        assert new[:1000] != old[:1000]  # pointers before the insertion moved too
    if kind == "erased_runs":
        assert b"\xff" * 256 in old


def test_empty_images_are_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "one").write_bytes(b"\x01")
    for a, b in (("empty", "one"), ("one", "empty")):
        code = cli.main(["delta", str(tmp_path / a), str(tmp_path / b), "-o", str(tmp_path / "p")])
        err = capsys.readouterr().err
        assert code == 1 and "is empty" in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1


def test_pyboard_rebuild_pair(tmp_path, capsys):
    old_path, new_path = CORPUS / PYBOARD[0], CORPUS / PYBOARD[1]
    if not old_path.is_file():
        pytest.skip("firmware corpus not present")
    out = tmp_path / "p"
    assert cli.main(["delta", str(old_path), str(new_path), "-o", str(out)]) == 0
    old, new = old_path.read_bytes(), new_path.read_bytes()
    data = out.read_bytes()
    assert delta.apply_patch(old, data) == new
    assert len(data) < 0.05 * len(new)  # a small change must stay a small patch
    assert "warning" not in capsys.readouterr().err
    assert cli.main(["delta", str(old_path), str(new_path), "-o", str(out), "--format", "2"]) == 0
    data = out.read_bytes()
    assert deltastream.apply_stream_patch(old, data) == new
    assert len(data) < 0.05 * len(new)


def test_warns_when_a_full_image_is_as_small(tmp_path, capsys):
    old, _ = realistic_pair("identical", 3, 4_000, 0, 1)
    (tmp_path / "a").write_bytes(old)
    (tmp_path / "b").write_bytes(random.Random(5).randbytes(4_000))  # nothing in common
    argv = ["delta", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "p")]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "warning: the patch is" in err and "full image" in err
