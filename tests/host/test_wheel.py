"""The host package as it would be published: `pip wheel` of host_tools, its metadata, its
files, its entry point, and the installed `mpfota` command.

The wheel is built from a copy of host_tools (so the build leaves nothing in the repository)
with pip's default isolated build, i.e. the setuptools the build system asks for, from the
package index pip is configured with.
"""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from mpfota_host import __version__, paths

HOST_TOOLS = paths.REPO / "host_tools"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "host_tools"
    shutil.copytree(
        HOST_TOOLS, src, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__")
    )
    # What host_tools/setup.py ships from beside it.
    for rel in ("device", "boards", "deps", "tests/bench"):
        shutil.copytree(paths.REPO / rel, work / rel,
                        ignore=shutil.ignore_patterns("__pycache__", "*.mpy"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            str(src),
            "-w",
            str(work / "dist"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    built = list((work / "dist").glob("*.whl"))
    assert len(built) == 1, built
    return built[0]


def project() -> dict:
    with open(HOST_TOOLS / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def dist_file(whl: Path, name: str) -> str:
    with zipfile.ZipFile(whl) as z:
        return z.read(f"mpfota-{__version__}.dist-info/{name}").decode()


def test_the_wheel_is_pure_python_and_named_by_the_version(wheel):
    assert wheel.name == f"mpfota-{__version__}-py3-none-any.whl"
    assert "Root-Is-Purelib: true" in dist_file(wheel, "WHEEL")


def test_metadata(wheel):
    meta = email.parser.Parser().parsestr(dist_file(wheel, "METADATA"))
    assert meta["Name"] == "mpfota" and meta["Version"] == __version__
    assert meta["License-Expression"] == "MIT"
    assert meta["Requires-Python"] == ">=3.10"
    assert "MicroPython" in meta["Summary"]
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta.get_payload().strip(), "no long description (readme)"
    classifiers = meta.get_all("Classifier")
    for wanted in (
        "Development Status :: 3 - Alpha",
        "Environment :: Console",
        "Programming Language :: Python :: 3",
        "Topic :: Software Development :: Embedded Systems",
    ):
        assert wanted in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # PEP 639: the expression
    assert sorted(meta.get_all("Requires-Dist")) == sorted(
        [*project()["dependencies"]]
        + [
            f'{r}; extra == "{extra}"'
            for extra, reqs in project()["optional-dependencies"].items()
            for r in reqs
        ]
    )
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(urls)
    assert all(u.startswith("https://github.com/") for u in urls.values())


def test_the_urls_name_the_repository_the_readme_installs_from(wheel):
    meta = email.parser.Parser().parsestr(dist_file(wheel, "METADATA"))
    repo = {
        u.split(", ", 1)[1].split("/")[3:5][0] + "/" + u.split(", ", 1)[1].split("/")[4]
        for u in meta.get_all("Project-URL")
    }
    readme = (paths.REPO / "README.md").read_text()
    mip = set(re.findall(r"mip install github:([\w.-]+/[\w.-]+)", readme))
    assert len(repo) == 1 and mip == repo, (repo, mip)


def test_entry_point_and_files(wheel):
    eps = dist_file(wheel, "entry_points.txt")
    assert re.search(r"(?m)^\[console_scripts\]\nmpfota = mpfota_host\.cli:main$", eps)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    sources = {f"mpfota_host/{p.name}" for p in (HOST_TOOLS / "mpfota_host").glob("*.py")}
    assert sources <= names
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "device/"))]
    licence = dist_file(wheel, "licenses/LICENSE")
    assert licence == (paths.REPO / "LICENSE").read_text() == (HOST_TOOLS / "LICENSE").read_text()
    assert licence.startswith("MIT License")


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    """The wheel installed into a folder of its own: (folder, environment, a cwd outside)."""
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return target, {**os.environ, "PYTHONPATH": str(target)}, tmp_path_factory.mktemp("cwd")


def test_the_installed_package_is_the_one_imported(installed):
    target, env, cwd = installed
    where = subprocess.run(
        [sys.executable, "-c", "import mpfota_host; print(mpfota_host.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
    )
    assert where.stdout.startswith(str(target)), where.stdout + where.stderr
    assert (target / "bin" / "mpfota").is_file()


def test_the_installed_command_runs_outside_the_repository(installed):
    target, env, cwd = installed
    script = target / "bin" / "mpfota"
    version = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, env=env, cwd=cwd
    )
    assert (version.returncode, version.stdout.strip()) == (0, f"mpfota {__version__}"), (
        version.stderr[-500:]
    )
    helped = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, env=env, cwd=cwd
    )
    assert helped.returncode == 0 and "examples:" in helped.stdout, helped.stderr
    for command in ("board", "deploy", "serve", "server", "pack"):
        assert re.search(rf"(?m)^    {command}\b", helped.stdout), command


def test_the_installed_command_carries_the_device_code(installed, tmp_path):
    target, env, cwd = installed
    shipped = target / "mpfota_host" / "_repo"
    for rel in ("device/fota.py", "device/mpfota/download.py", "boards/unix/bootrom.py",
                "boards/esp32/board.py", "tests/bench/dlbench.py", "deps/umqtt/simple.py"):
        assert (shipped / rel).is_file(), rel
    script = target / "bin" / "mpfota"
    made = subprocess.run([str(script), "board", "init", "--flash", str(tmp_path / "b")],
                          capture_output=True, text=True, env=env, cwd=cwd)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "b" / "flash.bin").is_file()


# --- pip install into a fresh venv, used without activating it ---------------------------------


@pytest.fixture(scope="module")
def fresh_venv(wheel, tmp_path_factory) -> Path:
    """`python -m venv V; V/bin/pip install mpfota[virtual-board]` from the built wheel, with
    the dependencies at the versions the repository pins (from pip's cache when it has them)."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    pins = venv.parent / "constraints.txt"  # pip constraints take no extras: psycopg[binary]
    pins.write_text("".join(
        line + "\n" for line in (HOST_TOOLS / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#") and "[" not in line
    ))
    proc = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
         "-c", str(pins), f"{wheel}[virtual-board]"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return venv


def outside_env(tmp: Path) -> dict[str, str]:
    """An environment with neither the venv under test nor the repository's on PATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "MPFOTA_MICROPYTHON")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    env["HOME"] = str(tmp)  # the installed tools' cache (~/.cache/mpfota) lands here
    return env


def test_demo_by_full_path_from_a_venv_that_is_not_activated(fresh_venv, tmp_path):
    assert shutil.which("micropython", path="/usr/local/bin:/usr/bin:/bin") is None
    demo = subprocess.run([str(fresh_venv / "bin" / "mpfota"), "demo"], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path, env=outside_env(tmp_path))
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "scenario 1: done - the board runs core 2.0.0" in demo.stdout
    # The board was made in the user's cache, not inside the installed package.
    assert (tmp_path / ".cache" / "mpfota" / "demo-board" / "flash.bin").is_file()
    shipped = next(fresh_venv.glob("lib/python3*/site-packages/mpfota_host/_repo"))
    assert (shipped / "deps" / "umqtt" / "simple.py").is_file()  # what deploy copies


def test_a_missing_unix_port_is_one_line_naming_what_to_install(fresh_venv, tmp_path):
    binary = fresh_venv / "bin" / "micropython"
    hidden = binary.with_name("micropython.hidden")
    binary.rename(hidden)  # an install without the [virtual-board] extra
    try:
        run = subprocess.run(
            [str(fresh_venv / "bin" / "mpfota"), "board", "run", "--flash", "b", "--create"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path, env=outside_env(tmp_path),
        )
    finally:
        hidden.rename(binary)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        f"mpfota board: error: micropython not found (looked in {fresh_venv / 'bin'} and PATH): "
        "pip install 'mpfota[virtual-board]' (the unix port), or set MPFOTA_MICROPYTHON"
    )
