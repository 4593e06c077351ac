"""Fuzzing of update packages as the device reads them: the header, the manifest, and the
sections streamed through mpfota.package.Installer on the virtual board (MicroPython unix port),
the part of the package code that cannot run under CPython (its pure parsing is fuzzed in
test_fuzz_parsers.py and test_package_rules.py).

Hypothesis damages good packages (flipped bytes, cuts, trailing bytes), rewrites their manifests
with a valid CRC (so the manifest rules are reached), and builds script sections entry by entry
with hostile paths and sizes but correct digests (so the entry parser and the staging are
reached). Every package must be installed or refused with a PackageError reason of
docs/package-format.md, never another exception; a refused package changes no live file and not
the boot record. `make fuzz` raises the number of batches with MPFOTA_FUZZ_EXAMPLES.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path

import pytest
from fixtures_package import FIRMWARE, PROJECT, VERSION, core, make, scripts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpdevice import run_code
from mpfota_host import image, vboard
from mpfota_host import package as pk

BATCH = 25
REASONS = {"format", "manifest_too_large", "truncated", "overflow", "digest", "signature",
           "project", "firmware", "layout", "rollback", "downgrade", "current", "cyclic", "base",
           "unsupported", "image", "space", "pending", "identity"}


def batches(default: int) -> int:
    n = int(os.environ.get("MPFOTA_FUZZ_EXAMPLES") or 0)
    return max(default, n // (4 * BATCH)) if n else default


GOOD = {
    "scripts": make([scripts()]),
    "core": make([core()], to_core="2.0.0", to_script=None),
    "both": make([core(), scripts()], to_core="2.0.0"),
}


def _split(data: bytes) -> tuple[dict, bytes]:
    info = pk.read_manifest(data)
    body = data[pk.HEADER_SIZE + len(info.manifest_bytes) + len(info.signature):]
    return json.loads(info.manifest_bytes), body


def _assemble(manifest: dict, body: bytes) -> bytes:
    raw = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    return pk.assemble(raw, b"", [body])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1, 2**33) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=6,
)
paths_ = st.one_of(
    st.sampled_from(["main.py", "app/a.py", "app/x.py", "lib/m.mpy", "config.json", "..",
                     "../escape.py", "a//b", "./a", ".mpfota/x", ".mpfota", "/abs.py", "a\\b",
                     "a:b", "x" * 64, "x" * 65, "\u00e9t\u00e9.py", "d/" * 20 + "f", " ", "a\x01",
                     "data/settings.json"]),
    st.text(max_size=10),
)
clean_paths = st.from_regex(r"[a-z]{1,8}(/[a-z0-9_]{1,8}){0,3}\.(py|mpy|json|bin)", fullmatch=True)


@st.composite
def entries_section(draw) -> bytes:
    """A package whose scripts section is built entry by entry, with correct digests."""
    hostile = draw(st.booleans())  # else every entry is well formed: the set installs
    body = bytearray()
    files = 0
    unpacked = 0
    seen = set()
    for _ in range(draw(st.integers(1, 6))):
        path = draw(paths_ if hostile else clean_paths)
        if not hostile and path in seen:
            continue
        seen.add(path)
        raw = path.encode("utf-8", "surrogatepass")
        data = draw(st.binary(max_size=2000))
        kind, plen, size = 1, len(raw), len(data)
        if hostile:
            kind = draw(st.sampled_from([1, 1, 1, 1, 0, 2]))
            plen = draw(st.sampled_from([len(raw)] * 4 + [0, len(raw) + 1, 255]))
            size = draw(st.sampled_from([len(data)] * 4 + [len(data) + 7, 2**32 - 1]))
        body += struct.pack("<BBI", kind, plen % 256, size) + raw + data
        files += 1
        unpacked += len(data)
    cut = [0, 0, 0, 3] if hostile else [0]
    body = bytes(body[:max(1, len(body) - draw(st.sampled_from(cut)))])
    off = [0, 0, 0, 1, -1] if hostile else [0]
    section = {"type": "scripts", "size": len(body), "md5": hashlib.md5(body).hexdigest(),
               "sha256": hashlib.sha256(body).hexdigest(),
               "files": files + draw(st.sampled_from(off)),
               "unpacked": unpacked + draw(st.sampled_from(off))}
    if hostile and draw(st.booleans()):
        section["keep"] = draw(st.lists(paths_, max_size=3))
    manifest = {"format": 1, "project": PROJECT, "firmware_name": FIRMWARE, "counter": 0,
                "from": {}, "to": {"script": "001.000.009"}, "sections": [section]}
    return _assemble(manifest, bytes(body))


@st.composite
def damaged(draw) -> tuple[str, bytes]:
    name = draw(st.sampled_from(["scripts", "scripts", "both", "core"]))
    data = GOOD[name]
    how = draw(st.sampled_from(["good", "flip", "cut", "append", "manifest", "entries"]))
    if how == "flip":
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.one_of(st.integers(0, 200), st.integers(0, len(data) - 1)))
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    elif how == "cut":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif how == "append":
        data += draw(st.binary(min_size=1, max_size=20))
    elif how == "manifest":
        manifest, body = _split(data)
        target = draw(st.sampled_from(["top", "section", "to", "from"]))
        key = draw(st.sampled_from(["format", "project", "firmware_name", "counter", "sections",
                                    "to", "from", "type", "size", "md5", "sha256", "files",
                                    "unpacked", "keep", "core", "script", "base_sha256"]))
        value = draw(st.one_of(json_values, st.sampled_from(
            ["core-delta", "scripts", "core", "2.0.0", "0.9.0", "001.000.000", "009.009.009",
             "DEMO_LuatOS-SoC_UNIX_2", 0, 2**32, len(body) + 1])))
        if target == "top":
            manifest[key] = value
        elif target == "section":
            manifest["sections"][draw(st.integers(0, len(manifest["sections"]) - 1))][key] = \
                value
        else:
            manifest.setdefault(target, {})[key] = value
        data = _assemble(manifest, body)
    elif how == "entries":
        data = draw(entries_section())
    return how, data


DEVICE = """
import binascii, hashlib, json, os
import bootrom

b = bootrom.boot()  # first: then every import comes from the board's view of the modules
assert b is not None
import vpartition
from mpfota import package, scripts
os.mount(os.VfsPosix(%r), "/host")
N = %d
try:
    os.mkdir("/data")
except OSError:
    pass
with open("/data/settings.json", "w") as f:
    f.write("user data")


def live():
    out = {}

    def walk(d):
        for e in os.ilistdir(d):
            p = d + e[0]
            if d == "/" and (e[0].startswith(".") or e[0] == "host"):
                continue
            if e[1] == 0x4000:
                walk(p + "/")
            else:
                with open(p, "rb") as f:
                    out[p] = binascii.hexlify(hashlib.sha256(f.read()).digest()).decode()

    walk("/")
    return out


record = vpartition.boot_record()
for i in range(N):
    before = live()
    try:
        m = package.install_file("/host/%%d.pkg" %% i, project=%r, version=%r, switch=False)
        r = {"ok": True, "to": m.to}
        scripts.Stager().abort()
    except package.PackageError as e:
        r = {"reason": e.reason, "msg": e.msg}
        if live() != before:
            r["changed"] = True
    except Exception as e:
        r = {"crash": repr(e)}
    if vpartition.boot_record() != record:
        r["switched"] = True
    try:
        os.remove("/.mpfota/journal")
    except OSError:
        pass
    print("R", json.dumps(r))
"""


def run_batch(batch: list[tuple[str, bytes]]) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="fuzz-pkg-") as tmp:
        d = Path(tmp)
        for i, (_, data) in enumerate(batch):
            (d / f"{i}.pkg").write_bytes(data)
        vboard.init(d / "board", slot_size=256 << 10, fs_size=256 << 10,
                    core_image=image.make_image(b"\x5a" * 40_000, "1.0.0"))
        proc = run_code(DEVICE % (str(d), len(batch), PROJECT, VERSION),
                        env={"MPFOTA_FLASH": str(d / "board")}, timeout=300)
    got = [json.loads(line[2:]) for line in proc.stdout.splitlines() if line.startswith("R ")]
    assert proc.returncode == 0 and len(got) == len(batch), proc.stdout[-3000:] + proc.stderr
    return got


def check(batch: list[tuple[str, bytes]], got: list[dict]) -> None:
    for (how, data), r in zip(batch, got, strict=True):
        where = f"{how} package ({len(data)} bytes, starts {data[:80]!r}) -> {r}"
        assert "crash" not in r and "switched" not in r and "changed" not in r, where
        if "reason" in r:
            assert r["reason"] in REASONS and r["msg"], where
        if how == "good":
            assert r.get("ok"), where


@settings(max_examples=batches(2), deadline=None, derandomize=not os.environ.get(
    "MPFOTA_FUZZ_EXAMPLES"), suppress_health_check=list(HealthCheck))
@given(st.lists(damaged(), min_size=BATCH, max_size=BATCH))
def test_damaged_packages_are_installed_or_refused_with_a_reason(batch):
    check(batch, run_batch(batch))


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_packages_install(name):
    check([("good", GOOD[name])], run_batch([("good", GOOD[name])]))
