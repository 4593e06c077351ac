"""docs/security.md links each claim to its test: the attack-class table names at least one
test for every Uptane/TUF attack class, and every `file::test` named in docs/security.md and
docs/reliability.md exists (the file, and a test function of that name in it), with a link to
that file."""

from __future__ import annotations

import re

import pytest
from mpfota_host import paths

DOCS = paths.REPO / "docs"
TABLE_HEADING = "## Attack classes and the tests that show them"
CLASSES = ["arbitrary software", "rollback", "endless data", "mix-and-match", "partial install",
           "eavesdropping", "slow retrieval", "freeze"]
REF = re.compile(r"(tests/(?:host|device)/test_\w+\.py)::(test_\w+)")
LINK = re.compile(r"\[(tests/[^\]]+?)::(test_\w+)\]\(([^)]+)\)")


def table_rows() -> dict[str, str]:
    text = (DOCS / "security.md").read_text()
    assert TABLE_HEADING in text, f"docs/security.md has no section {TABLE_HEADING!r}"
    section = text.split(TABLE_HEADING, 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("attack", "---"):
            rows[cells[0]] = cells[2]
    return rows


def defined(path: str, name: str) -> bool:
    src = (paths.REPO / path).read_text()
    return re.search(rf"^(async )?def {name}\(", src, re.MULTILINE) is not None


@pytest.mark.parametrize("attack", CLASSES)
def test_every_attack_class_names_a_test(attack):
    rows = table_rows()
    assert attack in rows, f"no row for {attack!r} in {sorted(rows)}"
    refs = REF.findall(rows[attack])
    assert refs, f"the {attack!r} row names no test"
    links = LINK.findall(rows[attack])
    assert len(links) == len(refs), "every test is a link to its file"
    for path, name, target in links:
        assert target == "../" + path, f"{path}::{name} links to {target}"


@pytest.mark.parametrize("doc", ["security.md", "reliability.md"])
def test_every_named_test_exists(doc):
    text = (DOCS / doc).read_text()
    refs = sorted(set(REF.findall(text)))
    assert refs, f"docs/{doc} names no test"
    missing = [f"{p}::{n}" for p, n in refs if not (paths.REPO / p).is_file() or not defined(p, n)]
    assert not missing, f"docs/{doc} names tests that do not exist: {missing}"


def test_the_check_can_fail(tmp_path):
    # A name that is not there is reported (the checker itself works).
    assert not defined("tests/host/test_security_doc.py", "test_no_such_test_anywhere")
    assert defined("tests/host/test_security_doc.py", "test_every_named_test_exists")
