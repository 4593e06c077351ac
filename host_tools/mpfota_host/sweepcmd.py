"""`mpfota sweep`: power-cut sweeps of every update kind on the virtual board.

For each kind and flash layout: a dry run counts the flash operations of the update, then the
power is cut after each of them in turn (or after a seeded sample of them), plus random nested
cuts (a cut during the recovery from a cut). A cut falls between two flash operations, or is
torn: the operation it interrupts is applied only partly. Both the unix board and the ESP32
board module (boards/esp32 on its fakes) are swept. After every cut a copy of the board is
booted and checked; then the board is powered on until the update completes.
docs/reliability.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from . import powercut
from .errors import UserError
from .progress import Progress

EPILOG = """examples:
  mpfota sweep                       a seeded sample of 20 cut points per kind and layout
  mpfota sweep --full                every cut point of every kind, both layouts, nested cuts,
                                     cuts between and torn, the unix and the ESP32 board
  mpfota sweep --cuts torn --boards esp32 --sample 10     torn cuts on the ESP32 board
  mpfota sweep --kinds scripts,combined --layouts b --sample 50 --seed 7
  mpfota sweep --full --kinds core --keep --work /tmp/sweep    keep every board for a look

kinds:
""" + "\n".join(f"  {k:<9} {v}" for k, v in powercut.KIND_HELP.items()) + """

layouts:
""" + "\n".join(f"  {k:<9} {v.note}" for k, v in powercut.LAYOUTS.items()) + """

cuts:
  between   the power fails between two flash operations
  torn      the power fails during one: a program writes a prefix, a random half or
            half-programmed bytes; an erase leaves part of the sector as it was or as garbage

boards:
  unix      the virtual board (every kind)
  esp32     the ESP32 board module on its fakes (""" + ", ".join(powercut.ESP32_KINDS) + """)

Prints reliability.<figure>: N lines (totals of the unix board's cuts between operations, then
reliability.torn.*, reliability.esp32.*, reliability.esp32.torn.*, then per scenario) and exits
1 when any cut left the board unbootable, lost a user file, showed a mix or did not converge.
"""
CUTS = ("between", "torn")
BOARDS = ("unix", "esp32")

# Classes of problems that make the sweep fail (all of them).
FAILING = ("unbootable", "user_files_lost", "mixed", "inconsistent")


def _names(text: str, known: tuple[str, ...] | dict, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in known:
            raise UserError(f"unknown {what} {n!r} (known: {', '.join(known)})")
    if not names:
        raise UserError(f"no {what} given")
    return names


def _runs(boards: list[str], kinds: list[str], layouts: list[str],
          cuts: list[str]) -> list[tuple[str, str, str, bool]]:
    """(board, kind, layout, torn) of every scenario to sweep, in report order."""
    return [(board, kind, layout, cut == "torn") for board in boards for cut in cuts
            for kind in kinds if board == "unix" or kind in powercut.ESP32_KINDS
            for layout in layouts]


def run(kinds: list[str], layouts: list[str], sample: int | None, nested: int, depth: int,
        seed: int, jobs: int | None, work: Path, keep: bool, cuts: tuple[str, ...] = ("between",),
        boards: tuple[str, ...] = ("unix",), out=sys.stdout) -> list[powercut.Report]:
    reports: list[powercut.Report] = []
    with powercut.bootapply_rom(work) as apply, powercut.Kit(work) as kit:
        for board, kind, layout, torn in _runs(list(boards), kinds, layouts, list(cuts)):
            t0 = time.monotonic()
            scenario = powercut.build(kind, layout, kit, board)
            bar: list[Progress] = []
            name = ".".join(p for p in (powercut.group_of(board, torn), kind, layout) if p)

            def planned(n: int, label: str = name) -> None:
                bar.append(Progress(f"sweep {label}", n, "trials"))

            rep = powercut.run_scenario(
                scenario, work / name, sample=sample, nested=nested,
                depth=depth, seed=seed, jobs=jobs, apply=apply, keep=keep, torn=torn,
                on_plan=planned, progress=lambda n: bar[0].update(n))
            if bar:
                bar[0].close()
            reports.append(rep)
            f = rep.figures()
            print(f"{rep.label}: {rep.ops} flash operations, {f['trials']} trials, "
                  f"{f['cut_points']} cut points, {time.monotonic() - t0:.1f} s", file=out)
            for trial in rep.failures()[:5]:
                print("  " + trial.describe().replace("\n", "\n  "), file=out)
    return reports


def cmd_sweep(args: argparse.Namespace) -> int:
    kinds = _names(args.kinds, powercut.KINDS, "kind")
    layouts = _names(args.layouts, powercut.LAYOUTS, "layout")
    cuts = tuple(_names(args.cuts, CUTS, "cut model"))
    boards = tuple(_names(args.boards, BOARDS, "board"))
    if not _runs(list(boards), kinds, layouts, list(cuts)):
        raise UserError(f"the ESP32 board sweeps only {', '.join(powercut.ESP32_KINDS)}")
    if args.sample is not None and args.sample < 2:
        raise UserError("--sample must be at least 2 (the first and the last operation)")
    sample = None if args.full else (args.sample or 20)
    nested = args.nested if args.nested is not None else (5 if args.full else 2)
    if nested < 0 or args.depth < 2:
        raise UserError("--nested must be >= 0 and --depth >= 2")
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        reports = run(kinds, layouts, sample, nested, args.depth, args.seed, args.jobs, work,
                      args.keep, cuts, boards)
    else:
        with tempfile.TemporaryDirectory(prefix="mpfota-sweep-") as tmp:
            reports = run(kinds, layouts, sample, nested, args.depth, args.seed, args.jobs,
                          Path(tmp), False, cuts, boards)
    lines = powercut.summary_lines(reports)
    print("\n".join(lines))
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text("\n".join(lines) + "\n")
    f = powercut.total(reports).figures()
    bad = any(f[k] for k in FAILING) or f["converged"] != f["cut_points"]
    return 1 if bad else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="power-cut sweeps of every update kind (virtual board)",
                       description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--full", action="store_true", help="cut after every flash operation")
    how.add_argument("--sample", type=int, metavar="N",
                     help="cut at N seeded operations per kind and layout (default 20)")
    p.add_argument("--kinds", default=",".join(powercut.KINDS),
                   help="comma-separated update kinds (default: all)")
    p.add_argument("--layouts", default=",".join(powercut.LAYOUTS),
                   help="comma-separated flash layouts (default: all)")
    p.add_argument("--cuts", default=",".join(CUTS),
                   help="comma-separated: between, torn (default: both)")
    p.add_argument("--boards", default=",".join(BOARDS),
                   help="comma-separated: unix, esp32 (default: both)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and nested cuts")
    p.add_argument("--nested", type=int, metavar="N",
                   help="chains of nested cuts per kind and layout (default 5 with --full, "
                        "else 2)")
    p.add_argument("--depth", type=int, default=3, help="most cuts in one chain (default 3)")
    p.add_argument("--jobs", type=int, help="boards run at once (default: CPU count)")
    p.add_argument("--work", help="keep the boards in this directory (default: a temporary one)")
    p.add_argument("--keep", action="store_true",
                   help="with --work: keep the boards of passing trials too")
    p.add_argument("--report", metavar="FILE", help="also write the reliability lines to FILE")
    p.set_defaults(func=cmd_sweep)
