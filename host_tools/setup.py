"""Build hook: the wheel carries the device code and the boards it deploys, flashes and runs.

`mpfota deploy`, `mpfota board`, `mpfota pack` and `mpfota bench` need ../device, ../boards,
../deps (umqtt.simple, fetched by `make setup`; deploy fetches it by pinned hash when a wheel
lacks it) and ../tests/bench; an installed wheel has no repository around it, so build_py
copies them into mpfota_host/_repo/ (mpfota_host.paths falls back to it). Everything else is
in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("device", "boards", "deps", "tests/bench")  # deps/: umqtt.simple, from make setup


class BuildWithDeviceCode(build_py):
    def run(self) -> None:
        super().run()
        repo = Path(__file__).resolve().parent.parent
        dest = Path(self.build_lib) / "mpfota_host" / "_repo"
        for rel in SHIPPED:
            if (repo / rel).is_dir():
                shutil.copytree(repo / rel, dest / rel, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.mpy"))


setup(cmdclass={"build_py": BuildWithDeviceCode})
