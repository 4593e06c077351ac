"""The mutation table of `make mutate` fits the code, and the runner's pieces work; the mutants
themselves run only in `make mutate` (tests/mutate.py), never here."""

from __future__ import annotations

import re
import subprocess
import sys

import mutate
import pytest
from mpfota_host import paths
from mutants import MUTANTS, Mutant

REPO = paths.REPO


def test_every_snippet_occurs_exactly_once_in_the_tree():
    assert mutate.check_table(REPO, MUTANTS) == []


def test_table_is_well_formed():
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names)), "names must be unique"
    assert len(MUTANTS) >= 14
    for m in MUTANTS:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", m.name), m.name
        assert m.find != m.replace, m.name
        assert m.breaks and m.tests, m.name


@pytest.mark.parametrize("node_id", sorted({n for m in MUTANTS for n in m.tests}))
def test_every_named_test_exists(node_id):
    assert node_id.startswith("tests/"), node_id
    path, _, function = node_id.partition("::")
    function = function.split("[")[0]
    source = (REPO / path).read_text()
    assert re.search(rf"^(async )?def {function}\(", source, re.M), node_id


def test_docs_list_every_mutant():
    text = (REPO / "docs" / "reliability.md").read_text()
    section = re.search(r"^## `make mutate`.*?(?=^## |\Z)", text, re.M | re.S).group(0)
    for m in MUTANTS:
        assert f"`{m.name}`" in section, m.name


def _mutant(find: str) -> Mutant:
    return Mutant("probe", "nothing", "device/x.py", find, "y", ("tests/t.py::test_a",))


def test_a_snippet_found_twice_or_not_at_all_names_the_mutant():
    assert mutate.mutated_text("a x b", _mutant("x")) == "a y b"
    for text, count in (("a x x", 2), ("a b", 0)):
        with pytest.raises(mutate.TableError, match=f"probe: snippet found {count} times"):
            mutate.mutated_text(text, _mutant("x"))
    problems = mutate.check_table(REPO, (_mutant("x"),))
    assert problems == ["mutation probe: no file device/x.py"]


def test_outcomes_are_read_for_the_named_ids_only():
    ids = ["tests/host/t.py::test_a[x - y]", "tests/device/d.py::test_b",
           "tests/device/d.py::test_c"]
    output = "\n".join([
        ".F",
        "PASSED host/t.py::test_a[x - y]",
        "FAILED device/d.py::test_b - AssertionError: no",
        "FAILED device/d.py::test_bb - AssertionError: another test",
        "SKIPPED [1] device/d.py:3: no lua",
    ])
    assert mutate.parse_outcomes(output, ids) == {ids[0]: "PASSED", ids[1]: "FAILED"}


def test_killed_only_when_every_named_test_fails():
    m = Mutant("probe", "nothing", "device/x.py", "x", "y", ("tests/a.py::t", "tests/b.py::t"))

    def run(outcomes, timed_out=False):
        return mutate.Run(outcomes, 1.0, timed_out, "")

    assert mutate.verdict(m, run({m.tests[0]: "FAILED", m.tests[1]: "ERROR"})) == (True, "killed")
    killed, what = mutate.verdict(m, run({m.tests[0]: "FAILED", m.tests[1]: "PASSED"}))
    assert not killed and "tests/b.py::t" in what and "tests/a.py::t" not in what
    assert not mutate.verdict(m, run({m.tests[0]: "FAILED"}))[0], "a test that did not run"
    assert mutate.verdict(m, run({}, timed_out=True)) == (False, "timed out")
    baseline = run({m.tests[0]: "PASSED", m.tests[1]: "FAILED"})
    assert mutate.unsound_tests((m,), baseline) == {"tests/b.py::t"}


PROBE = """
import time

import pytest


def test_passes():
    pass


def test_fails():
    raise AssertionError("probe")


@pytest.mark.parametrize("text", ["a - b"])
def test_spaced(text):
    assert text.split(" - ") == ["a", "b"]


def test_hangs():
    time.sleep(120)
"""


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    base = tmp_path_factory.mktemp("scratch")
    return base, mutate.make_scratch(REPO, base)


def test_the_scratch_copy_runs_its_own_code(scratch):
    # The copy's host tools and device code, not the checkout's (the venv has the checkout's
    # host tools installed in editable mode), with the venv, deps/ and ../shared reachable.
    base, root = scratch
    assert (root / "device" / "mpfota" / "slot.py").read_bytes() == \
        (REPO / "device" / "mpfota" / "slot.py").read_bytes()
    assert (root / ".venv").resolve() == (REPO / ".venv").resolve()
    assert not (root / "build").exists(), "only tracked files are copied"
    probe = ("import mpdevice; from mpfota_host import paths; "
             "print(paths.DEVICE); print(mpdevice.module_path())")
    out = subprocess.run([sys.executable, "-c", probe], cwd=root / "tests",
                         env=mutate.copy_env(root), capture_output=True, text=True, check=True)
    device, micropypath = out.stdout.split()
    assert device == str(root / "device")
    assert str(root / "device") in micropypath.split(":")
    assert str(REPO / "device") not in micropypath.split(":")
    if (REPO.parent / "shared").exists():
        assert (base / "shared").resolve() == (REPO.parent / "shared").resolve()


def test_a_run_in_the_copy_reports_each_named_test_and_ends_a_hang(scratch):
    _, root = scratch
    (root / "tests" / "host" / "test_probe.py").write_text(PROBE)
    ids = [f"tests/host/test_probe.py::{name}"
           for name in ("test_passes", "test_fails", "test_spaced[a - b]")]
    run = mutate.run_tests(root, ids, 120)
    assert run.outcomes == dict(zip(ids, ("PASSED", "FAILED", "PASSED"))), run.output
    hang = mutate.run_tests(root, ["tests/host/test_probe.py::test_hangs"], 3)
    assert hang.timed_out and hang.seconds < 60 and not hang.outcomes
