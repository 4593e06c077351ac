"""`mpfota bench` prints its figures as `name: value` lines on stdout and announces each phase
on stderr (values are not judged here: speed and memory targets belong to the benchmark, not
to timed tests)."""

import subprocess
import sys

import pytest
from mpfota_host import paths

PEER = paths.REPO.parent / "shared" / "peers" / "glenn20-esp32-ota"


def _bench(*args, check=True):
    return subprocess.run(
        [sys.executable, "-m", "mpfota_host.cli", "bench", "--repeat", "1", "--no-delta", *args],
        capture_output=True, text=True, timeout=300, cwd=paths.REPO, check=check,
    )


def _figures(out):
    lines = out.splitlines()
    assert all(": " in line for line in lines), out  # nothing but figures on stdout
    return dict(line.split(": ", 1) for line in lines)


def test_bench_prints_download_and_code_figures():
    proc = _bench("--sizes", "1MB")
    figures = _figures(proc.stdout)
    for name in ("download.throughput_ratio.1MB", "download.min_heap_kb.1MB",
                 "download.baseline_heap_kb", "download.working_heap_kb.1MB",
                 "download.cpu_ratio.1MB", "download.code_kb"):
        assert name in figures, proc.stdout
        assert float(figures[name]) > 0
    assert int(figures["download.min_heap_kb.1MB"]) > int(figures["download.baseline_heap_kb"])
    assert int(figures["download.buffers_heap_kb"]) >= 5  # 5 KiB of buffers, and the holes
    # Modules in ROMFS: their bytecode leaves the heap, the download still completes.
    assert 0 < int(figures["download.romfs_min_heap_kb.1MB"]) < int(
        figures["download.min_heap_kb.1MB"])
    # The code figure counts device modules only: libfota2 and the HTTP client, not the board
    # (board, bootrom), lsys (an app without it) or MicroPython's frozen asyncio.
    modules = {k.split(".", 2)[2] for k in figures if k.startswith("download.module_kb.")}
    assert {"libfota2", "mpfota.http", "mpfota.download"} <= modules, modules
    assert not modules & {"board", "bootrom", "lsys", "lnet", "asyncio", "asyncio.core"}
    assert int(figures["download.modules"]) == len(modules)
    assert figures["download.slot_reads"] == "1", "one read feeds read-back and image check"
    total = sum(float(figures[f"download.module_kb.{m}"]) for m in modules)
    assert abs(total - float(figures["download.code_kb"])) < 0.1 * len(modules)
    assert "bench: download 1MB" in proc.stderr  # each phase is announced as it starts
    # Runs that die of a small heap while bisecting reset their connection: no traceback.
    assert "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.skipif(not PEER.is_dir(), reason="glenn20's esp32-ota is not beside the repo")
def test_bench_peer_prints_the_comparison():
    proc = _bench("--sizes", "", "--peer", str(PEER))
    figures = _figures(proc.stdout)
    assert not any(k.startswith("download.") for k in figures)  # --sizes '' skips them
    assert float(figures["peer.speed_ratio"]) > 0 and float(figures["peer.wall_ratio"]) > 0
    for name in ("mpfota", "glenn20"):
        assert int(figures[f"peer.{name}_ms"]) > 0 and int(figures[f"peer.{name}_cpu_ms"]) > 0
        assert 0 < int(figures[f"peer.{name}_heap_above_board_kb"]) < 1024
    assert int(figures["peer.board_heap_kb"]) > 0
    # In ROMFS the bytecode stays out of the heap: both libraries need less of it.
    for name in ("mpfota", "glenn20"):
        rom = int(figures[f"peer.{name}_romfs_heap_above_board_kb"])
        assert 0 < rom < int(figures[f"peer.{name}_heap_above_board_kb"])
    # The board's modules compiled at import time need more heap than compiled ones, and the
    # update then fits (partly) into that peak: less above the board than with compiled ones.
    assert int(figures["peer.board_from_sources_heap_kb"]) > int(figures["peer.board_heap_kb"])
    for name in ("mpfota", "glenn20"):
        from_sources = int(figures[f"peer.{name}_heap_above_board_from_sources_kb"])
        assert 0 <= from_sources < int(figures[f"peer.{name}_heap_above_board_kb"])
    assert "bench: peer:" in proc.stderr


def test_bench_peer_without_the_package_is_one_clear_line(tmp_path):
    proc = _bench("--sizes", "", "--peer", str(tmp_path), check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "no glenn20 esp32-ota package" in proc.stderr
    assert proc.stdout == ""
