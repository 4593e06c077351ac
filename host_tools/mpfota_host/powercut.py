"""Power-cut sweeps on the virtual board: cut the power after every flash operation of an update,
check the board after each cut, power it on again until the update completes (docs/reliability.md).

Two levels:

- `Sweep(start, app, work)`: the low-level runner. `dry_run()` boots a copy of the start state
  until the app finishes and records the flash operations of every boot; `cut_at(k)` replays on
  a fresh copy with the power cut after global operation k, then powers the board on again until
  the app finishes.
- `Scenario` + `Campaign`: the checks. A scenario (`scenarios.build(kind, ...)`) is a start
  state, an app that drives one kind of update to completion, and what may be seen on the board
  (old and new core, old and new script set, the user's files). A campaign runs cut trials
  (one cut, or a chain of nested cuts: a cut during the recovery from a cut) and after every cut
  *probes* a copy of the board: one boot of the bootloader, the filesystem and the boot-time
  apply, then a look at what main.py would see. The results add up to the `reliability.*`
  figures.

Every cut is made either between two flash operations, or *torn* (`torn=True`): the operation
the power interrupts is applied only partly (boards/unix/simflash.py, MPFOTA_TORN). Scenarios
run on the unix board or on the ESP32 board module (boards/esp32 against tests/fakes/esp32).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import paths, vboard

TORN_MODELS = ("prefix", "half", "bits")  # boards/unix/simflash.py

MAX_BOOTS = 16  # boots of one recovery before it counts as "did not converge"
OUTPUT_TAIL = 12  # lines of a failing trial's output in its description
BOOT_TIMEOUT = 60


# --- the low-level runner --------------------------------------------------------------------


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


def boot_ops(board: Path) -> int:
    """Flash operations of the last boot (boot.json; 0 when the boot left none)."""
    try:
        return int(json.loads((board / "boot.json").read_text())["ops"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def boot_until_done(board: Path, outcome: Outcome, app: Path | None = None,
                    max_boots: int = MAX_BOOTS) -> None:
    """Power on, and boot again after every reset, until a boot ends another way."""
    for i in range(max_boots):
        res = vboard.boot(board, app=app if i == 0 else None, timeout=BOOT_TIMEOUT,
                          cause="power_cut" if i == 0 and outcome.cut else "hard")
        outcome.codes.append(res.code)
        outcome.output += res.text
        if res.code not in vboard.REBOOT_CAUSES:
            return


def fresh_copy(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


class Sweep:
    """Dry run and single cuts of one scenario (start state + app), each on a fresh copy."""

    def __init__(self, start: Path, app: Path | None, work: Path) -> None:
        self.start = start
        self.app = app
        self.work = work
        self.per_boot: list[int] = []

    def fresh(self, name: str) -> Path:
        return fresh_copy(self.start, self.work / name)

    def dry_run(self) -> Outcome:
        board = self.fresh("dry")
        out = Outcome(0)
        self.per_boot = []
        for i in range(MAX_BOOTS):
            res = vboard.boot(board, app=self.app if i == 0 else None, timeout=BOOT_TIMEOUT)
            out.codes.append(res.code)
            out.output += res.text
            self.per_boot.append(boot_ops(board))
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


# --- scenarios and what a board may show -----------------------------------------------------


@dataclass
class Expect:
    """What a board of a scenario may show after any cut, and must show at the end.

    Script sets are the live files of each set (board path -> SHA-256 hex); keep files and the
    user's files are not part of a set. `pairs` are the (core, script set) combinations allowed
    at any boot (None: the scenario has no script set)."""

    old_core: str
    new_core: str
    user_files: dict[str, str]
    done: str  # printed by the app once it runs the update, confirmed
    script_sets: dict[str, dict[str, str]] = field(default_factory=dict)
    old_scripts: str | None = None
    new_scripts: str | None = None
    pairs: set[tuple[str, str | None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.pairs:
            self.pairs = {(self.old_core, self.old_scripts), (self.new_core, self.new_scripts)}


@dataclass
class Scenario:
    kind: str
    layout: str
    start: Path  # the board directory in its start state (not modified by the campaign)
    expect: Expect
    app: Path | None = None  # installed as /main.py at the first boot (None: already there)
    note: str = ""
    board: str = "unix"  # or "esp32": boards/esp32 on the fakes (env says how to boot it)
    env: dict[str, str] = field(default_factory=dict)  # for every boot and probe


# --- the probe: one boot of a copy, then a look at the board ---------------------------------

PROBE = r"""
import os, sys, json, hashlib, binascii
try:
    import esp32  # the ESP32 fake, when on the path: the bootloader checks ESP-IDF images
except ImportError:
    pass
import bootrom
out = {"boot": False}
b = bootrom.boot()
if b is not None:
    out["boot"] = True
    import board, vpartition
    if APPLY:
        import mpfota.bootapply
        out["apply"] = mpfota.bootapply.run()
    out["core"] = board.core_version()
    out["slot"] = b.running
    out["state"] = vpartition.STATE_NAMES.get(b.boot_state, str(b.boot_state))
    out["record"] = vpartition.boot_record()
    out["images"] = [vpartition.image_ok(b, 0), vpartition.image_ok(b, 1)]

    def load(p):
        try:
            with open(p) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    from mpfota import journal
    rec = journal.load()
    out["confirm"] = rec.get("core")
    out["scripts"] = rec.get("scripts")
    files = {}
    buf = bytearray(1024)

    def walk(d):
        for e in os.ilistdir(d):
            name = e[0]
            p = d + name
            if d == "/" and (name.startswith(".rom") or name == ".mpfota"):
                continue
            if e[1] == 0x4000:
                walk(p + "/")
                continue
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while True:
                    n = f.readinto(buf)
                    if not n:
                        break
                    h.update(memoryview(buf)[:n])
            files[p] = binascii.hexlify(h.digest()).decode()

    walk("/")
    out["files"] = files
print("PROBE " + json.dumps(out))
"""


@dataclass
class Probe:
    data: dict
    output: str

    @property
    def booted(self) -> bool:
        return bool(self.data.get("boot"))

    @property
    def core(self) -> str | None:
        return self.data.get("core")

    @property
    def files(self) -> dict[str, str]:
        return self.data.get("files") or {}


def run_probe(board: Path, work: Path, apply: bool, env: dict[str, str] | None = None) -> Probe:
    """Boot `board` once (bootloader, filesystem, boot-time apply when `apply`) and report;
    `env`: the scenario's (the MICROPYPATH of another board module)."""
    script = work / f"probe-{int(apply)}.py"
    if not script.exists():
        tmp = script.with_suffix(f".{threading.get_ident()}.tmp")
        tmp.write_text(f"APPLY = {apply}\n" + PROBE)
        os.replace(tmp, script)
    argv, full = vboard.boot_command(board)
    argv = [argv[0], str(script)]
    full["MICROPYPATH"] = f"{paths.BOARDS / 'unix'}:.frozen"  # bootrom.py, whatever MPFOTA_BOOTROM
    full.update(env or {})
    res = subprocess.run(argv, env=full, capture_output=True, timeout=BOOT_TIMEOUT,
                         cwd=str(paths.REPO))
    text = (res.stdout + res.stderr).decode(errors="replace")
    for line in text.splitlines():
        if line.startswith("PROBE "):
            return Probe(json.loads(line[6:]), text)
    return Probe({"boot": False, "error": f"probe exit {res.returncode}"}, text)


def live_set(probe: Probe, expect: Expect) -> str | None:
    """Which script set the live files are exactly ("?" for a mix, None without sets)."""
    if not expect.script_sets:
        return None
    files = probe.files
    paths_ = set().union(*expect.script_sets.values())
    live = {p: files[p] for p in paths_ if p in files}
    for name, want in expect.script_sets.items():
        if live == want:
            return name
    return "?"


def judge(probe: Probe, expect: Expect, final: bool = False) -> dict[str, str]:
    """Problems seen by a probe, by class: unbootable, mixed, user_files_lost, inconsistent,
    and (final) not_converged. Empty when the board is fine."""
    bad: dict[str, str] = {}
    if not probe.booted:
        return {"unbootable": probe.data.get("error", "nothing bootable")}
    d = probe.data
    lost = [p for p, h in expect.user_files.items() if probe.files.get(p) != h]
    if lost:
        bad["user_files_lost"] = f"changed or missing: {', '.join(sorted(lost))}"
    core = probe.core
    sset = live_set(probe, expect)
    if core not in (expect.old_core, expect.new_core):
        bad["mixed"] = f"core {core!r} is neither {expect.old_core} nor {expect.new_core}"
    elif sset == "?":
        bad["mixed"] = "the live scripts are neither set: " + _set_diff(probe, expect)
    elif (core, sset) not in expect.pairs:
        bad["mixed"] = f"core {core} runs with script set {sset}"
    running = f"ota_{d.get('slot')}"
    rec = d.get("confirm")
    if not d.get("images", [False, False])[d.get("slot") or 0]:
        bad["inconsistent"] = "the running slot's image does not verify"
    elif d.get("state") == "pending" and not (isinstance(rec, dict) and rec.get("slot") == running):
        bad["inconsistent"] = (f"{running} boots pending confirmation but the confirm record is "
                               f"{rec!r}: the application would never confirm it")
    elif isinstance(rec, dict) and rec.get("from") == running and rec.get("slot") != running \
            and rec.get("armed", True) \
            and (d.get("record") or [None, None])[1] not in ("aborted", "invalid"):
        bad["inconsistent"] = (f"the confirm record {rec!r} reports a rollback to {running}, but "
                               f"the boot record {d.get('record')!r} shows none")
    journal = d.get("scripts")
    if expect.script_sets and "inconsistent" not in bad and sset != "?":
        state = journal.get("state") if isinstance(journal, dict) else None
        if state not in (None, "valid", "pending"):
            bad["inconsistent"] = f"script journal left in state {state!r} after the boot apply"
        else:
            cur = (journal or {}).get("new" if state == "pending" else "cur") or {}
            want = cur.get("version") or expect.old_scripts
            if sset != want:
                bad["inconsistent"] = f"script journal says {want} ({state}), live set is {sset}"
    if final:
        why = []
        if core != expect.new_core:
            why.append(f"core {core}")
        if d.get("state") != "valid" or rec is not None:
            why.append(f"boot state {d.get('state')} with confirm record {rec!r}")
        if expect.script_sets and (sset != expect.new_scripts or (journal or {}).get("state")
                                   != "valid"):
            why.append(f"script set {sset} ({(journal or {}).get('state')})")
        if why:
            bad["not_converged"] = "final state: " + ", ".join(why)
    return bad


def _set_diff(probe: Probe, expect: Expect) -> str:
    parts = []
    for name, want in expect.script_sets.items():
        diff = sorted(p for p in set(want) | set(probe.files)
                      if p in want and probe.files.get(p) != want[p])
        extra = sorted(p for p in probe.files if p not in want and any(
            p in s for s in expect.script_sets.values()))
        parts.append(f"{name}: differs {diff} extra {extra}")
    return "; ".join(parts)


# --- trials ----------------------------------------------------------------------------------


@dataclass
class CutResult:
    where: str  # "k" for the first cut, "k1>k2" for nested ones
    problems: dict[str, str]


@dataclass
class Trial:
    cuts: list[int]  # requested: first in the update's own operations, then in the recovery's
    landed: list[CutResult] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)
    final: dict[str, str] = field(default_factory=dict)
    output: str = ""
    torn: list[str] = field(default_factory=list)  # MPFOTA_TORN of each cut ("": between ops)

    @property
    def converged(self) -> bool:
        return not self.final and bool(self.codes) and self.codes[-1] == 0

    def count(self, what: str) -> int:
        """Cut points after which `what` was seen (in the probe or at the end)."""
        n = sum(1 for c in self.landed if what in c.problems)
        if what in self.final and not any(what in c.problems for c in self.landed):
            n += 1
        return min(n, len(self.landed)) if self.landed else n

    def describe(self) -> str:
        lines = [f"cuts {'>'.join(map(str, self.cuts))}: exit codes {self.codes}"]
        if any(self.torn):
            lines[0] += f" (torn: MPFOTA_TORN={', '.join(self.torn)})"
        for c in self.landed:
            for k, v in c.problems.items():
                lines.append(f"  after cut {c.where}: {k}: {v}")
        for k, v in self.final.items():
            lines.append(f"  at the end: {k}: {v}")
        if self.final:  # what the last boots printed, to see why
            lines += ["  | " + line for line in self.output.splitlines()[-OUTPUT_TAIL:]]
        return "\n".join(lines)


class Runner:
    """Runs trials of one scenario: a dry run with snapshots at every boot, then cuts."""

    def __init__(self, scenario: Scenario, work: Path, apply: bool = True,
                 keep: bool = False, torn: bool = False, seed: int = 0) -> None:
        self.s = scenario
        self.work = work
        self.apply = apply
        self.keep = keep
        self.torn = torn
        self.seed = seed
        self.per_boot: list[int] = []
        self.causes: list[str] = []
        self.dry_output = ""
        work.mkdir(parents=True, exist_ok=True)

    # The state at the start of boot i of the dry run is kept in snap<i>, so a cut inside boot
    # i replays only that boot.
    def dry_run(self) -> Trial:
        board = fresh_copy(self.s.start, self.work / "dry")
        t = Trial([])
        cause = "power_on"
        self.per_boot, self.causes = [], []
        for i in range(MAX_BOOTS):
            fresh_copy(board, self.work / f"snap{i}")
            self.causes.append(cause)
            res = vboard.boot(board, app=self.s.app if i == 0 else None, timeout=BOOT_TIMEOUT,
                              cause=cause, env=self.s.env)
            t.codes.append(res.code)
            t.output += res.text
            self.per_boot.append(boot_ops(board))
            if res.code not in vboard.REBOOT_CAUSES:
                break
            cause = vboard.REBOOT_CAUSES[res.code]
        self.dry_output = t.output
        t.final = judge(run_probe(board, self.work, self.apply, self.s.env), self.s.expect,
                      final=True)
        if self.s.expect.done not in t.output:
            t.final["not_converged"] = f"the app never printed {self.s.expect.done!r}"
        return t

    @property
    def total_ops(self) -> int:
        return sum(self.per_boot)

    def torn_setting(self, cuts: list[int], j: int) -> str:
        """MPFOTA_TORN of cut j of a trial ("" between operations): the models take turns over
        the cut points, the seed follows from the sweep's seed, the scenario and the cuts."""
        if not self.torn:
            return ""
        model = TORN_MODELS[(cuts[0] + j) % len(TORN_MODELS)]
        key = f"{self.seed}/{self.s.board}.{self.s.kind}.{self.s.layout}/{cuts}/{j}"
        return f"{model}:{random.Random(key).getrandbits(31)}"

    def _boots(self, board: Path, cut: int | None, cause: str, app: Path | None,
               t: Trial, torn: str = "") -> bool:
        """Boot until the app finishes, cutting the power after `cut` operations (counted over
        all these boots; `torn`: the cut operation is applied partly). True when the cut
        happened."""
        done = 0
        env = {**self.s.env, "MPFOTA_TORN": torn if cut else ""}
        for i in range(MAX_BOOTS):
            left = cut - done if cut else None
            res = vboard.boot(board, app=app if i == 0 else None, cut_after=left,
                              timeout=BOOT_TIMEOUT, cause=cause, env=env)
            t.codes.append(res.code)
            t.output += res.text
            if res.code == vboard.EXIT_POWER_CUT:
                return True
            done += boot_ops(board)
            if res.code not in vboard.REBOOT_CAUSES:
                return False
            cause = vboard.REBOOT_CAUSES[res.code]
        return False

    def trial(self, cuts: list[int], name: str) -> Trial:
        t = Trial(list(cuts))
        first = cuts[0]
        before = 0
        i = 0
        while i < len(self.per_boot) - 1 and first > before + self.per_boot[i]:
            before += self.per_boot[i]
            i += 1
        board = fresh_copy(self.work / f"snap{i}", self.work / name)
        t.torn = [self.torn_setting(cuts, j) for j in range(len(cuts))]
        try:
            cut = self._boots(board, first - before, self.causes[i],
                              self.s.app if i == 0 else None, t, t.torn[0])
            where = str(first)
            for j, nxt in enumerate([*cuts[1:], None], 1):
                if not cut:
                    break
                self._probe_copy(board, t, where, name)
                if nxt is None:
                    cut = self._boots(board, None, "power_cut", None, t)
                    break
                cut = self._boots(board, nxt, "power_cut", None, t, t.torn[j])
                where += f">{nxt}"
            self._finish(board, t)
        finally:
            if not self.keep and t.converged and not any(c.problems for c in t.landed):
                shutil.rmtree(board, ignore_errors=True)
        return t

    def _finish(self, board: Path, t: Trial) -> None:
        last = t.codes[-1] if t.codes else None
        if last == vboard.EXIT_UNBOOTABLE:
            t.final["unbootable"] = "nothing bootable after the last cut"
        elif last != 0:
            t.final["not_converged"] = f"the last boot ended with exit {last}"
        if "MIX" in t.output:
            t.final["mixed"] = "the application saw a mixed update (it printed MIX)"
        if last != vboard.EXIT_UNBOOTABLE:
            found = judge(run_probe(board, self.work, self.apply, self.s.env), self.s.expect,
                      final=True)
            for k, v in found.items():
                t.final.setdefault(k, v)
        after = t.output.rsplit("bootrom: power cut", 1)[-1]
        if self.s.expect.done not in after:
            t.final.setdefault("not_converged",
                               f"the app did not print {self.s.expect.done!r} after the last cut")

    def _probe_copy(self, board: Path, t: Trial, where: str, name: str) -> None:
        copy = fresh_copy(board, self.work / f"{name}-probe")
        try:
            p = run_probe(copy, self.work, self.apply, self.s.env)
        finally:
            shutil.rmtree(copy, ignore_errors=True)
        t.landed.append(CutResult(where, judge(p, self.s.expect)))


# --- campaigns -------------------------------------------------------------------------------

METRICS = ("cut_points", "unbootable", "user_files_lost", "converged", "mixed", "inconsistent",
           "nested_trials", "trials")


@dataclass
class Report:
    """Totals of one scenario (or of several, added up). `group`: "" (unix board, cuts between
    operations), "torn", "esp32" or "esp32.torn"; it starts the label ("torn.core.a")."""

    label: str
    ops: int = 0
    trials: list[Trial] = field(default_factory=list)
    group: str = ""

    def figures(self) -> dict[str, int]:
        ts = self.trials
        return {
            "cut_points": sum(len(t.landed) for t in ts),
            "unbootable": sum(t.count("unbootable") for t in ts),
            "user_files_lost": sum(t.count("user_files_lost") for t in ts),
            "converged": sum(len(t.landed) for t in ts if t.converged),
            "mixed": sum(t.count("mixed") for t in ts),
            "inconsistent": sum(t.count("inconsistent") for t in ts),
            "nested_trials": sum(1 for t in ts if len(t.cuts) > 1),
            "trials": len(ts),
        }

    def failures(self) -> list[Trial]:
        return [t for t in self.trials if not t.converged or any(c.problems for c in t.landed)]

    def lines(self, prefix: str = "reliability") -> list[str]:
        f = self.figures()
        return [f"{prefix}.{k}: {f[k]}" for k in METRICS]


def total(reports: Iterable[Report], label: str = "all") -> Report:
    out = Report(label)
    for r in reports:
        out.ops += r.ops
        out.trials += r.trials
    return out


GROUPS = ("", "torn", "esp32", "esp32.torn")


def group_of(board: str, torn: bool) -> str:
    return ".".join(p for p in ("" if board == "unix" else board, "torn" if torn else "") if p)


def summary_lines(reports: list[Report]) -> list[str]:
    """The reliability lines: the totals of each group (reliability.cut_points,
    reliability.torn.cut_points, reliability.esp32.cut_points, ...), then each scenario's
    (reliability.torn.core.a.cut_points)."""
    lines = []
    for g in GROUPS:
        mine = [r for r in reports if r.group == g]
        if mine:
            lines += total(mine).lines("reliability" + (f".{g}" if g else ""))
    for rep in reports:
        lines += rep.lines(f"reliability.{rep.label}")
    return lines


def plan(n_ops: int, sample: int | None, nested: int, depth: int,
         rng: random.Random) -> list[list[int]]:
    """Cut lists: every operation 1..n (or a seeded sample of them, always with the first and
    the last), then `nested` chains of 2..depth cuts (the later ones count the recovery's own
    operations)."""
    if sample is None or sample >= n_ops:
        singles = list(range(1, n_ops + 1))
    else:
        inner = rng.sample(range(2, n_ops), max(0, min(sample - 2, n_ops - 2)))
        singles = sorted({1, n_ops, *inner})
    chains = []
    for _ in range(nested):
        k = rng.randint(2, max(2, depth))
        chains.append([rng.randint(1, n_ops)] + [rng.randint(1, n_ops) for _ in range(k - 1)])
    return [[k] for k in singles] + chains


def run_scenario(scenario: Scenario, work: Path, *, sample: int | None = None,
                 nested: int = 0, depth: int = 3, seed: int = 0, jobs: int | None = None,
                 apply: bool = True, keep: bool = False, torn: bool = False,
                 progress: Callable[[int], None] | None = None,
                 on_plan: Callable[[int], None] | None = None) -> Report:
    """Dry run, then every planned trial (in parallel, `jobs` at a time); `torn`: every cut
    tears the operation it interrupts."""
    runner = Runner(scenario, work, apply, keep, torn, seed)
    dry = runner.dry_run()
    group = group_of(scenario.board, torn)
    label = ".".join(p for p in (group, scenario.kind, scenario.layout) if p)
    rep = Report(label, runner.total_ops, group=group)
    if not dry.converged:
        raise RuntimeError(f"{label}: the update does not complete without a power cut:\n"
                           f"{dry.describe()}\n{dry.output[-3000:]}")
    rng = random.Random(f"{seed}/{label}")
    cuts = plan(runner.total_ops, sample, nested, depth, rng)
    if on_plan:
        on_plan(len(cuts))
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 2) as pool:
        futures = [pool.submit(runner.trial, c, f"t{n}") for n, c in enumerate(cuts)]
        for f in futures:
            rep.trials.append(f.result())
            if progress:
                progress(1)
    if not keep:
        for i in range(len(runner.per_boot)):
            shutil.rmtree(work / f"snap{i}", ignore_errors=True)
    return rep


@contextmanager
def bootapply_rom(work: Path) -> Iterator[bool]:
    """Boots run mpfota.bootapply before main.py, as the product does (docs/package-format.md).

    While boards/unix/bootrom.py does not call it itself, a stand-in bootrom that does is used
    (MPFOTA_BOOTROM, for this process and its boots). Yields True when boots apply."""
    if "bootapply" in (paths.BOARDS / "unix" / "bootrom.py").read_text():
        yield True
        return
    rom = work / "rom" / "bootrom_apply.py"
    rom.parent.mkdir(parents=True, exist_ok=True)
    rom.write_text(STAND_IN.format(boards=str(paths.BOARDS / "unix")))
    old = os.environ.get("MPFOTA_BOOTROM")
    os.environ["MPFOTA_BOOTROM"] = str(rom)
    try:
        yield True
    finally:
        if old is None:
            os.environ.pop("MPFOTA_BOOTROM", None)
        else:
            os.environ["MPFOTA_BOOTROM"] = old


STAND_IN = """\
# bootrom.py with the boot-time apply of update packages before main.py (mpfota_host.powercut),
# until boards/unix/bootrom.py runs it itself.
import sys
sys.path.insert(0, {boards!r})
import bootrom
_main = bootrom._run_main


def _run_main():
    import mpfota.bootapply
    mpfota.bootapply.run()
    return _main()


bootrom._run_main = _run_main
_code = bootrom.main()
if _code:
    sys.exit(_code)
"""


# --- the update kinds ------------------------------------------------------------------------
#
# Each kind builds a start state on a new board of the given layout: the user's files, what the
# update needs on the board (a package, a patch, the first script set) and the app as /main.py.
# Building the start state is not part of the sweep; every flash operation after it is.

DONE = "SWEEP DONE"
PROJECT = "SWEEP"
FIRMWARE = "SWEEP_LuatOS-SoC_UNIX_1"
V0, V1, V2 = "001.000.000", "001.000.001", "001.000.002"
OLD_CORE, NEW_CORE = "1.0.0", "2.0.0"
KINDS = ("core", "delta", "delta-stream", "scripts", "combined", "rollback", "resume")
KIND_HELP = {
    "core": "a full core image over HTTP: download, verify, switch, reset, confirm",
    "delta": "a delta patch from the filesystem applied into the spare slot, switch, confirm",
    "delta-stream": "a streamed delta patch (format 2) applied as it downloads "
                    "(download.fetch), its apply state saved every 4 KiB, switch, confirm",
    "scripts": "a script-set package: stage, boot-time swap under the journal, confirm",
    "combined": "a package with a core and a script set, downloaded over HTTP (download.fetch), "
                "switched and confirmed together",
    "rollback": "the confirm/rollback boots: the new core fails its first health check, is "
                "rolled back, downloaded again and confirmed",
    "resume": "a core download that saves its resume record every 8 KiB (power-cut resume)",
}


@dataclass(frozen=True)
class Layout:
    name: str
    slot_size: int
    fs_size: int
    note: str


LAYOUTS = {
    "a": Layout("a", 256 << 10, 256 << 10, "two 256 KiB slots on 64 KiB boundaries, 256 KiB "
                "littlefs"),
    "b": Layout("b", 132 << 10, 160 << 10, "two 132 KiB slots (not a multiple of 64 KiB: the "
                "filesystem starts off a 64 KiB boundary), 160 KiB littlefs"),
}


def sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def pseudo_bytes(tag: str, size: int) -> bytes:
    """Deterministic filler, different for each tag."""
    import hashlib

    out = bytearray()
    block = hashlib.sha256(tag.encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def core_image(version: str, size: int = 40_000) -> bytes:
    from . import image

    return image.make_image(pseudo_bytes(f"core {version}", size), version)


def firmware_pair(seed: int = 7, size: int = 48_000) -> tuple[bytes, bytes]:
    """Two core image bodies related as successive builds: repeated code words and pointers,
    a block inserted, a block dropped, pointers shifted, a tail added."""
    rng = random.Random(seed)
    vocab = [rng.getrandbits(32) for _ in range(200)]
    old = bytearray()
    while len(old) < size:
        word = rng.choice(vocab) if rng.random() < 0.6 else 0x3FF00000 + rng.randrange(size)
        old += word.to_bytes(4, "little")
    new = old[:6000] + rng.randbytes(512) + old[6000:30000] + old[30400:]
    for _ in range(200):
        at = rng.randrange(0, len(new) - 4) & ~3
        word = (int.from_bytes(new[at:at + 4], "little") + 0x240) & 0xFFFFFFFF
        new[at:at + 4] = word.to_bytes(4, "little")
    return bytes(old), bytes(new) + rng.randbytes(800)


USER_FILES = {
    "/data/settings.json": b'{"wifi": "home", "secret": "s3cr3t", "interval": 60}',
    "/data/log.bin": pseudo_bytes("user log", 6000),
}
USER_CONFIG = b'{"server": "user-configured", "token": "t0k3n"}'  # keep file of the script set

SEED = """
import binascii, os


def _dirs(path):
    cur = ""
    for part in path.split("/")[1:-1]:
        cur += "/" + part
        try:
            os.mkdir(cur)
        except OSError:
            pass


for _path, _blob in FILES:
    _dirs(_path)
    with open(_path, "wb") as _f:
        _f.write(binascii.a2b_base64(_blob))
    _blob = None
"""

CORE_APP = """
import asyncio, board
from mpfota import confirm, download

URL = {url!r}
TARGET = {target!r}
SHA = {sha!r}
state = confirm.check_boot()
if state == "pending":
    confirm.confirm()
if board.core_version() == TARGET:
    print({done!r}, board.core_version())
else:
    r = asyncio.run(download.fetch(URL, sha256=SHA, version=TARGET, checkpoint={checkpoint}))
    if r.status != 200:
        print("no update: HTTP", r.status, r.body)
        raise SystemExit(1)
    board.reset()
"""

ROLLBACK_APP = """
import asyncio, board, os
from mpfota import confirm, download

URL = {url!r}
TARGET = {target!r}
SHA = {sha!r}
state = confirm.check_boot()
if board.core_version() == TARGET:
    if state == "pending":
        try:
            os.stat("/health.once")
        except OSError:
            with open("/health.once", "w") as f:
                f.write("failed once")
            print("health check failed: reset without confirming (rollback)")
            board.reset()
        confirm.confirm()
    print({done!r}, board.core_version())
else:
    r = asyncio.run(download.fetch(URL, sha256=SHA, version=TARGET))
    if r.status != 200:
        print("no update: HTTP", r.status, r.body)
        raise SystemExit(1)
    board.reset()
"""

SWITCH_ONLY = """
import asyncio
from mpfota import download
r = asyncio.run(download.fetch({url!r}, sha256={sha!r}, version={target!r}))
assert r.status == 200, r.status
"""

DELTA_APP = """
import board
from mpfota import confirm, delta

TARGET = {target!r}
state = confirm.check_boot()
if state == "pending":
    confirm.confirm()
if board.core_version() == TARGET:
    print({done!r}, board.core_version())
else:
    delta.apply("/pkg/patch.bin", version=TARGET)
    board.reset()
"""

MAIN_OLD = """PROJECT = {project!r}
VERSION = {version!r}
import board
from app import a, b
import old_only
from mpfota import confirm, package, scripts

mods = [a.V, b.V, old_only.V]
if any(m != VERSION for m in mods) or board.core_version() != {core!r}:
    print("MIX: old main.py", VERSION, "core", board.core_version(), "modules", mods)
    raise SystemExit(1)
scripts.check_boot()
confirm.check_boot()
{install}
board.reset()
"""
INSTALL_FILE = 'package.install_file("/pkg/update.pkg", project=PROJECT, version=VERSION)'
INSTALL_HTTP = """import asyncio
from mpfota import download
r = asyncio.run(download.fetch({url!r}, package={{"project": PROJECT, "version": VERSION}}))
if r.status != 200 or r.manifest is None:
    print("no package: HTTP", r.status, r.body)
    raise SystemExit(1)"""

MAIN_NEW = """PROJECT = {project!r}
VERSION = {version!r}
import board
from app import a, b, c
from mpfota import confirm, scripts

mods = [a.V, b.V, c.V]
try:
    import old_only
    mods.append("old_only.py of the old set")
except ImportError:
    pass
if any(m != VERSION for m in mods) or board.core_version() != {core!r}:
    print("MIX: new main.py", VERSION, "core", board.core_version(), "modules", mods)
    raise SystemExit(1)
confirm.check_boot()
confirm.confirm()
scripts.confirm()
print({done!r}, VERSION, board.core_version())
"""


def script_set(version: str, core: str, new: bool, install: str = INSTALL_FILE
               ) -> dict[str, bytes]:
    """The files of one script set (board paths without the leading /). The old set's main.py
    installs the update with `install`."""
    main = MAIN_NEW if new else MAIN_OLD
    files = {
        "main.py": main.format(project=PROJECT, version=version, core=core, done=DONE,
                               install=install).encode(),
        "app/a.py": f'V = "{version}"\n'.encode(),
        "app/b.py": f'V = "{version}"\n'.encode() + b"# filler line of the b module\n" * 90,
        "config.json": f'{{"default for": "{version}"}}'.encode(),
    }
    if new:
        files["app/c.py"] = f'V = "{version}"\n'.encode()
    else:
        files["old_only.py"] = f'V = "{version}"\n'.encode()
    return files


def live_hashes(files: dict[str, bytes], keep: Iterable[str] = ("config.json",)) -> dict[str, str]:
    return {"/" + p: sha256(d) for p, d in files.items() if p not in keep}


class Kit:
    """What the kinds share: a work directory and, when needed, an update server."""

    def __init__(self, work: Path) -> None:
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self._server = None
        self._lock = threading.Lock()

    def serve(self, name: str, data: bytes) -> str:
        """URL of `data` on the reference server (started on first use)."""
        from .server import FotaServer

        with self._lock:
            if self._server is None:
                self._server = FotaServer(self.work / "server", log=lambda line: None).start()
            src = self.work / "files" / name
            src.parent.mkdir(parents=True, exist_ok=True)
            src.write_bytes(data)
            stored = self._server.store.add_file(src)[0]
            return f"{self._server.base}/files/{stored}"

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Kit:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _seed(board: Path, files: dict[str, bytes], main: str | None, extra: str = "",
          env: dict[str, str] | None = None) -> None:
    """Write files onto the board (one boot per file: the app holding a file's bytes is itself
    a file on the board), then run `extra`, then install `main` as /main.py."""
    import base64

    from .errors import UserError

    items = list(files.items())
    if main is not None:
        items.append(("/main.py", main.encode()))
    steps = [[it] for it in items if it[0] != "/main.py"]
    last = [it for it in items if it[0] == "/main.py"]
    app = board.parent / f"{board.name}-seed.py"
    for n, chunk in enumerate([*steps, None]):
        blobs = [(p, base64.b64encode(d).decode()) for p, d in (chunk or last)]
        code = f"FILES = {blobs!r}\n" + SEED + ("" if chunk else extra)
        app.write_text(code + "\nprint('seeded')\n")
        res = vboard.boot(board, app=app, timeout=BOOT_TIMEOUT, env=env)
        if res.code != 0 or "seeded" not in res.text:
            raise UserError(f"seeding {board} failed at step {n} (exit {res.code}):\n"
                            f"{res.text[-2000:]}")
    app.unlink()


def _new_board(kit: Kit, kind: str, layout: Layout, core: bytes) -> Path:
    board = kit.work / f"start-{kind}-{layout.name}"
    if board.exists():
        shutil.rmtree(board)
    vboard.init(board, slot_size=layout.slot_size, fs_size=layout.fs_size, core_image=core,
                force=True)
    return board


def _core_kind(kit: Kit, kind: str, layout: Layout, board_name: str = "unix") -> Scenario:
    size = 100_000 if kind == "resume" else 40_000
    make = esp32_app_image if board_name == "esp32" else core_image
    env = esp32_env(kit.work) if board_name == "esp32" else {}
    new = make(NEW_CORE, size)
    url = kit.serve(f"{board_name}-{kind}-{NEW_CORE}.img", new)
    board = _new_board(kit, f"{board_name}-{kind}", layout, core_image(OLD_CORE))
    if board_name == "esp32":  # slot 0: the old ESP-IDF app instead of the unix core
        old = make(OLD_CORE)
        vboard.program_slot(board, 0, old + b"\xff" * (layout.slot_size - len(old)))
    fmt = {"url": url, "target": NEW_CORE, "sha": sha256(new), "done": DONE,
           "checkpoint": 8192 if kind == "resume" else 262144}
    if kind == "rollback":
        _seed(board, USER_FILES, ROLLBACK_APP.format(**fmt), SWITCH_ONLY.format(**fmt), env)
    else:
        _seed(board, USER_FILES, CORE_APP.format(**fmt), env=env)
    expect = Expect(OLD_CORE, NEW_CORE, {p: sha256(d) for p, d in USER_FILES.items()}, DONE)
    return Scenario(kind, layout.name, board, expect, note=KIND_HELP[kind], board=board_name,
                    env=env)


# --- the ESP32 board module ------------------------------------------------------------------
#
# The ESP32 board (boards/esp32) runs on the unix port against the fakes of tests/fakes/esp32,
# whose esp32.Partition keeps its slots and ESP-IDF's otadata on the same simulated flash. Its
# boots go through a stand-in bootrom that gives the board module the runner's exit codes.

ESP32_KINDS = ("core", "rollback", "resume")  # the kinds that update the core image only
ESP32_ROM = """\
# One boot of the virtual board as an ESP32 (mpfota_host.powercut).
import sys
import esp32  # first: the fake teaches the bootloader ESP-IDF app images
import board
import bootrom

board.EXIT_UNBOOTABLE = {unbootable}
board.EXIT_POWER_CUT = {power_cut}
_code = bootrom.main()
if _code:
    sys.exit(_code)
"""


def esp32_app_image(version: str, size: int = 40_000) -> bytes:
    from . import esp32image

    return esp32image.make_app_image(pseudo_bytes(f"esp32 app {version}", size), version)


def esp32_env(work: Path) -> dict[str, str]:
    """The environment of an ESP32 boot: the stand-in bootrom and the module path."""
    from .errors import UserError

    fakes = paths.TESTS / "fakes" / "esp32"
    if not fakes.is_dir():
        raise UserError(f"the ESP32 board is swept against its fakes in {fakes} (a checkout of "
                        "the repository, not an installed wheel)")
    rom = work / "rom" / "bootrom_esp32.py"
    rom.parent.mkdir(parents=True, exist_ok=True)
    rom.write_text(ESP32_ROM.format(unbootable=vboard.EXIT_UNBOOTABLE,
                                    power_cut=vboard.EXIT_POWER_CUT))
    dirs = [paths.BOARDS / "esp32", fakes, paths.BOARDS / "unix"]
    return {"MPFOTA_BOOTROM": str(rom), "MICROPYPATH": ":".join([*map(str, dirs), ".frozen"])}


def _delta_kind(kit: Kit, layout: Layout) -> Scenario:
    from . import delta, image

    old_body, new_body = firmware_pair()
    old, new = image.make_image(old_body, OLD_CORE), image.make_image(new_body, NEW_CORE)
    patch = delta.make_patch(old, new).data
    board = _new_board(kit, "delta", layout, old)
    _seed(board, {**USER_FILES, "/pkg/patch.bin": patch},
          DELTA_APP.format(target=NEW_CORE, done=DONE))
    expect = Expect(OLD_CORE, NEW_CORE, {p: sha256(d) for p, d in USER_FILES.items()}, DONE)
    return Scenario("delta", layout.name, board, expect, note=KIND_HELP["delta"])


def _delta_stream_kind(kit: Kit, layout: Layout) -> Scenario:
    from . import deltastream, image

    old_body, new_body = firmware_pair()
    old, new = image.make_image(old_body, OLD_CORE), image.make_image(new_body, NEW_CORE)
    # Small units: many resume points in a 48 KB image.
    url = kit.serve("delta-stream.patch", deltastream.make_stream_patch(old, new, 512).data)
    board = _new_board(kit, "delta-stream", layout, old)
    _seed(board, USER_FILES, CORE_APP.format(url=url, target=NEW_CORE, sha=None, done=DONE,
                                              checkpoint=4096))
    expect = Expect(OLD_CORE, NEW_CORE, {p: sha256(d) for p, d in USER_FILES.items()}, DONE)
    return Scenario("delta-stream", layout.name, board, expect, note=KIND_HELP["delta-stream"])


INSTALL_FIRST = """
from mpfota import package, scripts
package.install_file("/pkg/first.pkg", project={project!r}, version={v0!r})
scripts.apply_at_boot()
scripts.confirm()
import os
os.remove("/pkg/first.pkg")
"""


def _scripts_kind(kit: Kit, kind: str, layout: Layout) -> Scenario:
    from . import package as pk

    combined = kind == "combined"  # a core and a script set, downloaded over HTTP
    new_core = NEW_CORE if combined else OLD_CORE
    new_set = script_set(V2, new_core, new=True)
    sections = [pk.scripts_section(sorted(new_set.items()), ["config.json"])]
    if combined:
        sections.insert(0, pk.Section("core", core_image(NEW_CORE)))
    update = pk.build(project=PROJECT, firmware_name=FIRMWARE, to_script=V2,
                      to_core=NEW_CORE if combined else None, sections=sections)
    files = {"/pkg/update.pkg": update}
    install = INSTALL_FILE
    if combined:
        install = INSTALL_HTTP.format(url=kit.serve(f"{kind}-update.pkg", update))
        files = {}
    old_set = script_set(V1, OLD_CORE, new=False, install=install)
    first = pk.build(project=PROJECT, firmware_name=FIRMWARE, to_script=V1,
                     sections=[pk.scripts_section(sorted(old_set.items()), ["config.json"])])
    board = _new_board(kit, kind, layout, core_image(OLD_CORE))
    user = {**USER_FILES, "/config.json": USER_CONFIG}
    _seed(board, {**user, "/pkg/first.pkg": first, **files}, None,
          INSTALL_FIRST.format(project=PROJECT, v0=V0))
    expect = Expect(OLD_CORE, new_core, {p: sha256(d) for p, d in user.items()}, DONE,
                    script_sets={V1: live_hashes(old_set), V2: live_hashes(new_set)},
                    old_scripts=V1, new_scripts=V2)
    return Scenario(kind, layout.name, board, expect, note=KIND_HELP[kind])


def build(kind: str, layout: str, kit: Kit, board: str = "unix") -> Scenario:
    """The start state and expectations of one update kind on one layout and board."""
    from .errors import UserError

    if kind not in KINDS:
        raise UserError(f"unknown update kind {kind!r} (known: {', '.join(KINDS)})")
    if layout not in LAYOUTS:
        raise UserError(f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")
    if board not in ("unix", "esp32") or (board == "esp32" and kind not in ESP32_KINDS):
        raise UserError(f"no {kind!r} sweep on board {board!r} (the ESP32 board sweeps "
                        f"{', '.join(ESP32_KINDS)})")
    lay = LAYOUTS[layout]
    if kind in ESP32_KINDS:
        return _core_kind(kit, kind, lay, board)
    if kind == "delta":
        return _delta_kind(kit, lay)
    if kind == "delta-stream":
        return _delta_stream_kind(kit, lay)
    return _scripts_kind(kit, kind, lay)
