"""The mip package files and the freeze manifest: generated, complete, and resolvable by mip.

Static checks (no board): the committed files equal what host_tools/mpfota_host/mippkg.py
generates; every device module belongs to a feature; each package lists every module its
modules import (the import closure, computed here with `ast`, independently of the
definition); each micropython-lib package a module imports is declared as a mip dependency;
every URL resolves, relative to its package file, to a file of this repository, also through
mpremote's own `github:` rewriting. tests/host/test_mip_install.py installs them for real.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import tomllib
from mpfota_host import __version__, mippkg, paths

DEVICE = paths.DEVICE

# Modules a board's firmware provides (MicroPython built-ins, and the board interface, which
# comes from the board: boards/esp32 or the virtual board).
FIRMWARE = {
    "array", "asyncio", "binascii", "deflate", "errno", "gc", "hashlib", "io", "json",
    "micropython", "os", "random", "socket", "ssl", "struct", "sys", "time", "board",
    "machine", "network", "esp32",
}  # fmt: skip

# micropython-lib packages: the top-level name an import starts with -> the mip package name.
MICROPYTHON_LIB = {"umqtt": mippkg.UMQTT}


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = []
    if isinstance(handler.type, ast.Name):
        names = [handler.type.id]
    elif isinstance(handler.type, ast.Tuple):
        names = [e.id for e in handler.type.elts if isinstance(e, ast.Name)]
    return "ImportError" in names


def imports(path: Path) -> list[tuple[str, tuple[str, ...], bool]]:
    """(module, imported names, optional) for every import in the file, nested ones too.

    An import inside a `try` whose handlers catch ImportError is optional: the module copes
    without it (e.g. `mpfota_key`, a key frozen into some firmwares)."""
    found: list[tuple[str, tuple[str, ...], bool]] = []

    def visit(node: ast.AST, optional: bool) -> None:
        if isinstance(node, ast.Try):
            guarded = optional or any(_catches_import_error(h) for h in node.handlers)
            for child in node.body:
                visit(child, guarded)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, optional)
            return
        if isinstance(node, ast.Import):
            found.extend((a.name, (), optional) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            found.append((node.module, tuple(a.name for a in node.names), optional))
        for child in ast.iter_child_nodes(node):
            visit(child, optional)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def resolve(module: str, names: tuple[str, ...], root: Path) -> list[str] | None:
    """Files under `root` an import needs; None when the module is not under `root`."""
    parts = module.split(".")
    if not (root / f"{parts[0]}.py").is_file() and not (root / parts[0]).is_dir():
        return None
    files = []
    for i in range(1, len(parts) + 1):
        stem = "/".join(parts[:i])
        if (root / stem / "__init__.py").is_file():
            files.append(f"{stem}/__init__.py")
        elif (root / f"{stem}.py").is_file():
            files.append(f"{stem}.py")
        else:
            raise AssertionError(f"import {module}: no {stem}.py under {root}")
    stem = "/".join(parts)
    files += [f"{stem}/{n}.py" for n in names if (root / stem / f"{n}.py").is_file()]
    return files


def requirements(files: list[str], root: Path = DEVICE) -> tuple[set[str], set[str], set[str]]:
    """The import closure of `files`: (files under root, micropython-lib packages, others)."""
    needed, libs, other = set(), set(), set()
    todo = list(files)
    while todo:
        rel = todo.pop()
        if rel in needed:
            continue
        needed.add(rel)
        for module, names, optional in imports(root / rel):
            if optional:
                continue
            local = resolve(module, names, root)
            top = module.split(".")[0]
            if local is not None:
                todo += local
            elif top in MICROPYTHON_LIB:
                libs.add(MICROPYTHON_LIB[top])
            else:
                other.add(top)
    return needed, libs, other


def device_modules() -> set[str]:
    return {
        p.relative_to(DEVICE).as_posix()
        for p in DEVICE.rglob("*.py")
        if "__pycache__" not in p.parts and p.name != "manifest.py"
    }


PUBLIC = [f.name for f in mippkg.FEATURES]


def test_committed_files_are_the_generated_ones():
    assert mippkg.stale() == [], "run: .venv/bin/python -m mpfota_host.mippkg"
    assert mippkg.main(["--check"]) == 0
    present = {p.relative_to(paths.REPO).as_posix() for p in DEVICE.glob("*.json")}
    assert present == {rel for rel in mippkg.outputs() if rel.startswith("device/")} - {
        mippkg.MANIFEST
    }, "a device/*.json the definition no longer makes"


def test_the_check_notices_a_stale_file(tmp_path):
    for rel, text in mippkg.outputs().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert mippkg.stale(tmp_path) == []
    (tmp_path / "device" / "engine.json").write_text("{}\n")
    (tmp_path / "device" / "manifest.py").unlink()
    assert mippkg.stale(tmp_path) == ["device/engine.json", "device/manifest.py"]
    assert mippkg.write(tmp_path) == ["device/engine.json", "device/manifest.py"]
    assert mippkg.stale(tmp_path) == []


def test_every_device_module_is_in_exactly_one_feature():
    listed = [m for f in mippkg.FEATURES for m in f.modules]
    assert len(listed) == len(set(listed)), "a module in two features"
    assert set(listed) == device_modules()


@pytest.mark.parametrize("name", PUBLIC)
def test_each_package_lists_every_module_its_modules_import(name):
    files = mippkg.modules([name])
    needed, libs, other = requirements(files)
    assert needed - set(files) == set(), f"{name}: imported but not in device/{name}.json"
    assert other <= FIRMWARE, f"{name}: imports {other - FIRMWARE}, neither listed nor firmware"
    assert set(mippkg.deps([name])) == libs, f"{name}: mip deps differ from what it imports"


def test_the_closure_check_can_fail(tmp_path):
    # The checker itself: a module importing one that is not listed, and an optional import.
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("def f():\n    from pkg import b\n")
    (tmp_path / "pkg" / "b.py").write_text(
        "try:\n    import pkg.c\nexcept ImportError:\n    pass\nfrom umqtt.simple import X\n"
    )
    (tmp_path / "pkg" / "c.py").write_text("")
    needed, libs, other = requirements(["pkg/a.py"], tmp_path)
    assert needed == {"pkg/a.py", "pkg/__init__.py", "pkg/b.py"}
    assert libs == {"umqtt.simple"} and other == set()


def test_the_root_package_is_the_recommended_set():
    root = json.loads((paths.REPO / "package.json").read_text())
    assert root["urls"] == [[m, "device/" + m] for m in mippkg.modules(mippkg.RECOMMENDED)]
    assert root["deps"] == []


def _packages() -> list[Path]:
    return [paths.REPO / rel for rel in mippkg.outputs() if rel.endswith(".json")]


@pytest.mark.parametrize("path", _packages(), ids=lambda p: p.relative_to(paths.REPO).as_posix())
def test_urls_are_relative_files_below_the_package_and_versions_agree(path):
    pkg = json.loads(path.read_text())
    assert set(pkg) == {"urls", "deps", "version"}
    assert pkg["version"] == __version__
    for target, url in pkg["urls"]:
        assert not url.startswith(("http:", "https:", "github:", "gitlab:", "/"))
        assert ".." not in url.split("/") and ".." not in target.split("/")
        assert (path.parent / url).is_file(), url
        assert Path(url).name == Path(target).name
    for dep, version in pkg["deps"]:
        assert (dep, version) == (mippkg.UMQTT, "latest")


def test_the_esp32_board_package_holds_the_board_modules():
    pkg = json.loads((paths.REPO / mippkg.ESP32_PACKAGE).read_text())
    files = sorted(p.name for p in (paths.BOARDS / "esp32").glob("*.py"))
    assert sorted(t for t, _ in pkg["urls"]) == files
    needed, libs, other = requirements(["board.py"], paths.BOARDS / "esp32")
    assert needed == set(files) and libs == set() and other <= FIRMWARE


def test_the_host_package_has_the_same_version():
    with open(paths.REPO / "host_tools" / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    assert "version" in project.get("dynamic", []) or project["version"] == __version__


@pytest.mark.parametrize(
    "spec",
    [
        "github:OWNER/mpfota",
        "github:OWNER/mpfota@v1",
        "github:OWNER/mpfota/device/aliyun.json",
        "gitlab:OWNER/mpfota/device/engine.json",
        "github:OWNER/mpfota/boards/esp32",
    ],
)
def test_what_mpremote_fetches_for_a_github_url_is_a_repository_file(spec):
    # mpremote's own URL rules (mpremote/mip.py): a spec that is not a .json file gets
    # "/package.json"; relative URLs are joined to the package URL's folder, then rewritten
    # to the host's raw-file URL with the branch (HEAD unless @branch was given).
    from mpremote import mip

    spec, _, branch = spec.partition("@")
    if not spec.endswith(".json"):
        spec += "/package.json"
    prefix = {
        "github:": "raw.githubusercontent.com/OWNER/mpfota/",
        "gitlab:": "gitlab.com/OWNER/mpfota/-/raw/",
    }[spec[:7]]
    rel = spec[7:].split("/", 2)[2]
    pkg = json.loads((paths.REPO / rel).read_text())
    base = spec.rpartition("/")[0]
    for _, url in [["package", spec], *pkg["urls"]]:
        full = url if url == spec else f"{base}/{url}"
        fetched = mip._rewrite_url(full, branch or None)
        head = f"https://{prefix}{branch or 'HEAD'}/"
        assert fetched.startswith(head), fetched
        assert (paths.REPO / fetched[len(head) :]).is_file(), fetched


def test_closure_orders_needs_first_and_refuses_unknown_or_cyclic(monkeypatch):
    assert [f.name for f in mippkg.closure(["update"])] == ["engine", "libfota2", "update"]
    with pytest.raises(ValueError, match="unknown feature"):
        mippkg.closure(["nosuch"])
    a = mippkg.Feature("a", "", (), requires=("b",))
    b = mippkg.Feature("b", "", (), requires=("a",))
    monkeypatch.setattr(mippkg, "BY_NAME", {"a": a, "b": b})
    with pytest.raises(ValueError, match="a -> b -> a"):
        mippkg.closure(["a"])
