"""A test server whose files really change while a device downloads them.

Loaded as a plugin (tests/conftest.py `pytest_plugins`). `changing_server` (one per test): an
HTTP test server (tests/host/httpserver.py) with a raw core image and an update package that are
each replaced by a newer release right after their first request was answered: that first
download gets the old bytes, every later request (a resume with Range / If-Range) sees the new
file and its new ETag. tests/device/test_resume_changed.py.

Device side: {"base", "old": {name: blob}, "new": {name: blob}, "versions": {name: (old, new)}}
with blob = {"path", "size", "etag", "sha256"}, names "image" and "package".
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
from images import core_image

sys.path.insert(0, str(Path(__file__).resolve().parent / "host"))

import httpserver as hs  # noqa: E402

OLD_CORE, NEW_CORE = "3.0.0", "3.1.0"


class ChangingServer(hs.HTTPTestServer):
    """Serves each blob in `changes` as it is for its first request, then as its new bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.changes: dict[str, bytes] = {}

    def _blob(self, name: str) -> hs.Blob:
        with self._lock:
            blob = super()._blob(name)
            new = self.changes.pop(name, None)
            if new is not None:
                self.blobs[name] = hs.Blob(name, new)
        return blob


def _entry(name: str, data: bytes) -> dict:
    return {"path": "/blob/" + name, "size": len(data), "etag": hs.Blob(name, data).etag,
            "sha256": hashlib.sha256(data).hexdigest()}


@pytest.fixture
def changing_server():
    from fixtures_package import core, make  # here: a plugin module pytest imports itself

    releases = {
        # sizes differ, so a mix of the two cannot pass for either by its length
        "image": (core_image(OLD_CORE, 70_000), core_image(NEW_CORE, 66_000)),
        "package": (make([core(OLD_CORE, 70_000)], to_core=OLD_CORE, to_script=None),
                    make([core(NEW_CORE, 66_000)], to_core=NEW_CORE, to_script=None)),
    }
    server = ChangingServer()
    for name, (old, new) in releases.items():
        server.add_blob(name, old)
        server.changes[name] = new
    server.start()

    class Device:
        def to_device(self) -> dict:
            return {
                "base": server.base,
                "old": {n: _entry(n, old) for n, (old, _) in releases.items()},
                "new": {n: _entry(n, new) for n, (_, new) in releases.items()},
                "versions": {"image": (OLD_CORE, NEW_CORE), "package": (OLD_CORE, NEW_CORE)},
            }

    yield Device()
    server.stop()

