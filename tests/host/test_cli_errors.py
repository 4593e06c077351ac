"""The `mpfota` command line: bad input gets one clear line and exit status 2, never a
traceback; every command's help carries examples, and the examples parse; --version.

The bad-input cases run the CLI's `main()` in a scratch folder (`serve`, which would keep
running, as a real `python -m mpfota_host.cli` process with a time limit); each case is then
checked as its own test. A case marked xfail
is a known gap in a module this file does not own (the reason names it): when it is fixed
the mark must go (strict).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from mpfota_host import __version__, cli, package, vboard


@dataclass
class Outcome:
    code: int | None  # None: still running at the timeout (then killed)
    out: str
    err: str


def run_cli(argv: list[str], cwd: Path, timeout: float = 30) -> Outcome:
    env = {**os.environ, "MPFOTA_SERVER_DATA": str(cwd / "server-data")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mpfota_host.cli", *argv],
        cwd=cwd,
        env=env,
        text=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        return Outcome(proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return Outcome(None, out, err)


# --- bad input -------------------------------------------------------------------------------


LONG = "2.0.0-" + "x" * 20  # a version label over 20 characters
PUB = "server publish --project K --firmware F"
ALI = "aliyun-mock --pk a --dn b --version 1"
PACK = "pack -o x.pkg --scripts app --bsp UNIX"


@dataclass(frozen=True)
class Case:
    cid: str
    args: str  # the command line after `mpfota`, shell-quoted
    fragment: str  # a piece of the error line
    xfail: str | None = None

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.args)


# Files made by `scratch`: body.bin (3 bytes), app/main.py, good.pkg (a valid package),
# deep.pkg (its manifest nested deeper than CPython's json reads), key.pem / key.pub.pem,
# board/ (a virtual board), damaged/ (one whose board.json is cut short, and damaged2/ whose
# flash.bin is).
CASES = [
    Case("board-init-size", "board init --flash b --slot-size 12x", "not a size"),
    Case("board-init-fs", "board init --flash b --fs-size 1K", "filesystem size"),
    Case("board-init-core", "board init --flash b --core missing.img", "cannot read"),
    Case("board-init-notimg", "board init --flash b --core body.bin", "too short"),
    Case("board-init-version", f"board init --flash b --core-version {LONG}", "longer than 20"),
    Case("board-init-exists", "board init --flash board", "already holds a board"),
    Case("board-run-app", "board run --flash board missing.py", "no such app file"),
    Case("board-run-cut", "board run --flash board --cut-after -1", "1 or more"),
    Case("board-run-boots", "board run --flash board --max-boots x", "whole number"),
    Case("board-run-scale", "board run --flash board --sleep-scale -1", "negative"),
    Case("board-run-file", "board run --flash body.bin --create", "cannot create a board"),
    Case("board-run-missing", "board run --flash no-such-board", "pass --create"),
    Case("board-serve-dir", "board serve --flash body.bin/b --create", "cannot create a board"),
    Case("board-serve-missing", "board serve --flash no-such-board", "pass --create"),
    Case("board-status-missing", "board status --flash no-such-board", "not a virtual board"),
    Case("board-status-flag", "board status --flash board --jsn", "unrecognized arguments"),
    Case("image-make-body", "image make --version 2.0.0 missing -o x.img", "cannot read"),
    Case("image-make-empty", "image make --version '' body.bin -o x.img", "empty"),
    Case("image-make-long", f"image make --version {LONG} body.bin -o x.img", "longer than 20"),
    Case("image-make-out", "image make --version 2.0.0 body.bin -o body.bin/x", "cannot write"),
    Case("image-info-missing", "image info missing.img", "cannot read"),
    Case("image-info-short", "image info body.bin", "too short"),
    Case("deploy-port", "deploy --port no-such-tty", "cannot query the board"),
    Case("deploy-app", "deploy --port no-such-tty --app missing.py", "no such file"),
    Case("deploy-romfs-sources", "deploy --port no-such-tty --romfs --no-compile",
         "leave out --no-compile"),
    Case("romfs-arch", "romfs -o x.romfs", "--port PORT or --arch ARCH"),
    Case("romfs-out", "romfs -o body.bin/x.romfs --arch x64", "cannot write"),
    Case("romfs-port", "romfs -o x.romfs --port no-such-tty", "cannot query the board"),
    Case("board-init-romfs", "board init --flash b --romfs body.bin", "not a ROMFS image"),
    Case("board-init-romfs-size", "board init --flash b --romfs-size 1000", "positive multiple"),
    Case("demo-flash", "demo --flash body.bin", "not a virtual board"),
    Case("bench-size", "bench --sizes 12Q", "unknown size"),
    Case("bench-repeat", "bench --repeat 0 --no-delta", "repeat"),
    Case("delta-missing", "delta missing1 missing2 -o p.patch", "cannot read"),
    Case("delta-out", "delta body.bin body.bin -o body.bin/p", "cannot write"),
    Case("aliyun-firmware", f"{ALI} --broker 127.0.0.1:1 --firmware missing.img", "cannot read"),
    Case("aliyun-broker", f"{ALI} --broker nonsense --firmware body.bin", "HOST:PORT"),
    Case("pack-nothing", "pack -o x.pkg", "nothing to pack"),
    Case("pack-core", "pack -o x --core missing.img --project D --bsp UNIX --core-version 2.0.0",
         "cannot read"),
    Case("pack-version", f"{PACK} --script-version 1.2 --no-compile", "001.000.001"),
    Case("pack-counter", f"{PACK} --counter -5 --no-compile", "counter"),
    Case("pack-mpy", f"{PACK} --mpy-version abc", "--mpy-version"),
    Case("pack-key", f"{PACK} --key body.bin --no-compile", "PEM"),
    Case("pack-out", "pack -o body.bin/x.pkg --scripts app --bsp UNIX --no-compile",
         "cannot write"),
    Case("keygen-exists", "keygen -o key", "exists"),
    Case("keygen-out", "keygen -o body.bin/k", "cannot write"),
    Case("keygen-bits", "keygen -o k2 --bits 1000", "invalid choice"),
    Case("inspect-missing", "inspect missing.pkg", "cannot read"),
    Case("inspect-short", "inspect body.bin", "header"),
    Case("inspect-key", "inspect good.pkg --key key.pem", "not a public key"),
    Case("inspect-deep", "inspect deep.pkg", "nests deeper than this tool reads"),
    Case("board-run-json", "board run --flash damaged", "cannot read damaged/board.json"),
    Case("board-status-json", "board status --flash damaged", "cannot read damaged/board.json"),
    Case("board-run-flash", "board run --flash damaged2", "damaged2/flash.bin holds 1000 bytes"),
    Case("board-status-flash", "board status --flash damaged2",
         "damaged2/flash.bin holds 1000 bytes"),
    Case("scenario-number", "scenario 7", "invalid choice"),
    Case("scenario-flash", "scenario 1 --flash app", "not a virtual board"),
    Case("serve-port", "serve --port 99999", "port"),
    Case("serve-mip-port", "serve-mip --port 99999", "0..65535"),
    Case("serve-mip-host", "serve-mip --host 203.0.113.9 --port 0 --no-mpy", "cannot listen"),
    Case("serve-data", "serve --port 0 --data body.bin/d", "body.bin/d"),
    Case("serve-limit", "serve --port 0 --daily-limit -3", "daily-limit"),
    Case("serve-redirect", "serve --port 0 --redirect-base notaurl", "http(s)"),
    Case("publish-version", f"{PUB} --version 1.2 body.bin", "xxx.yyy.zzz"),
    Case("publish-file", f"{PUB} --version 001.000.001 missing.bin", "no such file"),
    Case("publish-core", f"{PUB} --version 001.000.001 --core abc body.bin", "core version"),
    Case("server-retract", "server retract --project K --firmware F --version 9.9.9",
         "no release"),
    Case("server-data", "server devices --data body.bin/d", "cannot open"),
    Case("server-allow", "server allow ID1", "--project"),
    Case("load-devices", "serve-load --devices 0", "--devices"),
    Case("load-size", "serve-load --size 12Q", "invalid int"),
    Case("load-seconds", "serve-load --seconds -1", "--seconds"),
    Case("sweep-kind", "sweep --kinds nosuch", "unknown kind"),
    Case("sweep-layout", "sweep --layouts z", "unknown layout"),
    Case("sweep-sample", "sweep --sample 0 --kinds core", "--sample"),
    Case("unknown-command", "nosuchcmd", "invalid choice"),
]  # fmt: skip


def scratch(root: Path) -> None:
    (root / "body.bin").write_bytes(b"hi\n")
    (root / "app").mkdir()
    (root / "app" / "main.py").write_text('PROJECT = "D"\nVERSION = "001.000.001"\n')
    vboard.init(root / "board", slot_size=64 << 10, fs_size=64 << 10)
    for name in ("damaged", "damaged2"):
        vboard.init(root / name, slot_size=64 << 10, fs_size=64 << 10)
    (root / "damaged" / "board.json").write_text('{"size":')
    with open(root / "damaged2" / "flash.bin", "r+b") as f:
        f.truncate(1000)
    deep = b'{"format":' + b"[" * 1500 + b"]" * 1500 + b"}"
    (root / "deep.pkg").write_bytes(package.assemble(deep, b"", []))
    made = [
        run_cli(["keygen", "-o", "key"], root),
        run_cli(["pack", "-o", "good.pkg", "--scripts", "app", "--bsp", "UNIX", "--no-compile"],
                root),
    ]  # fmt: skip
    assert all(m.code == 0 for m in made), made


def run_in_process(argv: list[str], cwd: Path) -> Outcome:
    """cli.main(argv) in this process (the console script's code path, without paying for a
    Python start per case); a traceback would land in `err` as it would on the terminal."""
    out, err = (io.TextIOWrapper(io.BytesIO(), encoding="utf-8") for _ in range(2))
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(argv)
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 2
            except Exception:  # noqa: BLE001 - what the user would see
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(old)
    texts = []
    for stream in (out, err):  # a text stream with a .buffer, as sys.stdout has
        stream.flush()
        texts.append(stream.buffer.getvalue().decode(errors="replace"))
    return Outcome(code, *texts)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    root = tmp_path_factory.mktemp("cli")
    scratch(root)
    # `serve` runs until stopped when it accepts its input: those cases run as real processes
    # with a time limit, meanwhile the others run in this process.
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {
            c.cid: pool.submit(run_cli, c.argv, root, 5) for c in CASES if c.argv[0] == "serve"
        }
        results = {}
        old = os.environ.get("MPFOTA_SERVER_DATA")
        os.environ["MPFOTA_SERVER_DATA"] = str(root / "server-data")
        try:
            for c in CASES:
                if c.cid not in futures:
                    results[c.cid] = run_in_process(c.argv, root)
        finally:
            if old is None:
                os.environ.pop("MPFOTA_SERVER_DATA")
            else:
                os.environ["MPFOTA_SERVER_DATA"] = old
        results.update({cid: f.result() for cid, f in futures.items()})
    return results


def _case_param(c: Case):
    marks = [pytest.mark.xfail(reason=c.xfail, strict=True)] if c.xfail else []
    return pytest.param(c, id=c.cid, marks=marks)


@pytest.mark.parametrize("case", [_case_param(c) for c in CASES])
def test_bad_input_is_one_line_and_exit_2(outcomes, case):
    o, fragment = outcomes[case.cid], case.fragment
    assert "Traceback" not in o.out + o.err, o.err
    assert o.code == 2, f"exit {o.code}\n{o.out}\n{o.err}"
    lines = [ln for ln in o.err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    assert errors == [lines[-1]], o.err  # one error line, the last thing printed
    assert re.match(r"mpfota( [\w-]+)*: error: ", lines[-1]), lines[-1]
    assert fragment in lines[-1], lines[-1]


def test_every_subcommand_has_a_bad_input_case():
    covered = {c.argv[0] for c in CASES}
    commands = {name.split()[0] for name, _ in walk(cli.build_parser()) if name}
    assert commands <= covered, f"no bad-input case for {sorted(commands - covered)}"


def test_no_command_prints_the_help_with_status_2(tmp_path):
    o = run_cli([], tmp_path)
    assert o.code == 2 and "usage: mpfota" in o.out and "examples:" in o.out


def test_version(tmp_path):
    o = run_cli(["--version"], tmp_path)
    assert (o.code, o.out.strip()) == (0, f"mpfota {__version__}")


# --- help: examples in every command's help, and they parse ----------------------------------


def walk(parser: argparse.ArgumentParser, name: str = ""):
    """(command words, parser) for the parser and every sub-parser below it."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word, sub in action.choices.items():
                yield from walk(sub, f"{name} {word}".strip())


def examples(help_text: str) -> list[str]:
    """The `mpfota ...` command lines of a help's "example(s):" section (continuations
    joined, a description after two spaces cut)."""
    found = re.search(r"(?im)^examples?:\s*$", help_text)
    if not found:
        return []
    cmds, cur = [], ""
    for line in help_text[found.end() :].splitlines():
        s = line.strip()
        if cur or s.startswith("mpfota "):
            cur = f"{cur} {s.rstrip(chr(92)).strip()}".strip()
            if not s.endswith("\\"):
                cmds.append(re.split(r"\s{2,}", cur)[0])
                cur = ""
    return cmds


# Commands whose help has no examples yet, by the module that defines them (none now).
NO_EXAMPLES: dict[str, str] = {}

HELPS = list(walk(cli.build_parser()))


@pytest.mark.parametrize(
    "name, parser",
    [
        pytest.param(
            n,
            p,
            id=n or "mpfota",
            marks=[
                pytest.mark.xfail(
                    reason=f"{NO_EXAMPLES[n]}: `mpfota {n} -h` has no examples", strict=True
                )
            ]
            if n in NO_EXAMPLES
            else [],
        )
        for n, p in HELPS
    ],
)
def test_every_help_has_examples(name, parser):
    assert examples(parser.format_help()), f"`mpfota {name} -h` shows no example"


def test_every_example_in_a_help_parses():
    parser = cli.build_parser()
    seen = 0
    for name, sub in HELPS:
        for example in examples(sub.format_help()):
            seen += 1
            try:
                args = parser.parse_args(shlex.split(example)[1:])
            except SystemExit:
                pytest.fail(f"`mpfota {name} -h` example does not parse: {example}")
            assert getattr(args, "func", None), example
    assert seen >= 10
