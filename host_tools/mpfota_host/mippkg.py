"""The device code's distribution files, all generated from the one definition below.

    python -m mpfota_host.mippkg            # rewrite the files
    python -m mpfota_host.mippkg --check    # exit 1 (and name them) when a file is stale

Generated files (docs/install.md says how they are used):

    package.json                 repository root: the recommended set, so that
                                 `mpremote mip install github:OWNER/mpfota` installs it
    device/<feature>.json        one mip package per feature (FEATURES), self-contained: it
                                 lists its own modules and those of every feature it needs
    boards/esp32/package.json    the ESP32 board module (`import board`)
    device/manifest.py           for freezing the modules into a MicroPython firmware

mip resolves a relative URL in "urls" against the folder of the package.json it read, and
sends any "../" as it is (neither mip nor mpremote normalises the path, and what a web server
makes of it varies), so every file a package lists lives in or below the package file's folder:
that is why the feature packages are device/<feature>.json files rather than files in their
own folders. Dependencies between our own features are resolved here (each package lists the
whole closure) because mip's "deps" entries are never relative.

Update packages (mpfota.package, .scripts, .bootapply, .version, .rsa) and the delta appliers
(mpfota.delta, .deltafmt; streamed: .deltafetch, .deltastream, .deltarun) are part of the
engine, not features of their own: `download.fetch` installs whatever package a server sends
(a core-delta section goes through mpfota.delta), and `confirm` covers a pending script set,
so the engine imports them all.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import __version__, paths

# micropython-lib packages, as mip's "deps" and the manifest's require() name them.
UMQTT = "umqtt.simple"


@dataclass(frozen=True)
class Feature:
    name: str
    summary: str
    modules: tuple[str, ...]  # paths under device/
    requires: tuple[str, ...] = ()  # features it needs
    deps: tuple[str, ...] = ()  # micropython-lib packages it needs


FEATURES: tuple[Feature, ...] = (
    Feature(
        "engine",
        "the FOTA engine: LuatOS `fota` API, HTTP client, the door to the spare slot, the "
        "journal, resume, confirmation, update packages (signed core, delta and script sets)",
        (
            "fota.py",
            "mpfota/__init__.py",
            "mpfota/bootapply.py",
            "mpfota/brief.py",
            "mpfota/confirm.py",
            "mpfota/crc32.py",
            "mpfota/errors.py",
            "mpfota/delta.py",
            "mpfota/deltafetch.py",
            "mpfota/deltafmt.py",
            "mpfota/deltarun.py",
            "mpfota/deltastream.py",
            "mpfota/download.py",
            "mpfota/downloadpkg.py",
            "mpfota/http.py",
            "mpfota/httpchunk.py",
            "mpfota/httpparse.py",
            "mpfota/httprange.py",
            "mpfota/httpredirect.py",
            "mpfota/httptls.py",
            "mpfota/journal.py",
            "mpfota/log.py",
            "mpfota/package.py",
            "mpfota/rsa.py",
            "mpfota/scripts.py",
            "mpfota/slot.py",
            "mpfota/status.py",
            "mpfota/version.py",
        ),
    ),
    Feature(
        "libfota2",
        "LuatOS libfota2 with lsys (sys), lnet (network readiness) and periodic checks",
        ("libfota2.py", "libfota2log.py", "libfota2url.py", "lsys.py", "lnet.py",
         "fotatimer.py"),
        requires=("engine",),
    ),
    Feature(
        "update",
        "the older Luat `update` API",
        ("update.py",),
        requires=("libfota2",),
    ),
    Feature(
        "aliyun",
        "Aliyun IoT OTA over MQTT (umqtt.simple from micropython-lib)",
        ("aliyun_ota.py", "mpfota/hmac.py"),
        requires=("engine",),
        deps=(UMQTT,),
    ),
    Feature(
        "triggers",
        "update triggers: TCP command, MQTT downlink (umqtt.simple), key",
        ("triggers/__init__.py", "triggers/key.py", "triggers/mqtt.py", "triggers/tcp.py"),
        requires=("libfota2",),
        deps=(UMQTT,),
    ),
)

BY_NAME = {f.name: f for f in FEATURES}

# What the repository root's package.json installs.
RECOMMENDED = ("libfota2",)

# The ESP32 board module (boards/esp32), a package of its own: the virtual board brings its
# own `board`, and a /lib/board.py there would shadow it.
ESP32_BOARD = ("board.py", "keys.py")

ROOT_PACKAGE = "package.json"
MANIFEST = "device/manifest.py"
ESP32_PACKAGE = "boards/esp32/package.json"


def closure(names: Iterable[str]) -> list[Feature]:
    """The named features and every feature they need, needed ones first."""
    out: list[Feature] = []
    visiting: list[str] = []

    def add(name: str) -> None:
        if name not in BY_NAME:
            raise ValueError(f"unknown feature {name!r}")
        feature = BY_NAME[name]
        if feature in out:
            return
        if name in visiting:
            raise ValueError(f"features need each other: {' -> '.join([*visiting, name])}")
        visiting.append(name)
        for need in feature.requires:
            add(need)
        visiting.pop()
        out.append(feature)

    for name in names:
        add(name)
    return out


def modules(names: Iterable[str]) -> list[str]:
    """Device-relative paths of every module the named features need, in definition order."""
    return [m for f in closure(names) for m in f.modules]


def deps(names: Iterable[str]) -> list[str]:
    found: list[str] = []
    for f in closure(names):
        found += [d for d in f.deps if d not in found]
    return found


def package_json(names: Iterable[str], url_prefix: str = "") -> dict:
    """A mip package.json: the files (URLs relative to the package file), deps, version."""
    names = list(names)
    return {
        "urls": [[m, url_prefix + m] for m in modules(names)],
        "deps": [[d, "latest"] for d in deps(names)],
        "version": __version__,
    }


def render_json(data: dict) -> str:
    """JSON with one [target, url] pair per line (diff-friendly), keys in a fixed order."""
    parts = []
    for key, value in data.items():
        if isinstance(value, list) and value:
            rows = ",\n".join("    " + json.dumps(v, ensure_ascii=False) for v in value)
            parts.append(f"  {json.dumps(key)}: [\n{rows}\n  ]")
        else:
            parts.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


# --- manifest.py -----------------------------------------------------------------------------

MANIFEST_HEAD = """\
# Freeze mpfota's device modules into a MicroPython firmware. In your board's manifest:
#
#     include("/path/to/mpfota/device/manifest.py", board="esp32")
#     include("/path/to/mpfota/device/manifest.py", aliyun=False, triggers=False, board="esp32")
#
# Options, as keyword arguments of include():
#   FEATURE=False   leave a feature out. Every feature is in by default, and a feature that
#                   is in brings the features it needs. The features:
{features}
#   board="esp32"   also freeze the ESP32 board module (boards/esp32); the default (None)
#                   freezes none: the board module comes from elsewhere
# A feature that needs umqtt.simple require()s it from micropython-lib.
#
# GENERATED by host_tools/mpfota_host/mippkg.py from the definition the mip package.json files
# come from: edit that, then run `python -m mpfota_host.mippkg`. See docs/install.md.
"""

WIDTH = 99


def _wrap(head: str, items: list[str], tail: str, indent: str) -> list[str]:
    """`head` + items joined by ", " + `tail`, wrapped under `indent` to WIDTH columns."""
    one = head + ", ".join(items) + tail
    if len(one) <= WIDTH:
        return [one]
    lines, line = [], head
    for i, item in enumerate(items):
        piece = item + (", " if i < len(items) - 1 else tail)
        if len(line) + len(piece.rstrip()) > WIDTH and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += piece
    lines.append(line.rstrip())
    return lines


def _tuple(items: Iterable[str]) -> str:
    items = [json.dumps(i) for i in items]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def _manifest_calls(mods: tuple[str, ...]) -> list[str]:
    """module() for top-level modules, one package() per package folder."""
    lines: list[str] = []
    groups: dict[str, list[str]] = {}
    for m in mods:
        if "/" in m:
            pkg, rest = m.split("/", 1)
            groups.setdefault(pkg, []).append(rest)
        else:
            lines.append(f"    module({json.dumps(m)})")
    for pkg, files in groups.items():
        head = f"    package({json.dumps(pkg)}, files=["
        lines += _wrap(head, [json.dumps(f) for f in files], "])", " " * len(head))
    return lines


def manifest_text() -> str:
    public = [f.name for f in FEATURES]
    users = [f.name for f in FEATURES if UMQTT in f.deps]
    listing = "\n".join(
        textwrap.fill(
            f.summary,
            WIDTH,
            initial_indent=f"#       {f.name:<10}",
            subsequent_indent="#" + " " * 17,
        )
        for f in FEATURES
    )
    out = [MANIFEST_HEAD.format(features=listing)]
    out += _wrap("options.defaults(", [f"{n}=True" for n in public] + ["board=None"], ")", "    ")
    out.append("")
    out.append("# Each feature and the features it needs.")
    out.append("_NEEDS = {")
    out += [f"    {json.dumps(f.name)}: {_tuple(f.requires)}," for f in FEATURES]
    out.append("}")
    out.append(f"_PUBLIC = {_tuple(public)}")
    out.append("_on = []")
    out.append("")
    out.append("")
    out.append("def _add(name):")
    out.append("    if name not in _on:")
    out.append("        for need in _NEEDS[name]:")
    out.append("            _add(need)")
    out.append("        _on.append(name)")
    out.append("")
    out.append("")
    out.append("for _name in _PUBLIC:")
    out.append("    if getattr(options, _name):")
    out.append("        _add(_name)")
    out.append("")
    for f in FEATURES:
        out.append(f"if {json.dumps(f.name)} in _on:")
        out += _manifest_calls(f.modules)
        out.append("")
    out.append("if " + " or ".join(f"{json.dumps(n)} in _on" for n in users) + ":")
    out.append(f"    require({json.dumps(UMQTT)})")
    out.append("")
    out.append('if options.board == "esp32":')
    out += [f'    module({json.dumps(m)}, base_path="../boards/esp32")' for m in ESP32_BOARD]
    out.append("elif options.board is not None:")
    out.append(
        '    raise ValueError("board=%r: mpfota has a board module for esp32 only"'
        " % (options.board,))"
    )
    return "\n".join(out) + "\n"


# --- all the files ---------------------------------------------------------------------------


def outputs() -> dict[str, str]:
    """Repository-relative path -> content of every generated file."""
    files = {ROOT_PACKAGE: render_json(package_json(RECOMMENDED, "device/"))}
    for f in FEATURES:
        files[f"device/{f.name}.json"] = render_json(package_json([f.name]))
    files[ESP32_PACKAGE] = render_json(
        {"urls": [[m, m] for m in ESP32_BOARD], "deps": [], "version": __version__}
    )
    files[MANIFEST] = manifest_text()
    return files


def stale(root: Path = paths.REPO) -> list[str]:
    """Generated files that are missing or differ from what the definition gives."""
    out = []
    for rel, text in outputs().items():
        path = root / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            out.append(rel)
    return out


def write(root: Path = paths.REPO) -> list[str]:
    changed = stale(root)
    for rel, text in outputs().items():
        if rel in changed:
            (root / rel).write_text(text, encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mpfota_host.mippkg",
        description="Write (or --check) package.json, device/*.json, boards/esp32/package.json "
        "and device/manifest.py from the feature definition in mippkg.py.",
    )
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    if args.check:
        old = stale()
        for rel in old:
            print(f"stale: {rel} (run python -m mpfota_host.mippkg)", file=sys.stderr)
        return 1 if old else 0
    for rel in write():
        print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
