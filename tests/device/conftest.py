"""Collect device tests: MicroPython modules whose `test_*` functions run inside the unix port.

A device test module is never imported by CPython. We read it with `ast`, and for each
`test_*` function build a CPython stand-in with the same parameters, so that pytest's fixtures
work as usual: the stand-in runs the real function in MicroPython, passing each fixture's
device-side value (its `to_device()` if it has one, else the value itself, which must be
JSON-serialisable) and merging each fixture's `device_env()` into the process environment.

Module-level settings, read from the source: `HEAPSIZE = "64K"`, `TIMEOUT = 60`, and
`BOARD = "esp32"` (run against boards/esp32 and the ESP32 fakes instead of the unix board).
"""

from __future__ import annotations

import ast
import inspect
import os
import types
from pathlib import Path

import pytest
from mpdevice import run_function


def _literal_settings(tree: ast.Module) -> dict:
    settings = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id in ("HEAPSIZE", "TIMEOUT", "BOARD"):
                settings[target.id] = ast.literal_eval(node.value)
    return settings


def _stand_in(path: Path, module: str, fn: ast.FunctionDef, settings: dict):
    names = [a.arg for a in fn.args.args]

    def stand_in(**fixtures):
        env: dict[str, str] = {}
        kwargs = {}
        for name in names:
            value = fixtures[name]
            if hasattr(value, "device_env"):
                env.update(value.device_env())
            if hasattr(value, "to_device"):
                value = value.to_device()
            kwargs[name] = str(value) if isinstance(value, os.PathLike) else value
        run_function(module, fn.name, kwargs, env=env, heapsize=settings.get("HEAPSIZE"),
                     timeout=settings.get("TIMEOUT", 120), board=settings.get("BOARD", "unix"))

    stand_in.__name__ = fn.name
    stand_in.__qualname__ = fn.name
    stand_in.__doc__ = ast.get_docstring(fn)
    stand_in.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
    )
    # Point reports at the device test's own file and line.
    stand_in.__code__ = stand_in.__code__.replace(
        co_filename=str(path), co_firstlineno=fn.lineno, co_name=fn.name
    )
    return stand_in


class DeviceModule(pytest.Module):
    def _getobj(self):
        path = Path(self.path)
        tree = ast.parse(path.read_text(), str(path))
        settings = _literal_settings(tree)
        mod = types.ModuleType(path.stem)
        mod.__file__ = str(path)
        functions = (ast.FunctionDef, ast.AsyncFunctionDef)
        for node in tree.body:
            if isinstance(node, functions) and node.name.startswith("test_"):
                setattr(mod, node.name, _stand_in(path, path.stem, node, settings))
        return mod


def pytest_pycollect_makemodule(module_path, parent):
    return DeviceModule.from_parent(parent, path=module_path)
