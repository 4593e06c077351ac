"""Power cut after every flash operation of a delta update: the running slot is only read, so
the next boot applies the patch again from the start; the board never becomes unbootable and
always ends on the new core."""

from __future__ import annotations

import base64

import pytest
from mpfota_host import vboard
from sweep import Sweep

UPDATE_APP = """
import board
from mpfota import confirm, delta
if board.core_version() == "2.0.0":
    if confirm.status() == "pending":
        confirm.confirm()
    print("delta-sweep: done", confirm.status())
else:
    delta.apply(version="2.0.0")
    board.reset()
"""

SEED_APP = """
import os, binascii
os.mkdir("/.mpfota")
with open("/.mpfota/patch.bin", "wb") as f:
    f.write(binascii.a2b_base64(PATCH))
with open("/main.py", "w") as f:
    f.write(UPDATE_APP)
"""


@pytest.mark.slow
def test_power_cut_at_every_flash_operation_of_a_delta_update(
    delta_small, delta_small_board, tmp_path
):
    seed = tmp_path / "seed.py"
    patch = base64.b64encode(delta_small.patch.data).decode()
    seed.write_text(f"PATCH = {patch!r}\nUPDATE_APP = {UPDATE_APP!r}\n" + SEED_APP)
    res = vboard.boot(delta_small_board.path, app=seed, timeout=30)
    assert res.code == 0, res.text
    sweep = Sweep(delta_small_board.path, None, tmp_path / "runs")
    dry = sweep.dry_run()
    assert dry.converged and "delta-sweep: done valid" in dry.output, dry.output
    n = sweep.total_ops
    assert n > 20, f"the update should take many flash operations, saw {n}"
    bad = []
    for k in range(1, n + 1):
        out, _ = sweep.cut_at(k)
        if out.unbootable or not out.converged or "delta-sweep: done valid" not in out.output:
            bad.append((k, out.codes))
    assert not bad, f"cuts that did not end on the new core: {bad}"
