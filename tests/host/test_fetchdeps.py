"""Where `mpfota deploy` gets umqtt.simple: deps/ when it is there, else fetched once from the
package index by pinned version and SHA-256 into the tools' cache folder (what an installed
wheel built without deps/ does), saying so."""

from __future__ import annotations

from mpfota_host import fetchdeps, paths


def test_a_missing_deps_folder_is_fetched_once_by_pinned_hash(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "DEPS", tmp_path / "no-deps")  # as in a wheel without deps/
    monkeypatch.setattr(paths, "BUILD", tmp_path / "cache")
    said: list[str] = []
    got = fetchdeps.ensure(said.append)
    assert got == tmp_path / "cache" / "deps"
    assert said == [f"fetching micropython-umqtt.simple==1.3.4 (pinned sha256) from the package "
                    f"index into {got}"]
    fetched = (got / "umqtt" / "simple.py").read_bytes()
    assert b"class MQTTClient" in fetched
    # The same file the repository's make setup fetched into deps/.
    assert fetched == (paths.REPO / "deps" / "umqtt" / "simple.py").read_bytes()
    again: list[str] = []
    assert fetchdeps.ensure(again.append) == got and again == []  # kept: no second fetch


def test_deps_of_the_checkout_come_first(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "BUILD", tmp_path / "cache")
    said: list[str] = []
    assert fetchdeps.ensure(said.append) == paths.DEPS and said == []
