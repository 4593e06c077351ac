"""`make mutate`: break each safety check on purpose and make sure its tests notice.

Every mutation of tests/mutants.py is applied, one at a time, to a scratch copy of the
repository (the tracked files as they are in the working tree; .venv, deps/ and ../shared
linked), and the tests it names are run there with the venv's pytest. A mutation is killed
when every one of its tests fails. The same tests are run once on the unmutated copy first:
a test that already fails there proves nothing, and its mutations count as not killed.

    .venv/bin/python tests/mutate.py [NAME ...] [--timeout SECONDS] [--keep]

Prints one `name: value` line per mutation and the totals `mutate.total` and `mutate.killed`;
exits 0 only when every mutation is killed, 2 when the table no longer fits the code (a snippet
not found exactly once: update tests/mutants.py along with the code).

It lives beside the tests rather than in the host tools: it exercises the repository's own
test suite and needs the checkout, so an installed wheel has nothing for it to run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mutants import MUTANTS, Mutant

REPO = Path(__file__).resolve().parents[1]
LINKED = (".venv", "deps")  # untracked but needed: the tools and the fetched device deps
BESIDE = ("shared",)  # the references some tests read from beside the repository
TIMEOUT = 300.0  # seconds for one pytest run; a hang counts as not killed
LOGS = REPO / "build" / "mutate"  # pytest's output of each run: baseline.txt, NAME.txt
_OUTCOMES = ("PASSED", "FAILED", "ERROR", "XPASS", "XFAIL")


class TableError(Exception):
    """The mutation table does not fit the code (named in the message)."""


@dataclass
class Run:
    """One pytest run: the outcome of each node id it reported, how long it took."""

    outcomes: dict[str, str]
    seconds: float
    timed_out: bool
    output: str


def tracked_files(repo: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, check=True)
    return [p for p in out.stdout.decode().split("\0") if p]


def make_scratch(repo: Path, base: Path) -> Path:
    """A copy of the repository in `base` (returned): the tracked files as they are in the
    working tree (deleted ones skipped), LINKED linked in, and BESIDE linked beside it."""
    root = base / repo.name
    for rel in tracked_files(repo):
        src = repo / rel
        if src.is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    for name in LINKED:
        if (repo / name).exists():
            (root / name).symlink_to(repo / name)
    for name in BESIDE:
        if (repo.parent / name).exists():
            (base / name).symlink_to(repo.parent / name)
    return root


def mutated_text(text: str, mutant: Mutant) -> str:
    """`text` with the mutant's snippet replaced; TableError unless it occurs exactly once."""
    count = text.count(mutant.find)
    if count != 1:
        raise TableError(f"mutation {mutant.name}: snippet found {count} times in {mutant.path}")
    return text.replace(mutant.find, mutant.replace)


def check_table(root: Path, mutants: tuple[Mutant, ...]) -> list[str]:
    """Every problem of the table against the tree at `root` (empty when it fits)."""
    problems = []
    for m in mutants:
        path = root / m.path
        if not path.is_file():
            problems.append(f"mutation {m.name}: no file {m.path}")
            continue
        try:
            mutated_text(path.read_bytes().decode(), m)
        except TableError as e:
            problems.append(str(e))
    return problems


def pytest_id(node_id: str) -> str:
    # Node ids as pytest reports them: relative to tests/, where pytest.ini makes the rootdir.
    return node_id.removeprefix("tests/")


def parse_outcomes(output: str, node_ids: list[str]) -> dict[str, str]:
    """{node id: outcome} of the given ids, from pytest's -rA summary lines ("FAILED id - why";
    an id may hold spaces, so the known ids are looked for rather than split out)."""
    found = {}
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if word in _OUTCOMES:
            for n in node_ids:
                if rest == pytest_id(n) or rest.startswith(pytest_id(n) + " - "):
                    found[n] = word
    return found


def copy_env(root: Path) -> dict[str, str]:
    """The environment of a test run in the copy at `root`."""
    env = dict(os.environ)
    # The venv installs the host tools in editable mode from the checkout: the copy's first.
    env["PYTHONPATH"] = os.pathsep.join([str(root / "host_tools"),
                                         *filter(None, [env.get("PYTHONPATH")])])
    # No bytecode caches: a pyc is checked by whole-second mtime and size, so a file restored
    # within the second of its mutant, at the same size, could run the mutant's bytecode.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_tests(root: Path, node_ids: list[str], timeout: float) -> Run:
    """Run the node ids with the venv's pytest in the copy at `root`, in a process group of
    its own (so a timeout ends the device processes too)."""
    env = copy_env(root)
    cmd = [str(root / ".venv" / "bin" / "python"), "-m", "pytest", "-q", "-rA", "-p",
           "no:cacheprovider", *[pytest_id(n) for n in node_ids]]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=root / "tests", env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace",
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        timed_out = True
    return Run(parse_outcomes(output, node_ids), time.monotonic() - start, timed_out, output)


def verdict(mutant: Mutant, run: Run) -> tuple[bool, str]:
    """(killed, what to print): killed when every named test failed or erred."""
    if run.timed_out:
        return False, "timed out"
    escaped = [n for n in mutant.tests
               if run.outcomes.get(n) not in ("FAILED", "ERROR")]
    if escaped:
        return False, "survived (passed or not run: %s)" % ", ".join(escaped)
    return True, "killed"


def unsound_tests(mutants: tuple[Mutant, ...], baseline: Run) -> set[str]:
    """Named tests that did not pass on the unmutated copy."""
    return {n for m in mutants for n in m.tests if baseline.outcomes.get(n) != "PASSED"}


def keep_log(name: str, run: Run) -> str:
    """Save a run's output under LOGS; returns the path to show."""
    LOGS.mkdir(parents=True, exist_ok=True)
    path = LOGS / f"{name}.txt"
    path.write_text(run.output)
    return str(path.relative_to(REPO))


def run_all(root: Path, mutants: tuple[Mutant, ...], timeout: float) -> int:
    """Baseline, then each mutant in turn; prints the figures; returns how many were killed."""
    all_tests = sorted({n for m in mutants for n in m.tests})
    baseline = run_tests(root, all_tests, timeout * 2)
    log = keep_log("baseline", baseline)
    unsound = unsound_tests(mutants, baseline)
    print(f"mutate.baseline: {len(all_tests) - len(unsound)} of {len(all_tests)} tests pass "
          f"unmutated in {baseline.seconds:.1f} s", flush=True)
    for n in sorted(unsound):
        print(f"mutate.baseline.failing: {n} (see {log})", flush=True)
    killed = 0
    for m in mutants:
        if unsound & set(m.tests):
            print(f"mutate.{m.name}: not run (its tests fail unmutated)", flush=True)
            continue
        path = root / m.path
        original = path.read_bytes()
        path.write_bytes(mutated_text(original.decode(), m).encode())
        try:
            run = run_tests(root, list(m.tests), timeout)
        finally:
            path.write_bytes(original)
        ok, what = verdict(m, run)
        killed += ok
        log = keep_log(m.name, run)
        print(f"mutate.{m.name}: {what} in {run.seconds:.1f} s" + ("" if ok else f" (see {log})"),
              flush=True)
    return killed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="run only these mutations")
    parser.add_argument("--timeout", type=float, default=TIMEOUT,
                        help="seconds for one mutation's tests (default %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    args = parser.parse_args(argv)
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        parser.error("no mutation named " + ", ".join(sorted(unknown)))
    mutants = tuple(m for m in MUTANTS if not args.names or m.name in args.names)
    start = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="mpfota-mutate-"))
    try:
        root = make_scratch(REPO, base)
        problems = check_table(root, mutants)
        for p in problems:
            print(f"mutate: error: {p}", file=sys.stderr)
        if problems:
            return 2
        killed = run_all(root, mutants, args.timeout)
    finally:
        if args.keep:
            print(f"mutate.scratch: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print(f"mutate.total: {len(mutants)}")
    print(f"mutate.killed: {killed}")
    print(f"mutate.seconds: {time.monotonic() - start:.0f}")
    return 0 if killed == len(mutants) else 1


if __name__ == "__main__":
    sys.exit(main())
