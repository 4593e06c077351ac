"""The device-test runner reports MicroPython failures with their traceback."""

import pytest
from mpdevice import DeviceFailure, run_function


def test_failure_carries_micropython_traceback():
    with pytest.raises(DeviceFailure) as info:
        run_function("harness_samples", "fails_with_assertion", {})
    text = str(info.value)
    assert "Traceback" in text
    assert "harness_samples.py" in text
    assert "x should be 42" in text


def test_coroutine_tests_are_run_to_completion(tmp_path):
    flag = tmp_path / "flag"
    run_function("harness_samples", "coroutine_sets_flag", {"path": str(flag)})
    assert flag.read_text() == "ran"
