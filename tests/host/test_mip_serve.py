"""`mpfota serve-mip`: the real mpremote installs the device packages from it onto the virtual
board (`board serve --no-frozen`: only what mip copied to /lib can be imported), by index name
(compiled .mpy, and sources with --no-mpy) and by the repository layout's package URL."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from boardfixtures import MPREMOTE, serve
from mpfota_host import mippkg, mipserve, paths, vboard


@pytest.fixture(scope="module")
def index_url(tmp_path_factory):
    log = tmp_path_factory.mktemp("mip") / "serve-mip.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mpfota_host.cli", "serve-mip",
                                 "--port", "0"], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"serve-mip: (http://\S+)/ ", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield found.group(1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def mip(port: str, *args: str) -> set[str]:
    proc = subprocess.run([MPREMOTE, "connect", port, "mip", "install", *args],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and "Done" in proc.stdout, proc.stdout + proc.stderr
    return {ln.split(":", 1)[1].strip() for ln in proc.stdout.splitlines()
            if ln.startswith("Installing:")}


CHECK = """\
import libfota2, aliyun_ota
from umqtt.simple import MQTTClient
print("FROM", libfota2.__file__, aliyun_ota.__file__, MQTTClient.__module__)
"""


def test_mpremote_installs_by_name_and_by_url_from_the_local_index(index_url, tmp_path):
    vboard.init(tmp_path / "board", fs_size=2 << 20)  # room for four installs
    board = serve(tmp_path / "board", "--no-frozen")
    try:
        by_name = mip(board.port, "--index", index_url, "mpfota")
        aliyun = mip(board.port, "--index", index_url, "mpfota-aliyun")
        sources = mip(board.port, "--index", index_url, "--no-mpy", "--target", "/src",
                      "mpfota-update")
        by_url = mip(board.port, "--index", index_url, "--target", "/url",
                     f"{index_url}/device/libfota2.json")
    finally:
        board.stop()
    recommended = mippkg.modules(mippkg.RECOMMENDED)
    native = {m for m in recommended if mipserve._native(paths.DEVICE / m)}
    assert "mpfota/deltarun.py" in native  # viper: served as source, compiled by the board
    assert by_name == {f"/lib/{m if m in native else m[:-3] + '.mpy'}" for m in recommended}
    assert {"/lib/aliyun_ota.mpy", "/lib/mpfota/hmac.mpy", "/lib/umqtt/simple.mpy"} <= aliyun
    assert sources == {f"/src/{m}" for m in mippkg.modules(["update"])}
    assert by_url == {f"/url/{m}" for m in mippkg.modules(["libfota2"])}

    app = tmp_path / "check.py"
    app.write_text(CHECK)
    result = vboard.boot(board.directory, app=app, frozen=False, timeout=60)
    assert result.code == 0, result.text
    assert "FROM /lib/libfota2.mpy /lib/aliyun_ota.mpy umqtt.simple" in result.text


def test_only_the_listed_files_are_served(index_url):
    for path in ("/device/fota.py", "/package.json", "/package/py/umqtt.simple/latest.json",
                 "/package/py/mpfota/latest.json"):
        with urllib.request.urlopen(index_url + path) as resp:
            assert resp.status == 200 and resp.read(), path
    for path in ("/", "/host_tools/setup.py", "/device/../LICENSE",
                 "/package/py/nosuch/latest.json"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(index_url + path)
        assert err.value.code == 404, path
