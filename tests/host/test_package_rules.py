"""The device's pure package and version code under CPython: property tests of the version
rules, the device-side target checks, and a fuzz of the package head where the device parser
(device/mpfota/package.py) and the host reader (mpfota_host.package) must agree."""

from __future__ import annotations

import sys

import pytest
from fixtures_package import FIRMWARE, PROJECT, core, make, scripts
from hypothesis import given, settings
from hypothesis import strategies as st
from mpfota_host import package as host
from mpfota_host import paths

sys.path.insert(0, str(paths.DEVICE))

from mpfota import package as dev  # noqa: E402
from mpfota import version as v  # noqa: E402

part = st.integers(0, 999)
version = st.tuples(part, part, part)


def text(t: tuple[int, int, int], width: int = 3) -> str:
    return ".".join(str(x).zfill(width) for x in t)


@given(version, version)
def test_upgrade_rule_is_exactly_the_seed_rule(old, new):
    expected = (new[0] == old[0] and new[2] > old[2]) or (new[0] > old[0] and new[2] >= old[2])
    assert v.is_upgrade(text(old), text(new)) == expected
    assert v.is_upgrade(text(old, 1), text(new, 1)) == expected  # "1.0.1" reads the same


@given(st.tuples(part, part, st.integers(0, 998)), part, part)
def test_the_middle_group_never_matters(t, b1, b2):
    a = text((t[0], b1, t[2]))
    assert v.is_upgrade(a, text((t[0], b2, t[2] + 1)))
    assert not v.is_upgrade(a, text((t[0], b2, t[2])))


@given(version)
def test_no_version_upgrades_to_itself_and_upgrades_never_cycle(t):
    s = text(t)
    assert not v.is_upgrade(s, s)
    for other in (text((t[0], 0, min(t[2] + 1, 999))), text((min(t[0] + 1, 999), 0, t[2]))):
        assert not (v.is_upgrade(s, other) and v.is_upgrade(other, s))


@given(st.text(max_size=15))
def test_parse_accepts_only_three_groups_of_at_most_three_digits(s):
    parsed = v.parse(s)
    parts = s.split(".")
    ok = len(parts) == 3 and all(1 <= len(p) <= 3 and p.isascii() and p.isdigit() for p in parts)
    assert (parsed is not None) == ok


@given(st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True), st.integers(1, 99))
def test_layout_suffix_round_trip(base, layout):
    name = v.firmware_name(base, "Air780EHV", layout)
    assert v.split_layout(name) == (f"{base}_LuatOS-SoC_Air780EHV", str(layout))
    assert v.layout_compatible(name, v.firmware_name(base, "Air780EHV", layout))
    assert not v.layout_compatible(name, v.firmware_name(base, "Air780EHV", layout + 1))


DEVICE = {"project": PROJECT, "firmware_name": FIRMWARE, "core": "1.0.0",
          "script": "001.000.000", "min_counter": 3}


def device_manifest(data: bytes) -> dev.Manifest:
    mlen, slen, _ = dev.parse_header(data[:16])
    return dev.parse_manifest(data[16:16 + mlen], slen)


@pytest.mark.parametrize("kw, reason", [
    ({"sections": [scripts()], "counter": 3}, None),
    ({"sections": [core(), scripts()], "to_core": "2.0.0", "counter": 3}, None),
    ({"sections": [core()], "to_core": "1.0.1", "to_script": None, "counter": 3}, None),
    ({"sections": [scripts()], "counter": 2}, "rollback"),
    ({"sections": [scripts()], "counter": 3, "project": "X"}, "project"),
    ({"sections": [scripts()], "counter": 3, "firmware": "DEMO_LuatOS-SoC_UNIX_2"}, "layout"),
    ({"sections": [scripts()], "counter": 3, "firmware": "DEMO_LuatOS-SoC_UNIX"}, "layout"),
    ({"sections": [scripts()], "counter": 3, "firmware": "DEMO_LuatOS-SoC_ESP32_1"}, "firmware"),
    ({"sections": [scripts("001.000.000")], "to_script": "001.000.000", "counter": 3}, "current"),
    ({"sections": [scripts("000.000.005")], "to_script": "000.000.005", "counter": 3},
     "downgrade"),
    ({"sections": [core(), scripts("001.000.000")], "to_core": "2.0.0",
      "to_script": "001.000.000", "counter": 3}, "cyclic"),
    ({"sections": [core()], "to_core": "0.1.0", "to_script": None, "counter": 3}, "downgrade"),
    ({"sections": [core()], "to_core": "1.0.0", "to_script": None, "counter": 3}, "current"),
    ({"sections": [core()], "to_core": "2.0.0", "to_script": "001.000.001", "counter": 3},
     "base"),
    ({"sections": [scripts()], "to_core": "3.0.0", "counter": 3}, "base"),
    ({"sections": [scripts()], "from_script": "000.000.001", "counter": 3}, "base"),
    ({"sections": [scripts()], "from_core": "1.0.0", "from_script": "001.000.000",
      "counter": 3}, None),
])
def test_device_target_checks(kw, reason):
    m = device_manifest(make(**kw))
    if reason is None:
        dev.check_target(m, DEVICE)
    else:
        with pytest.raises(dev.PackageError) as exc:
            dev.check_target(m, DEVICE)
        assert exc.value.reason == reason, exc.value.msg


def test_unknown_script_version_is_refused():
    m = device_manifest(make([scripts()], counter=3))
    with pytest.raises(dev.PackageError) as exc:
        dev.check_target(m, {**DEVICE, "script": None})
    assert exc.value.reason == "identity"


def _outcome_device(data: bytes):
    # In the order the device's Installer reads: header, manifest, CRC, signature, parse.
    try:
        mlen, slen, crc = dev.parse_header(data[:16])
        if len(data) < 16 + mlen:
            return ("error", "truncated")
        raw = data[16:16 + mlen]
        if dev.header_crc(data[:12], raw) != crc:
            return ("error", "digest")
        if len(data) < 16 + mlen + slen:
            return ("error", "truncated")
        m = dev.parse_manifest(raw, slen)
    except dev.PackageError as e:
        return ("error", e.reason)
    return ("ok", m.project, m.firmware_name, m.frm, m.to, m.counter, m.size,
            [(s.type, s.size, s.md5, s.sha256, s.offset) for s in m.sections], m.keep)


def _outcome_host(data: bytes):
    try:
        info = host.read_manifest(data)
    except host.PackageFormatError as e:
        return ("error", e.reason)
    frm = {k: x for k, x in (("core", info.from_core), ("script", info.from_script)) if x}
    to = {k: x for k, x in (("core", info.to_core), ("script", info.to_script)) if x}
    return ("ok", info.project, info.firmware_name, frm, to, info.counter, info.size,
            [(s.type, s.size, s.md5, s.sha256, s.offset) for s in info.sections],
            list(info.keep))


BASE = make([core(), scripts()], to_core="2.0.0", counter=3)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_device_and_host_parsers_agree_on_damaged_heads(data):
    info = host.read_manifest(BASE)
    head_len = 16 + len(info.manifest_bytes)
    blob = bytearray(BASE[:head_len])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, head_len - 1))
        blob[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.none(), st.integers(0, head_len)))
    if cut is not None:
        blob = blob[:cut]
    blob = bytes(blob)
    assert _outcome_device(blob) == _outcome_host(blob)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["format", "project", "firmware_name", "from", "to",
                                        "counter", "sections"]),
                       st.recursive(st.none() | st.booleans() | st.integers(-5, 2**33)
                                    | st.text(max_size=8),
                                    lambda c: st.lists(c, max_size=3)
                                    | st.dictionaries(st.text(max_size=6), c, max_size=3),
                                    max_leaves=8)))
def test_device_and_host_agree_on_arbitrary_manifests(manifest):
    import json

    raw = json.dumps({"format": 1, **manifest}).encode()[:4096]
    blob = host.assemble(raw, b"", [])
    assert _outcome_device(blob) == _outcome_host(blob)


def test_script_entries_and_paths_agree():
    for p in ["main.py", "a/b/c.mpy", "../x", "a//b", "./a", ".mpfota/x", "a\\b", "é.py",
              "x" * 64, "x" * 65, "é" * 32, "é" * 33, "", "a/.mpfota/ok"]:
        try:
            dev.check_path(p)
            d = "ok"
        except dev.PackageError as e:
            d = e.reason
        try:
            host.check_path(p)
            h = "ok"
        except host.PackageFormatError as e:
            h = e.reason
        assert d == h, p
