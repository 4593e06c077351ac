"""Power-cut sweeps on the virtual board.

A scenario is a board directory in its starting state plus an app (installed as /main.py at
the first boot, or None when the start state already holds it) that drives an update to
completion over several boots and exits 0 when the board runs the target.
`dry_run` counts the flash operations of every boot; `cut_at(k)` replays the scenario on a fresh
copy with the power cut after global operation k, then powers the board on again until the app
finishes, and reports what it finds.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from mpfota_host import vboard

MAX_BOOTS = 12
BOOT_TIMEOUT = 60


@dataclass
class Outcome:
    cut: int
    codes: list[int] = field(default_factory=list)
    output: str = ""

    @property
    def unbootable(self) -> bool:
        return vboard.EXIT_UNBOOTABLE in self.codes

    @property
    def converged(self) -> bool:
        return bool(self.codes) and self.codes[-1] == 0


def _ops(board: Path) -> int:
    return json.loads((board / "boot.json").read_text())["ops"]


def boot_until_done(board: Path, outcome: Outcome, app: Path | None = None) -> None:
    for i in range(MAX_BOOTS):
        res = vboard.boot(board, app=app if i == 0 else None, timeout=BOOT_TIMEOUT,
                          cause="power_cut" if i == 0 and outcome.cut else "hard")
        outcome.codes.append(res.code)
        outcome.output += res.text
        if res.code not in vboard.REBOOT_CAUSES:
            return


class Sweep:
    def __init__(self, start: Path, app: Path | None, work: Path) -> None:
        self.start = start
        self.app = app
        self.work = work
        self.per_boot: list[int] = []

    def fresh(self, name: str) -> Path:
        d = self.work / name
        if d.exists():
            shutil.rmtree(d)
        shutil.copytree(self.start, d)
        return d

    def dry_run(self) -> Outcome:
        board = self.fresh("dry")
        out = Outcome(0)
        for i in range(MAX_BOOTS):
            res = vboard.boot(board, app=self.app if i == 0 else None, timeout=BOOT_TIMEOUT)
            out.codes.append(res.code)
            out.output += res.text
            self.per_boot.append(_ops(board))
            if res.code not in vboard.REBOOT_CAUSES:
                break
        return out

    @property
    def total_ops(self) -> int:
        return sum(self.per_boot)

    def cut_at(self, k: int) -> tuple[Outcome, Path]:
        """Cut after global operation k (1-based), then power on until the app finishes."""
        board = self.fresh(f"cut{k}")
        out = Outcome(k)
        before = 0
        for i, ops in enumerate(self.per_boot):
            app = self.app if i == 0 else None
            if k <= before + ops:
                res = vboard.boot(board, app=app, cut_after=k - before, timeout=BOOT_TIMEOUT)
                out.codes.append(res.code)
                out.output += res.text
                break
            res = vboard.boot(board, app=app, timeout=BOOT_TIMEOUT)
            out.codes.append(res.code)
            before += ops
        boot_until_done(board, out)
        return out, board
