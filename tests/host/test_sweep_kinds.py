"""Power cuts during every kind of update (the bounded sample of `make test`; `make sweep` runs
every cut point): after each cut a copy of the board boots a whole old or new core and script
set with the user's files intact and consistent records, and powering on again completes the
update. docs/reliability.md."""

from __future__ import annotations

import pytest
from mpfota_host import powercut
from sweep import PLAN, REPORT, assert_clean, problems, sweep_results, write_report  # noqa: F401

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
    """Every kind's sample, added up: the figures of docs/reliability.md, written to
    build/reliability.txt (and printed with pytest -s)."""
    reports = [rep for kind in powercut.KINDS for rep in sweep_results(kind)]
    lines = write_report(reports)
    print("\n".join(lines))
    f = powercut.total(reports).figures()
    assert REPORT.read_text().startswith(f"reliability.cut_points: {f['cut_points']}\n")
    assert f["cut_points"] > 300
    assert f["unbootable"] == 0, "a power cut left a board with nothing bootable"
    assert f["user_files_lost"] == 0, "a power cut lost or changed a user file"
    assert (f["mixed"], f["inconsistent"]) == (0, 0)
    assert f["converged"] == f["cut_points"]
    assert {r.label for r in reports} == {f"{k}.{lay}" for k in PLAN for lay, _, _ in PLAN[k]}
