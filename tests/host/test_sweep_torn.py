"""Torn power cuts (the interrupted program or erase applied only partly: a prefix, a random
half, half-programmed bytes; part of a sector left as it was or as garbage) during every kind of
update, and power cuts on the ESP32 board module (boards/esp32 on tests/fakes/esp32), between
operations and torn. The bounded sample of `make test`; `make sweep` runs every cut point.
docs/reliability.md."""

from __future__ import annotations

import pytest
from mpfota_host import powercut
from sweep import ESP32_PLAN, TORN_PLAN, assert_clean, problems, sweep_results  # noqa: F401


def _torn_models(reports: list[powercut.Report]) -> set[str]:
    return {s.split(":")[0] for rep in reports for t in rep.trials for s in t.torn if s}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(TORN_PLAN))
def test_torn_power_cut_sweep(kind, sweep_results):  # noqa: F811
    reports = sweep_results(kind, "torn")
    for rep in reports:
        assert rep.group == "torn" and rep.label.startswith("torn.")
        assert rep.figures()["cut_points"] >= 4, rep.label
        # every cut really was torn, and the trials took the power away mid-update
        assert all(t.torn and all(t.torn) for t in rep.trials)
        assert all("bootrom: power cut" in t.output for t in rep.trials)
    assert len(_torn_models(reports)) >= 2, "the models take turns over the cut points"
    assert_clean(problems(reports))


def test_torn_sweep_uses_every_model(sweep_results):  # noqa: F811
    reports = [rep for kind in TORN_PLAN for rep in sweep_results(kind, "torn")]
    assert _torn_models(reports) == set(powercut.TORN_MODELS)


@pytest.mark.slow
@pytest.mark.parametrize("group", ["esp32", "esp32.torn"])
@pytest.mark.parametrize("kind", sorted(ESP32_PLAN))
def test_esp32_power_cut_sweep(kind, group, sweep_results):  # noqa: F811
    reports = sweep_results(kind, group)
    out = "".join(t.output for rep in reports for t in rep.trials)
    # the ESP32 board module ran: ESP-IDF app images in ota_0 / ota_1
    assert "boot slot is now ota_1" in out
    for rep in reports:
        assert rep.group == group and rep.ops > 20, rep.label
        assert all(bool(any(t.torn)) == group.endswith("torn") for t in rep.trials)
    assert_clean(problems(reports))
