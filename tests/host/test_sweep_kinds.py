"""Power cuts during every kind of update (the bounded sample of `make test`; `make sweep` runs
every cut point): after each cut a copy of the board boots a whole old or new core and script
set with the user's files intact and consistent records, and powering on again completes the
update. docs/reliability.md."""

from __future__ import annotations

import pytest
from mpfota_host import powercut
from sweep import (  # noqa: F401
    PLAN,
    PLANS,
    REPORT,
    assert_clean,
    problems,
    sweep_results,
    write_report,
)

# Words in the output that show a kind exercised what it is about (in at least one trial).
EVIDENCE = {
    "core": "boot slot is now",
    "rollback": "was not confirmed: rolled back",
    "resume": "resuming at",
    "combined": "needs core",
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["core", "combined", "rollback", "resume"])
def test_power_cut_sweep(kind, sweep_results):  # noqa: F811
    reports = sweep_results(kind)
    for rep in reports:
        assert rep.ops > 20, f"{rep.label}: the update should take many flash operations"
        f = rep.figures()
        assert f["cut_points"] >= len(rep.trials) - f["nested_trials"], rep.label
        assert f["nested_trials"] >= 1
        out = "".join(t.output for t in rep.trials)
        assert EVIDENCE[kind] in out, f"{rep.label}: no trial shows {EVIDENCE[kind]!r}"
    every = [r for r, (_, sample, _) in zip(reports, PLAN[kind], strict=True) if sample is None]
    for rep in every:
        assert {t.cuts[0] for t in rep.trials if len(t.cuts) == 1} == set(range(1, rep.ops + 1))
    assert_clean(problems(reports))


def test_reliability_report(sweep_results):  # noqa: F811
    """Every kind's sample in every group (cuts between operations, torn cuts, the ESP32
    board), added up: the figures of docs/reliability.md, written to build/reliability.txt
    (pytest's terminal summary shows one line of them, tests/conftest.py)."""
    reports = [rep for group, plan in PLANS.items() for kind in plan
               for rep in sweep_results(kind, group)]
    write_report(reports)
    text = REPORT.read_text()
    for group in PLANS:
        mine = [r for r in reports if r.group == group]
        f = powercut.total(mine).figures()
        name = "reliability" + (f".{group}" if group else "")
        assert f"{name}.cut_points: {f['cut_points']}\n" in text, name
        assert f["cut_points"] > (300 if group == "" else 15), name
        assert f["unbootable"] == 0, f"{name}: a power cut left a board with nothing bootable"
        assert f["user_files_lost"] == 0, f"{name}: a power cut lost or changed a user file"
        assert (f["mixed"], f["inconsistent"]) == (0, 0), name
        assert f["converged"] == f["cut_points"], name
    assert text.startswith("reliability.cut_points: ")
    assert {r.label for r in reports if not r.group} == {
        f"{k}.{lay}" for k in PLAN for lay, _, _ in PLAN[k]}
