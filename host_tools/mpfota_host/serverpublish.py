"""What `mpfota server publish` checks before a release changes.

Refused (UserError, one line): a field the file contradicts; a core version (--core) that the
file's own header does not carry (an mpfota core image, an ESP32 app image, an mpfota package)
or a file with no header to read it from (a vendor package needs --opaque); a release package
that would silently change (--replace says it is meant). Warned: a firmware name no LuatOS
device sends, and a release that brings a core another release already brings.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from .errors import UserError
from .serverdb import ANY_CORE, Store, canonical_core, version_rules

# libfota2 sends firmware_name = PROJECT .. "_LuatOS-SoC_" .. rtos.bsp()
FIRMWARE_SHAPE = re.compile(r"[A-Za-z0-9_.-]+_LuatOS-SoC_[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Release:
    project: str
    firmware: str
    version: str
    core: str | None
    from_core: str


def package_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Release metadata from an mpfota package's manifest (docs/package-format.md): project
    (its PROJECT, the default project_key), firmware (the firmware name without the layout
    suffix: devices send PROJECT_LuatOS-SoC_BSP, the layout is checked on the device), version
    (to.script), core (to.core), from_core. Any other file (a LuatOS .bin, a core image) is
    an opaque blob: {} and the command line describes it."""
    from . import package  # only when publishing: the server itself does not need it

    with open(path, "rb") as f:
        if f.read(len(package.MAGIC)) != package.MAGIC:
            return {}
    info = package.read_manifest(path)  # PackageFormatError is a UserError
    firmware = version_rules().split_layout(info.firmware_name)[0]
    found = {"project": info.project, "firmware": firmware,
             "version": info.to_script, "core": info.to_core, "from_core": info.from_core}
    return {k: v for k, v in found.items() if v}


def _canonical(key: str, value: str) -> str:
    return canonical_core(value) if key in ("core", "from_core") else value


def _merge(option: str, given: str | None, meta: dict[str, str], key: str) -> str | None:
    """A release field from the command line or the package; they must agree when both."""
    found = meta.get(key)
    if given and found and _canonical(key, given) != _canonical(key, found):
        raise UserError(f"{option} {given!r} differs from the package's manifest ({found!r})")
    return given or found


def release_fields(project: str | None, firmware: str | None, version: str | None,
                   core: str | None, from_core: str | None, meta: dict[str, str],
                   field_max: int) -> Release:
    """The release a publish names, from the options and the package's manifest."""
    try:
        # The project_key devices send may differ from the package's PROJECT: --project wins.
        project = project or meta.get("project")
        firmware = _merge("--firmware", firmware, meta, "firmware")
        version = _merge("--version", version, meta, "version")
        core = _merge("--core", core, meta, "core")
        from_core = _merge("--from-core", from_core, meta, "from_core") or ANY_CORE
        core = canonical_core(core) if core else None
        from_core = canonical_core(from_core)
    except ValueError as e:
        raise UserError(str(e)) from e
    for name, value in (("--project", project), ("--firmware", firmware),
                        ("--version", version)):
        if not value:
            raise UserError(f"{name} is needed (the file is not a package that names it)")
        if len(value) > field_max or not value.isprintable():
            raise UserError(f"{name} {value[:40]!r}: expected printable text up to "
                            f"{field_max} characters")
    cause = version_rules().check(version)
    if cause:
        raise UserError(f"--version {version!r}: {cause}")
    assert project and firmware and version
    return Release(project, firmware, version, core, from_core)


def core_in_header(path: str | os.PathLike) -> tuple[str, str] | None:
    """(what the file is, the core version its header names), None when the file has no
    header this tool reads (mpfota core image, ESP32 app image, mpfota package)."""
    from . import esp32image, image, package

    with open(path, "rb") as f:
        head = f.read(64 * 1024)  # the ESP32 app descriptor sits in the first segment
    if head.startswith(package.MAGIC):
        found = package_metadata(path).get("core")
        return ("mpfota package", found) if found else None
    if head.startswith(image.MAGIC):
        return "mpfota core image", image.parse_header(head).version
    if head[:1] == bytes([esp32image.IMAGE_MAGIC]):
        with open(path, "rb") as f:
            try:
                app = esp32image.parse_app_image(f.read())
            except ValueError as e:
                raise UserError(f"{path}: ESP32 app image is damaged: {e}") from None
        return ("ESP32 app image", app.version) if app.version else None
    return None


def check_core(path: str | os.PathLike, core: str, opaque: bool) -> None:
    """--core must be the version the file's header carries (a device compares the two)."""
    found = core_in_header(path)
    if found is None:
        if opaque:
            return
        raise UserError(f"--core {core}: {path} has no core image header to check it against "
                        "(mpfota core image, ESP32 app image or mpfota package); for a vendor "
                        "package whose format this tool cannot read, add --opaque")
    kind, version = found
    try:
        same = canonical_core(version) == core
    except ValueError:
        same = False
    if not same:
        raise UserError(f"--core {core}: the {kind} {path} says its core is {version!r}")


def check_replace(store: Store, rel: Release, file_sha256: str | None, replace: bool) -> str:
    """Refuse to change a published package unless --replace; returns "new", "same" (the
    package is already there as it is) or "replace"."""
    old = store.package(rel.project, rel.firmware, rel.version, rel.from_core)
    if old is None:
        return "new"
    if old.sha256 == file_sha256 and (rel.core is None or old.core == rel.core):
        return "same"
    if old.file is None and file_sha256 is not None and rel.core in (None, old.core):
        return "new"  # an announced package (43) gets its file
    if not replace:
        raise UserError(f"release {rel.project} {rel.firmware} {rel.version} from core "
                        f"{rel.from_core} is already published with "
                        f"{old.file or 'no file (43)'}, core {old.core or '-'}; devices may "
                        "have it: publish a new version, or add --replace")
    return "replace"


def publish_warnings(store: Store, rel: Release) -> list[str]:
    """What is accepted but probably wrong."""
    warnings = []
    if not FIRMWARE_SHAPE.fullmatch(rel.firmware):
        warnings.append(f"firmware name {rel.firmware!r} does not have the "
                        "PROJECT_LuatOS-SoC_<bsp> shape libfota2 sends "
                        "(PROJECT .. \"_LuatOS-SoC_\" .. rtos.bsp()): no device may ask for it")
    if rel.core:
        for p in store.packages():
            if ((p.project, p.firmware) == (rel.project, rel.firmware)
                    and p.version != rel.version and p.core == rel.core):
                warnings.append(f"core {rel.core} is already published in release {p.version}: "
                                "boards on it refuse the same image again (the same-image "
                                "guard); publish a script package for them")
                break
    return warnings


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
