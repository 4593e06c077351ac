"""Power cuts during a delta update (every flash operation on layout a, a sample on layout b,
nested cuts): the running slot is only read, so the next boot applies a format-1 patch again
from the start, and a streamed (format-2) one from its last checkpoint; the board always boots
the old or the new core and ends on the new one. The engine and its checks:
mpfota_host.powercut, docs/reliability.md."""

from __future__ import annotations

import pytest
from sweep import assert_clean, problems, sweep_results  # noqa: F401


@pytest.mark.slow
def test_power_cut_at_every_flash_operation_of_a_delta_update(sweep_results):  # noqa: F811
    reports = sweep_results("delta")
    every = reports[0]
    assert every.ops > 20, f"the update should take many flash operations, saw {every.ops}"
    singles = {t.cuts[0] for t in every.trials if len(t.cuts) == 1}
    assert singles == set(range(1, every.ops + 1))
    out = "".join(t.output for rep in reports for t in rep.trials)
    assert "delta: base ok" in out and "SWEEP DONE 2.0.0" in out
    assert_clean(problems(reports))


@pytest.mark.slow
def test_power_cut_at_every_flash_operation_of_a_streamed_delta_update(sweep_results):  # noqa: F811
    reports = sweep_results("delta-stream")
    every = reports[0]
    singles = {t.cuts[0] for t in every.trials if len(t.cuts) == 1}
    assert singles == set(range(1, every.ops + 1))
    out = "".join(t.output for rep in reports for t in rep.trials)
    assert "delta: resuming at patch byte" in out, "some cut must resume from a checkpoint"
    assert "SWEEP DONE 2.0.0" in out
    assert_clean(problems(reports))
