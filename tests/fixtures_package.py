"""Update packages for tests: signing keys, good and bad packages, served by the HTTP test server.

Loaded as a plugin (tests/conftest.py `pytest_plugins`). Packages are built with the real host
packer (mpfota_host.package) for the default test board (core 1.0.0, 256 KiB slots, bsp UNIX,
layout _1), the project DEMO and the running script VERSION 001.000.000, and served by an HTTP
test server of their own.

package_kit (session): device side {"base": http base, "packages": {name: {"path", "size",
    "file"}}, "pub_pem", "pub_der_hex", "other_pub_pem", "project", "firmware_name", "version"}.
    A package is fetched as base + path; "file" is its host path (readable before vb.boot()).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from fixtures_http import hs
from images import core_image
from mpfota_host import image
from mpfota_host import package as pk

PROJECT = "DEMO"
FIRMWARE = "DEMO_LuatOS-SoC_UNIX_1"
VERSION = "001.000.000"  # the script VERSION device tests say they run
NEXT = "001.000.001"


def script_files(version: str, extra: dict[str, bytes] | None = None) -> list[tuple[str, bytes]]:
    """A small app: main.py, two modules in app/, a default config.json (a keep file)."""
    tag = version.encode()
    files = {
        "main.py": b'PROJECT = "DEMO"\nVERSION = "' + tag + b'"\nprint("main", VERSION)\n',
        "app/a.py": b'V = "' + tag + b'"\n',
        "app/b.py": b'V = "' + tag + b'"\n' + b"# padding\n" * 300,
        "config.json": b'{"default": "' + tag + b'"}',
    }
    files.update(extra or {})
    return sorted(files.items())


def make(sections: list[pk.Section], *, to_script: str | None = NEXT, to_core: str | None = None,
         key=None, firmware: str = FIRMWARE, project: str = PROJECT, **kw) -> bytes:
    return pk.build(project=project, firmware_name=firmware, sections=sections,
                    to_core=to_core, to_script=to_script, key=key, **kw)


def scripts(version: str = NEXT, keep=("config.json",), **kw) -> pk.Section:
    return pk.scripts_section(script_files(version, **kw), keep)


def core(version: str = "2.0.0", size: int = 40_000) -> pk.Section:
    return pk.Section("core", core_image(version, size))


def core_delta(base: str = "1.0.0", to: str = "2.0.0", streamed: bool = False) -> pk.Section:
    """A core-delta section rebuilding a 2.0.0 image from the test board's core (`base`): the
    body with a block inserted and a few bytes changed, as a firmware change looks
    (`streamed`: a format-2 patch, applied as it arrives)."""
    old = core_image(base)
    body = bytearray(old[image.HEADER_SIZE:])
    body[5000:5000] = b"new code " * 200
    body[30000:30008] = b"patched!"
    return pk.delta_section(old, image.make_image(bytes(body), to), streamed)


def flip(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0x01
    return bytes(out)


def resign_manifest(data: bytes, change) -> bytes:
    """Rewrite the manifest with change(dict), fixing the header CRC but keeping the old
    signature (a tampered package that still looks well formed)."""
    info = pk.read_manifest(data)
    manifest = json.loads(info.manifest_bytes)
    change(manifest)
    raw = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    body = data[pk.HEADER_SIZE + len(info.manifest_bytes) + len(info.signature):]
    return pk.assemble(raw, info.signature, [body])


def bad_packages(key, other_key) -> dict[str, bytes]:
    """One package per way to be wrong, each otherwise valid for the test board."""
    both = make([core(), scripts()], to_core="2.0.0")
    info = pk.read_manifest(both)
    core_at = info.section("core").offset
    scripts_at = info.section("scripts").offset
    overflow_body = pk.ENTRY.pack(pk.ENTRY_FILE, 7, 5000) + b"main.py" + b"x" * 100
    overflow = pk.Section("scripts", overflow_body, {"files": 1, "unpacked": 5000})
    big_manifest = json.dumps({"format": 1, "project": PROJECT, "note": "x" * 5000}).encode()
    garbage_delta = pk.Section("core-delta", b"\x01" * 100, {"base_sha256": "ab" * 32})
    return {
        "truncated-core": both[: core_at + 20_000],
        "truncated-scripts": both[:-5],
        "truncated-manifest": both[:40],
        "digest-core": flip(both, core_at + 12_345),
        "digest-scripts": flip(both, scripts_at + 30),
        "crc-manifest": flip(both, pk.HEADER_SIZE + 10),
        "unsigned": both,
        "signature-other-key": make([core(), scripts()], to_core="2.0.0", key=other_key),
        "signature-tampered": resign_manifest(
            make([scripts()], key=key), lambda m: m["to"].update(script="009.000.009")),
        "layout": make([scripts()], firmware="DEMO_LuatOS-SoC_UNIX_2"),
        "firmware": make([scripts()], firmware="DEMO_LuatOS-SoC_ESP32_1"),
        "project": make([scripts()], project="OTHER", firmware="OTHER_LuatOS-SoC_UNIX_1"),
        "downgrade-script": make([scripts("000.009.009")], to_script="000.009.009"),
        "same-script": make([scripts(VERSION)], to_script=VERSION),
        "downgrade-core": make([core("0.9.0")], to_core="0.9.0", to_script=None),
        "current-core": make([core("1.0.0")], to_core="1.0.0", to_script=None),
        "cyclic": make([core(), scripts(VERSION)], to_core="2.0.0", to_script=VERSION),
        "rollback-counter": make([scripts()], counter=1),
        "base-core": make([scripts()], from_core="0.5.0"),
        "manifest-too-large": pk.assemble(big_manifest, b"", [b"\0" * 64]),
        "overflow-entry": make([overflow]),
        "overflow-trailing": make([scripts()]) + b"trailing bytes",
        "core-too-big": make([core("2.0.0", 300_000)], to_core="2.0.0", to_script=None),
        "core-delta-garbage": make([garbage_delta], to_core="2.0.0", to_script=None),
        "core-delta-other-base": make([core_delta(base="1.5.0")], to_core="2.0.0",
                                      to_script=None),
        "not-bootable": make([pk.Section("core", b"\x00" * 5000)], to_core="2.0.0",
                             to_script=None),
        # The manifest claims 2.0.0 (which the version rules accept); the image says 3.0.0.
        "core-version-mismatch": make([core("3.0.0")], to_core="2.0.0", to_script=None),
        "delta-version-mismatch": make([core_delta(to="3.0.0")], to_core="2.0.0",
                                       to_script=None),
        # Script sets that would replace the user's things (the tests give the board a folder
        # /data and a user file /notes.txt).
        "scripts-file-over-folder": make([scripts(extra={"data": b"a file named data"})]),
        "scripts-under-user-file": make([scripts(extra={"notes.txt/x.py": b"x = 1"})]),
        "scripts-over-user-file": make([scripts(extra={"notes.txt": b"package notes"})]),
    }


ESP32_FIRMWARE = "DEMO_LuatOS-SoC_ESP32_1"  # the ESP32 board's bsp() under the fakes


def esp32_packages() -> dict[str, bytes]:
    from mpfota_host import esp32image

    app = esp32image.make_app_image(b"esp32 core 2.0.0 ".ljust(30_000, b"\x5a"), "2.0.0")
    return {
        "esp32-both": make([pk.Section("core", app), scripts()], to_core="2.0.0",
                           firmware=ESP32_FIRMWARE),
        "esp32-unix-core": make([core()], to_core="2.0.0", to_script=None,
                                firmware=ESP32_FIRMWARE),
    }


def good_packages(key) -> dict[str, bytes]:
    return {
        "scripts": make([scripts()]),
        "core": make([core()], to_core="2.0.0", to_script=None, counter=2),
        "both": make([core(), scripts()], to_core="2.0.0", counter=3),
        "signed": make([core(), scripts()], to_core="2.0.0", key=key, counter=3),
        "scripts-signed": make([scripts()], key=key),
        "scripts-next": make([scripts("001.000.002", extra={"app/c.py": b'V = "c"\n'})],
                             to_script="001.000.002"),
        "scripts-counter5": make([scripts()], counter=5),
        "scripts-file-logs": make([scripts(extra={"logs": b"a file named logs"})]),
        "core-delta": make([core_delta(), scripts()], to_core="2.0.0"),
        "core-delta-streamed": make([core_delta(streamed=True), scripts()], to_core="2.0.0"),
        "core-delta-streamed-other-base": make([core_delta(base="1.5.0", streamed=True)],
                                               to_core="2.0.0", to_script=None),
        "same-core-delta-streamed-scripts": make(
            [pk.delta_section(core_image("1.0.0"), core_image("1.0.0"), True), scripts()],
            to_core="1.0.0"),
        # A core the test board already runs, with new scripts (full, and as a delta).
        "same-core-scripts": make([core("1.0.0"), scripts()], to_core="1.0.0"),
        "same-core-delta-scripts": make([pk.delta_section(core_image("1.0.0"),
                                                          core_image("1.0.0")), scripts()],
                                        to_core="1.0.0"),
    }


def _der_hex(public_key) -> str:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).hex()


def _pem(public_key) -> str:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class PackageKit:
    def __init__(self, http_server, directory: Path) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.http = http_server
        self.dir = directory
        self.packages: dict[str, dict] = {}
        for name, data in {**good_packages(self.key), **esp32_packages(),
                           **bad_packages(self.key, self.other_key)}.items():
            self.add(name, data)

    def add(self, name: str, data: bytes) -> dict:
        f = self.dir / f"{name}.pkg"
        f.write_bytes(data)
        self.http.add_blob("pkg-" + name, data)
        entry = {"path": "/blob/pkg-" + name, "size": len(data), "file": str(f)}
        self.packages[name] = entry
        return entry

    def data(self, name: str) -> bytes:
        return Path(self.packages[name]["file"]).read_bytes()

    def to_device(self) -> dict:
        return {
            "base": self.http.base,
            "packages": self.packages,
            "pub_pem": _pem(self.key.public_key()),
            "pub_der_hex": _der_hex(self.key.public_key()),
            "other_pub_pem": _pem(self.other_key.public_key()),
            "project": PROJECT,
            "firmware_name": FIRMWARE,
            "version": VERSION,
        }


@pytest.fixture(scope="session")
def package_kit(tmp_path_factory):
    # On a server of its own: on the shared http_server, the packages' ~50 blobs would ride in
    # http_server's device-side value into every later device test (a 160K heap ran out).
    server = hs.HTTPTestServer().start()
    yield PackageKit(server, tmp_path_factory.mktemp("packages"))
    server.stop()


# DigestInfo of a SHA-256 digest (RFC 8017 §9.2, note 1), before the 32 digest bytes.
_SHA256_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def _bad_padding_signatures(key, digest: bytes) -> dict[str, str]:
    """Raw RSA signatures (made with the private key) of encoded messages that end in the
    right digest but are not PKCS#1 v1.5: what a verifier that only compares the tail accepts."""
    size = key.key_size // 8
    good_ps = b"\xff" * (size - 3 - len(_SHA256_INFO) - 32)
    forms = {
        "padding byte not 0xff": b"\x00\x01" + good_ps[:-1] + b"\xfe\x00",
        "block type 2": b"\x00\x02" + good_ps + b"\x00",
        "no zero separator": b"\x00\x01" + good_ps + b"\xff",
        "other DigestInfo": b"\x00\x01" + good_ps + b"\x00",
    }
    numbers = key.private_numbers()
    out = {}
    for name, prefix in forms.items():
        info = _SHA256_INFO if name != "other DigestInfo" else \
            _SHA256_INFO[:-3] + b"\x04\x04\x20"  # wrong tag before the digest
        em = prefix + info + digest
        assert len(em) == size, name
        sig = pow(int.from_bytes(em, "big"), numbers.d, numbers.public_numbers.n)
        out[name] = sig.to_bytes(size, "big").hex()
    return out


@pytest.fixture(scope="session")
def rsa_vectors():
    """Keys and PKCS#1 v1.5 SHA-256 signatures made by `cryptography`, for the device's rsa.

    Device side: {"keys": [{"bits", "pem", "der_hex", "pkcs1_der_hex", "message_hex",
    "sig_hex", "digest_hex"}], "small_pem" (1024-bit), "ec_pem" (not RSA), "pss_sig_hex"
    (a PSS signature of the first message: not PKCS#1 v1.5)}.
    """
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    def pub(key, fmt=serialization.PublicFormat.SubjectPublicKeyInfo,
            enc=serialization.Encoding.DER):
        return key.public_key().public_bytes(enc, fmt)

    keys = []
    first = None
    for bits in (2048, 3072, 4096):
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        first = first or key
        message = f"mpfota manifest signed with {bits} bits".encode()
        keys.append({
            "bits": bits,
            "pem": pub(key, enc=serialization.Encoding.PEM).decode(),
            "der_hex": pub(key).hex(),
            "pkcs1_der_hex": pub(key, serialization.PublicFormat.PKCS1).hex(),
            "message_hex": message.hex(),
            "digest_hex": hashlib.sha256(message).hexdigest(),
            "sig_hex": key.sign(message, padding.PKCS1v15(), hashes.SHA256()).hex(),
        })
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    eck = ec.generate_private_key(ec.SECP256R1())
    pss = first.sign(bytes.fromhex(keys[0]["message_hex"]),
                     padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    return {
        "keys": keys,
        "bad_padding": _bad_padding_signatures(first, bytes.fromhex(keys[0]["digest_hex"])),
        "small_pem": pub(small, enc=serialization.Encoding.PEM).decode(),
        "ec_pem": pub(eck, enc=serialization.Encoding.PEM).decode(),
        "pss_sig_hex": pss.hex(),
    }
