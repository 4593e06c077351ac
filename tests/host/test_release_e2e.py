"""A release end to end, as a firmware team does it (the packages issue, item 5):

1. build v1 and v2 of a demo app (the seed's scenario-1 app, VERSION 001.000.000 / .001);
2. flash v1 with `mpfota deploy` (the real mpremote, over the pty of `mpfota board serve`);
3. `mpfota pack` a package with core 2.0.0 and the v2 scripts, `mpfota server publish` it,
   and run `mpfota serve`;
4. the board (deployed modules only, nothing frozen) upgrades core and scripts, reboots,
   confirms, and reports v2;
5. its next check is answered "already the latest" (27), with no download loop.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from boardfixtures import mpfota, serve
from images import core_image
from mpfota_host import scenarios, vboard

KEY = scenarios.PRODUCT_KEY


def _app(version: str, url: str) -> str:
    return scenarios.app_text(1, {"VERSION": version, "PRODUCT_KEY": KEY, "FOTA_URL": url,
                                  "RUN_FOR_MS": 1500})


def _start_server(data: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mpfota_host.cli", "serve", "--data", str(data), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()  # "mpfota serve: http://127.0.0.1:PORT (data ...)"
    assert "mpfota serve: http://" in line, line
    return proc, line.split()[2]


def test_deploy_pack_serve_upgrade_then_latest(make_vboard, tmp_path):
    board = make_vboard("release", slot_size=256 * 1024, fs_size=512 * 1024)
    data = tmp_path / "server"
    server, base = _start_server(data)
    try:
        url = base + "/upgrade?"
        v1 = tmp_path / "v1" / "main.py"
        v2_dir = tmp_path / "v2"
        v1.parent.mkdir()
        v2_dir.mkdir()
        v1.write_text(_app("001.000.000", url))
        (v2_dir / "main.py").write_text(_app("001.000.001", url))

        # 2. v1 onto the board with mpfota deploy, through mpremote and the pty.
        served = serve(board.path, "--no-frozen")
        try:
            done = mpfota("deploy", "--port", served.port, "--app", str(v1), timeout=180)
            assert done.returncode == 0, done.stdout + done.stderr
        finally:
            served.stop()

        # 3. the release: core 2.0.0 + the v2 scripts, for boards on core 1.0.0.
        core = tmp_path / "core-2.0.0.img"
        core.write_bytes(core_image("2.0.0", 60_000))
        pkg = tmp_path / "release.pkg"
        packed = mpfota("pack", "-o", str(pkg), "--core", str(core), "--scripts", str(v2_dir),
                        "--bsp", "UNIX", "--from-core", "1.0.0", "--mpy-version", "6.3")
        assert packed.returncode == 0, packed.stdout + packed.stderr
        published = mpfota("server", "publish", "--data", str(data), "--project", KEY, str(pkg))
        assert published.returncode == 0, published.stdout + published.stderr

        # 4. boots: v1 downloads and reboots; v2 on core 2.0.0 confirms and checks again.
        out = bytearray()
        code = vboard.run(board.path, frozen=False, max_boots=3, timeout=120,
                          stream=_Collect(out))
        text = out.decode(errors="replace")
        assert code == 0, text
        assert "I/user.fota 0" in text, text  # fota_cb(0): the package is in
        assert "package installed: core 2.0.0, script 001.000.001" in text, text
        # the v2 scripts on core 2.0.0 ask next, with libfota2's <core>.<X>.<Z> version
        assert "&version=2.0.0.001.001" in text, text
        # 5. the second check: 27, already the latest; one download in all.
        assert '"code": 27' in text, text
        assert text.count("package installed") == 1
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
    log = server.stdout.read() + server.stderr.read()
    downloads = [line for line in log.splitlines() if " 200 " in line and "/upgrade" in line]
    assert len(downloads) == 1, log


class _Collect:
    def __init__(self, buf: bytearray) -> None:
        self.buf = buf

    def write(self, data: bytes) -> None:
        self.buf += data

    def flush(self) -> None:
        pass
