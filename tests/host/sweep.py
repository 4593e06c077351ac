"""Power-cut sweeps for the tests: the engine lives in mpfota_host.powercut (also behind
`mpfota sweep`); this module re-exports the low-level runner and holds the bounded sample that
`make test` runs, one update kind at a time, shared by the test modules of the session.

    from sweep import Sweep                      # the low-level runner (test_sweep_core.py)
    from sweep import sweep_results              # fixture: sweep_results(kind) -> [Report, ...]
                                                 #   sweep_results(kind, "torn"): torn cuts
                                                 #   sweep_results(kind, "esp32"): ESP32 board
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mpfota_host import paths, powercut
from mpfota_host.powercut import BOOT_TIMEOUT, MAX_BOOTS, Outcome, Sweep, boot_until_done

__all__ = ["BOOT_TIMEOUT", "MAX_BOOTS", "Outcome", "Sweep", "boot_until_done", "PLAN",
           "PLANS", "REPORT", "SUMMARY", "sweep_results", "problems", "write_report",
           "summary_line", "assert_clean"]

# The bounded sample of `make test`: (layout, sample size or None for every operation, nested
# chains). `mpfota sweep --full` (make sweep) runs every operation of every kind on both
# layouts with 5 nested chains each.
PLAN = {
    "core": [("a", None, 2), ("b", 10, 2)],
    "delta": [("a", None, 2), ("b", 10, 2)],
    "delta-stream": [("a", None, 2), ("b", 10, 2)],
    "scripts": [("a", None, 2), ("b", 10, 2)],
    "combined": [("a", 20, 2), ("b", 10, 2)],
    "rollback": [("a", 20, 2), ("b", 10, 2)],
    "resume": [("a", 20, 2), ("b", 10, 2)],
}
# Torn cuts (the cut operation applied partly) and the ESP32 board module: a few seeded cut
# points of every kind (make sweep: every cut point of both layouts, torn and between).
TORN_PLAN = {kind: [("a", 5, 1)] for kind in powercut.KINDS}
ESP32_PLAN = {kind: [("a", 6, 1)] for kind in powercut.ESP32_KINDS}
PLANS = {"": PLAN, "torn": TORN_PLAN, "esp32": ESP32_PLAN, "esp32.torn": ESP32_PLAN}
SEED = 2026
REPORT = paths.REPO / "build" / "reliability.txt"


class _Sample:
    """The sample's reports per kind, computed once per process (test modules that import the
    fixture each get their own fixture instance; they share this)."""

    def __init__(self) -> None:
        self.cache: dict[str, list[powercut.Report]] = {}
        self.work: Path | None = None
        self.kit: powercut.Kit | None = None
        self.rom = None
        self.apply = True

    def get(self, kind: str, group: str, tmp_path_factory) -> list[powercut.Report]:
        key = f"{group}.{kind}" if group else kind
        if key not in self.cache:
            if self.work is None:
                self.work = tmp_path_factory.mktemp("sweeps")
                self.kit = powercut.Kit(self.work / "kit")
                self.rom = powercut.bootapply_rom(self.work)
                self.apply = self.rom.__enter__()
            reports = []
            board = "esp32" if group.startswith("esp32") else "unix"
            for layout, sample, nested in PLANS[group][kind]:
                scenario = powercut.build(kind, layout, self.kit, board)
                reports.append(powercut.run_scenario(
                    scenario, self.work / f"{key}-{layout}", sample=sample, nested=nested,
                    seed=SEED, apply=self.apply, torn=group.endswith("torn")))
            self.cache[key] = reports
        return self.cache[key]

    def close(self) -> None:
        if self.kit is not None:
            self.kit.close()
        if self.rom is not None:
            self.rom.__exit__(None, None, None)
            self.rom = None


_SAMPLE = _Sample()


@pytest.fixture(scope="session")
def sweep_results(tmp_path_factory):
    """sweep_results(kind, group="") -> the reports of the kind's sample in a group of PLANS
    (run once per session)."""
    try:
        yield lambda kind, group="": _SAMPLE.get(kind, group, tmp_path_factory)
    finally:
        _SAMPLE.close()


def problems(reports: list[powercut.Report]) -> list[tuple[str, str, str]]:
    """(where, class, message) of every problem of every trial."""
    out = []
    for rep in reports:
        for t in rep.trials:
            for c in t.landed:
                out += [(f"{rep.label} cut {c.where}", k, v) for k, v in c.problems.items()]
            tail = " | ".join(t.output.splitlines()[-6:])  # why, when the end is wrong
            out += [(f"{rep.label} cuts {t.cuts} end", k, f"{v} (last lines: {tail})")
                    for k, v in t.final.items()]
    return out


def assert_clean(found: list[tuple[str, str, str]]) -> None:
    """No problem at any cut point (the first 20 are shown)."""
    assert not found, "\n".join(f"{w}: {c}: {m}" for w, c, m in found[:20])


# The one line the session prints about the report it wrote (tests/conftest.py prints it in
# pytest's terminal summary, so that `make test` still ends on pytest's own last line).
SUMMARY: list[str] = []


def write_report(reports: list[powercut.Report], path: Path = REPORT) -> list[str]:
    """The reliability lines (totals of each group, then per scenario) into
    build/reliability.txt; the one-line summary into SUMMARY."""
    lines = powercut.summary_lines(reports)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    SUMMARY[:] = [summary_line(reports, path)]
    return lines


def summary_line(reports: list[powercut.Report], path: Path = REPORT) -> str:
    """'reliability: N power cuts (between operations, torn, ESP32 ...): 0 unbootable, ...'."""
    f = powercut.total(reports).figures()
    groups = ", ".join(
        f"{powercut.total(r for r in reports if r.group == g).figures()['cut_points']} "
        f"{g or 'between operations'}"
        for g in powercut.GROUPS if any(r.group == g for r in reports))
    shown = path.relative_to(paths.REPO) if path.is_relative_to(paths.REPO) else path
    return (f"reliability: {f['cut_points']} power cuts ({groups}): {f['unbootable']} "
            f"unbootable, {f['user_files_lost']} user files lost, {f['converged']} converged; "
            f"every figure in {shown}")
