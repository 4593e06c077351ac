"""Every shell command shown in README.md is run, in order, so the README cannot drift.

The fenced `sh` blocks are split into commands (comments dropped, `\\` continuations joined,
heredocs kept with their command) and run one by one with bash, in one session, from a scratch
folder. What a reader's machine has and this one has not is substituted, always the same way:

    .venv/bin/...                  the repository's venv (absolute path)
    /tmp/...  and  /srv/fota       folders under the test's temporary directory
    8080                           a free port on 127.0.0.1
    --host 0.0.0.0                 --host 127.0.0.1 (test servers listen on the loopback only)
    /dev/pts/N                     the pty printed by the README's own `board serve`
    /dev/ttyUSB0                   the pty of a stand-in virtual board (`board serve
                                   --no-frozen`), served by the test for the ESP32 section
    github:OWNER/mpfota            the repository tree served over HTTP on 127.0.0.1, with a
                                   micropython-lib-style index for umqtt.simple passed to
                                   every `mip install` that names no --index of its own
                                   (tests/host/test_mip_install.py)
    micropython.bin                an ESP-IDF app image made by mpfota_host.esp32image
    make demo, make test           checked with `make -n` (running them here would recurse)
    make OTHER                     run for real, as `make -C <repository> OTHER`

A server command shown in the foreground (`mpfota serve`, `mpfota board serve`) or a command
ending in `&` runs in the background until a later server command wants its port (the reader
would have pressed Ctrl-C), `kill %1`, or the end of the test. Each command must exit with 0;
a few have their output checked against what the README says they print.

Also checked: the inline `mpfota ...` commands name real subcommands and options; the ESP32
error the README quotes is the board module's; relative links in the README and docs/README.md
and docs/install.md point to files that exist.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from boardfixtures import serve
from mpfota_host import cli, esp32image, paths, vboard
from test_mip_install import RepoServer, make_index

README = paths.REPO / "README.md"
SHELLS = ("sh", "bash", "shell", "console")


# --- reading the README ----------------------------------------------------------------------


@dataclass
class Block:
    lang: str
    text: str
    section: str  # the "## " heading it is under


def blocks(markdown: str) -> list[Block]:
    out, section = [], ""
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = re.match(r"^```(\w*)\s*$", line)
        if fence:
            body = []
            i += 1
            while i < len(lines) and lines[i].rstrip() != "```":
                body.append(lines[i])
                i += 1
            out.append(Block(fence.group(1), "\n".join(body), section))
        i += 1
    return out


def commands(script: str) -> list[str]:
    """Commands of a shell block: comment lines dropped, continuations joined, heredocs kept."""
    out: list[str] = []
    lines = script.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\") and i < len(lines):
            line = line[:-1].rstrip() + " " + lines[i].strip()
            i += 1
        here = re.search(r"<<-?\s*'?(\w+)'?", line)
        if here:
            body = []
            while i < len(lines) and lines[i] != here.group(1):
                body.append(lines[i])
                i += 1
            i += 1
            line = "\n".join([line, *body, here.group(1)])
        out.append(line)
    return out


def shell_blocks() -> list[Block]:
    return [b for b in blocks(README.read_text()) if b.lang in SHELLS]


# --- running them ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Background:
    command: str
    proc: subprocess.Popen
    log: Path
    port: str | None
    job: bool  # started with a trailing `&` (a shell job, for `kill %1`)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@dataclass
class Session:
    tmp: Path
    repo: RepoServer
    port: str = field(default_factory=lambda: str(free_port()))
    background: list[Background] = field(default_factory=list)
    outputs: list[tuple[str, str]] = field(default_factory=list)
    pts: str | None = None  # the README's own served board
    standin: object = None  # the stand-in for /dev/ttyUSB0

    def __post_init__(self) -> None:
        self.cwd = self.tmp / "work"
        self.cwd.mkdir()
        (self.tmp / "t").mkdir()
        self.cwd.joinpath("micropython.bin").write_bytes(
            esp32image.make_app_image(bytes(range(256)) * 100, "2.0.0")
        )

    def ttyusb(self) -> str:
        if self.standin is None:
            # Room for what the ESP32 section puts on it: deploy, then three mip routes.
            vboard.init(self.tmp / "esp32-standin", fs_size=1 << 20)
            self.standin = serve(self.tmp / "esp32-standin", "--no-frozen")
        return self.standin.port

    def substitute(self, cmd: str) -> str:
        repo = str(paths.REPO)
        # The README's own paths first: the repository itself may live under /tmp.
        cmd = re.sub(r"(?<![\w.])/tmp/", f"{self.tmp}/t/", cmd)
        cmd = cmd.replace("/srv/fota", f"{self.tmp}/srv/fota")
        cmd = cmd.replace(".venv/bin/", f"{repo}/.venv/bin/")
        cmd = re.sub(r"\b8080\b", self.port, cmd)
        cmd = cmd.replace("--host 0.0.0.0", "--host 127.0.0.1")
        if "/dev/ttyUSB0" in cmd:
            cmd = cmd.replace("/dev/ttyUSB0", self.ttyusb())
        if "/dev/pts/N" in cmd:
            assert self.pts, "the README uses /dev/pts/N before a `board serve`"
            cmd = cmd.replace("/dev/pts/N", self.pts)
        if "mip install" in cmd and "--index" not in cmd:  # a local index it names stays
            cmd = cmd.replace("mip install", f"mip install --index {self.repo.base}/index")
        cmd = cmd.replace("github:OWNER/mpfota", self.repo.base)
        cmd = re.sub(r"^make (demo|test)\b", rf"make -n -C {repo} \1", cmd)
        cmd = re.sub(r"^make ", f"make -C {repo} ", cmd)
        return cmd

    def run(self, shown: str) -> str:
        cmd = self.substitute(shown)
        if cmd.split("#")[0].strip() == "kill %1":
            jobs = [b for b in self.background if b.job and b.proc.poll() is None]
            assert jobs, "kill %1 with no job running"
            jobs[0].stop()
            return ""
        job = cmd.rstrip().endswith("&")
        words = shlex.split(cmd.split("\n")[0].rstrip("& "))
        server = len(words) > 1 and words[0].endswith("/mpfota") and words[1] == "serve"
        board = words[0].endswith("/mpfota") and words[1:3] == ["board", "serve"]
        if job or server or board:
            return self.start(cmd.rstrip().rstrip("&"), job, board)
        proc = subprocess.run(
            ["bash", "-c", cmd], cwd=self.cwd, capture_output=True, text=True, timeout=180
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"README command failed ({proc.returncode}): {shown}\n{out}"
        self.outputs.append((shown, out))
        return out

    def start(self, cmd: str, job: bool, board: bool) -> str:
        port = re.search(r"--port (\d+)", cmd)
        port = port.group(1) if port else None
        for other in self.background:
            if port and other.port == port:
                other.stop()  # the reader stops the previous server first
        log = self.tmp / f"bg-{len(self.background)}.log"
        with open(log, "w") as f:
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {cmd}"],
                cwd=self.cwd,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        bg = Background(cmd, proc, log, port, job)
        self.background.append(bg)
        # `serve` and `serve-mip` print their address once they listen.
        ready = "pty: " if board else r"mpfota serve(-mip)?: http" if "serve" in cmd else None
        deadline = time.monotonic() + 30
        while ready and not re.search(ready, log.read_text()):
            assert proc.poll() is None, f"{cmd} ended:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"{cmd} is not ready:\n{log.read_text()}"
            time.sleep(0.05)
        if board:
            self.pts = re.search(r"pty: (\S+)", log.read_text()).group(1)
        return ""

    def close(self) -> None:
        for bg in self.background:
            bg.stop()
        if self.standin is not None:
            self.standin.stop()


@pytest.fixture
def session(tmp_path):
    repo = RepoServer(make_index(tmp_path))
    s = Session(tmp_path, repo)
    try:
        yield s
    finally:
        s.close()
        repo.stop()


def expected_first_update_lines() -> list[str]:
    texts = [
        b
        for b in blocks(README.read_text())
        if b.lang == "text" and b.section.startswith("Your first update")
    ]
    assert len(texts) == 1
    return [ln for ln in texts[0].text.splitlines() if ln.strip()]


def test_every_shell_command_of_the_readme_runs(session):
    ran = 0
    for block in shell_blocks():
        for shown in commands(block.text):
            out = session.run(shown)
            ran += 1
            if "board run --flash /tmp/b1 /tmp/app.py" in shown:
                for line in expected_first_update_lines():
                    assert line in out, f"the README promises {line!r}:\n{out}"
                assert out.index("running core 1.0.0") < out.index("running core 2.0.0")
            if shown.startswith("curl -sI"):
                assert "302 Found" in out and "Location: http://dl.example/fota/" in out, out
            if 'exec "print(1)"' in shown:
                assert out.strip() == "1"
            if shown.startswith("make demo"):
                assert "mpfota demo" in out
            if shown.startswith("make test"):
                assert "pytest tests" in out
            if "mip install" in shown:
                assert "Done" in out
    assert ran >= 20, f"only {ran} commands found in README.md"


def test_the_readme_shows_only_runnable_shell_blocks():
    for block in blocks(README.read_text()):
        assert block.lang in (*SHELLS, "text", "python"), f"unknown block language {block.lang!r}"
    shown = [c for b in shell_blocks() for c in commands(b.text)]
    assert shown[:2] == [
        "make demo    # a full core update on the virtual board",
        "make test    # the whole test suite (pytest)",
    ]
    text = README.read_text()
    assert text.index("make demo") < text.index("## Your first update")


# --- inline commands, the quoted ESP32 error, links -------------------------------------------


def parsers() -> dict[str, argparse.ArgumentParser]:
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        out[name] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for word, sub in action.choices.items():
                    walk(sub, f"{name} {word}".strip())

    walk(cli.build_parser(), "")
    return out


def test_inline_mpfota_commands_name_real_subcommands_and_options():
    known = parsers()
    spans = re.findall(r"`(mpfota [^`]*)`", README.read_text())
    assert len(spans) >= 8
    for span in spans:
        words = shlex.split(span.replace("…", ""))[1:]
        name = ""
        while words and f"{name} {words[0]}".strip() in known:
            name = f"{name} {words.pop(0)}".strip()
        options = {o for a in known[name]._actions for o in a.option_strings}
        for word in words:
            if word.startswith("-"):
                assert word.split("=")[0] in options, f"`{span}`: no option {word}"


def test_the_quoted_esp32_error_is_the_board_modules():
    tree = ast.parse((paths.BOARDS / "esp32" / "board.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "ota_slots")
    fmt = next(
        n.left.value
        for n in ast.walk(fn)
        if isinstance(n, ast.BinOp) and isinstance(n.left, ast.Constant)
    )
    message = fmt % ("factory",)
    quoted = re.search(r"refuses with a\s+clear error \(`([^`]*)`\)", README.read_text())
    assert quoted, "README no longer quotes the error"
    assert " ".join(quoted.group(1).split()) in message


@pytest.mark.parametrize("doc", ["README.md", "docs/README.md", "docs/install.md"])
def test_relative_links_point_to_files(doc):
    path = paths.REPO / doc
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
        if re.match(r"\w+:", target):
            continue
        assert (path.parent / target).exists(), f"{doc}: broken link {target}"


def test_the_docs_index_links_every_page():
    index = (paths.REPO / "docs" / "README.md").read_text()
    linked = set(re.findall(r"\]\(([\w.-]+\.md)\)", index))
    pages = {p.name for p in (paths.REPO / "docs").glob("*.md")} - {"README.md"}
    assert pages - linked == set(), "docs/README.md does not link these pages"
    assert "docs/README.md" in README.read_text()
