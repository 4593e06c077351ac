"""The delta benchmark yields every figure `make bench` prints, from one run (values are
reported, not judged, except: format 1 stays smaller than bsdiff4's and detools' patches,
format 2 smaller than bsdiff4's, and the streamed apply stores nothing on the filesystem)."""

from __future__ import annotations

import pytest
from fixtures_delta import corpus_images
from mpfota_host import deltabench


@pytest.mark.slow
def test_delta_figures():
    corpus_images()  # skips when the corpus is not there
    figures = dict(deltabench.delta_figures(repeat=1))
    for name in (
        "delta.patch_bytes",
        "delta.v1_patch_bytes",
        "delta.pyboard_patch_bytes",
        "delta.bsdiff4_bytes",
        "delta.detools_bytes",
        "delta.apply_throughput_ratio",
        "delta.min_heap_kb",
        "delta.baseline_heap_kb",
        "delta.working_heap_kb",
        "delta.http_heap_kb",
        "delta.romfs_working_heap_kb",
    ):
        assert float(figures[name]) > 0, (name, figures)
    assert int(figures["delta.v1_patch_bytes"]) < int(figures["delta.detools_bytes"])
    assert int(figures["delta.patch_bytes"]) < int(figures["delta.bsdiff4_bytes"])
    assert figures["delta.staged_bytes"] == "0"
    assert int(figures["delta.min_heap_kb"]) > int(figures["delta.baseline_heap_kb"])
    assert int(figures["delta.working_heap_kb"]) > int(figures["delta.http_heap_kb"])
    # With the modules in ROMFS the apply needs no more than with .mpy files in the heap.
    assert int(figures["delta.romfs_working_heap_kb"]) <= int(figures["delta.working_heap_kb"])
