"""`mpfota bench` prints its figures as `name: value` lines (values are not judged here:
speed and memory targets belong to the benchmark, not to timed tests)."""

import subprocess
import sys

from mpfota_host import paths


def test_bench_prints_download_figures():
    out = subprocess.run(
        [sys.executable, "-m", "mpfota_host.cli", "bench", "--sizes", "1MB", "--repeat", "1",
         "--no-delta"],
        capture_output=True, text=True, timeout=300, cwd=paths.REPO, check=True,
    ).stdout
    figures = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    for name in ("download.throughput_ratio.1MB", "download.min_heap_kb.1MB",
                 "download.baseline_heap_kb", "download.working_heap_kb.1MB"):
        assert name in figures, out
        assert float(figures[name]) > 0
    assert int(figures["download.min_heap_kb.1MB"]) > int(figures["download.baseline_heap_kb"])
