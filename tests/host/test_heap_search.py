"""The benchmarks' smallest-heap search (devicerun.smallest_heap_kb): bisection, then the sizes
above the result tried, since near its smallest heap a run is not monotonic in the size."""

from __future__ import annotations

import pytest
from mpfota_host.devicerun import STABLE_KB, smallest_heap_kb


def _outcomes(fails: set[int], threshold: int):
    tried: list[int] = []

    def completes(kb: int) -> bool:
        tried.append(kb)
        return kb >= threshold and kb not in fails

    return completes, tried


def test_a_monotonic_run_gives_its_threshold_with_a_few_runs_more_than_bisection():
    completes, tried = _outcomes(set(), 92)
    assert smallest_heap_kb(completes, 8, 1024) == 92
    assert len(tried) <= 1 + 10 + STABLE_KB  # high, bisection of 1016 sizes, the window


def test_a_failure_just_above_the_bisected_size_moves_the_figure_past_it():
    # As measured on 2026-12-06: 92 KiB completed, 93 did not, 94 and above did.
    completes, tried = _outcomes({93}, 92)
    assert smallest_heap_kb(completes, 8, 1024) == 94
    assert {93, 95, 96, 97, 98} <= set(tried)  # the failure, and the window above 94


def test_every_failure_within_the_window_counts():
    completes, _ = _outcomes({93, 96, 97}, 92)
    assert smallest_heap_kb(completes, 8, 1024) == 98


def test_a_failure_beyond_the_window_is_not_seen():
    completes, _ = _outcomes({92 + STABLE_KB + 1}, 92)
    assert smallest_heap_kb(completes, 8, 1024) == 92


def test_the_window_stops_at_the_upper_bound():
    completes, tried = _outcomes({63}, 62)
    assert smallest_heap_kb(completes, 8, 64) == 64
    assert max(tried) == 64


def test_a_run_that_never_completes_is_an_error():
    completes, _ = _outcomes(set(), 2000)
    with pytest.raises(ValueError, match="1024"):
        smallest_heap_kb(completes, 8, 1024)
