"""Power cuts during a script-set update (staging the package, the boot-time swap, the
confirmation): every boot sees the whole old set or the whole new set, never a mix (checked by
the probe on the live files and by the sets' own main.py); the user's files, including the kept
config.json, are intact; the update completes once powered on again. Every flash operation on
layout a, a sample on layout b, nested cuts (mpfota_host.powercut, docs/reliability.md)."""

from __future__ import annotations

import pytest
from sweep import assert_clean, problems, sweep_results  # noqa: F401


@pytest.mark.slow
def test_power_cut_at_every_flash_operation_of_a_script_update(sweep_results):  # noqa: F811
    reports = sweep_results("scripts")
    every = reports[0]
    assert every.ops > 50, f"the update should take many flash operations, saw {every.ops}"
    singles = {t.cuts[0] for t in every.trials if len(t.cuts) == 1}
    assert singles == set(range(1, every.ops + 1))
    out = "".join(t.output for rep in reports for t in rep.trials)
    # cuts land in every phase: staging, the swap, the confirmation
    assert "finishing an interrupted script swap" in out
    assert "rolled back" in out
    assert "MIX" not in out
    assert_clean(problems(reports))
