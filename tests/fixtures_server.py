"""The FOTA server (`mpfota serve`) and a real nginx as pytest fixtures.

Loaded as a plugin from tests/conftest.py (`pytest_plugins = [..., "fixtures_server"]`).
Everything listens on 127.0.0.1 and is stopped at teardown.

fota_server      a started FotaServer on a fresh data directory; `.lines` holds its log lines
make_nginx       factory: make_nginx(root) -> Nginx serving `root` at `<base>/fota/` (Range,
                 ETag, If-Range as nginx does them), its access log at `<base>/_access.log`;
                 make_nginx(root, upstreams=[port, ...]) also passes every other path to
                 those servers in turn (a load balancer in front of several `mpfota serve`)
postgres         (session scope) a PostgreSQL cluster of its own on 127.0.0.1 in a temporary
                 directory, run as the postgres user: `.url(dbname)` makes a fresh database
state_db         parametrized: None (SQLite in the data directory) and the URL of an empty
                 PostgreSQL database (also in $MPFOTA_SERVER_DB, for the admin commands)
board_fota       for device tests: a direct server and a redirecting one (302 to nginx) on one
                 data directory, with core-image releases for the default virtual board.
                 Device side: {"base", "redirect_base", "nginx", "project", "firmware",
                 "script", "images": {name: {"size", "md5", "sha256", "version"}}}
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

NGINX = "/usr/sbin/nginx"

NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 512; }}
http {{
    log_format mp '$request_method $uri $status range=$http_range if_range=$http_if_range '
                  'sent=$body_bytes_sent';
    access_log {dir}/access.log mp;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    default_type application/octet-stream;
    keepalive_requests 10000;
    server {{
        listen 127.0.0.1:{port};
        location /fota/ {{ alias {root}/; }}
        location = /_access.log {{ alias {dir}/access.log; default_type text/plain; }}
{proxy}
    }}
{upstream}
}}
"""

# With upstreams: every path but /fota/ goes to the servers in turn, on kept-alive connections.
NGINX_PROXY = """        location / { proxy_pass http://fota_servers; proxy_http_version 1.1;
                     proxy_set_header Connection ""; proxy_next_upstream off; }"""
NGINX_UPSTREAM = """upstream fota_servers {{
{servers}
    keepalive 8;
}}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Nginx:
    """A real nginx (one process, no daemon) serving `root` at /fota/ on 127.0.0.1."""

    def __init__(self, root: Path, workdir: Path, upstreams: list[int] | None = None) -> None:
        self.upstreams = upstreams or []
        self.root = Path(root).resolve()
        self.dir = Path(workdir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def fota_base(self) -> str:
        """What `mpfota serve --redirect-base` takes: file names are appended to it."""
        return self.base + "/fota/"

    def access_log(self) -> list[str]:
        path = self.dir / "access.log"
        return path.read_text().splitlines() if path.exists() else []

    def start(self) -> Nginx:
        for _ in range(3):  # the free port can be taken between probe and bind: try again
            self.port = free_port()
            conf = self.dir / "nginx.conf"
            servers = "\n".join(f"    server 127.0.0.1:{p};" for p in self.upstreams)
            conf.write_text(NGINX_CONF.format(
                dir=self.dir, root=self.root, port=self.port,
                proxy=NGINX_PROXY if self.upstreams else "",
                upstream=NGINX_UPSTREAM.format(servers=servers) if self.upstreams else ""))
            self.proc = subprocess.Popen(
                [NGINX, "-p", str(self.dir), "-e", str(self.dir / "error.log"), "-c", str(conf)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                if _listening(self.port):
                    return self
                time.sleep(0.02)
            self.stop()
        log = (self.dir / "error.log").read_text() if (self.dir / "error.log").exists() else ""
        raise RuntimeError(f"nginx did not start: {log[-500:]}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture
def make_nginx(tmp_path):
    started: list[Nginx] = []

    def make(root: Path, upstreams: list[int] | None = None) -> Nginx:
        if not os.access(NGINX, os.X_OK):
            pytest.fail(f"{NGINX} is not installed (make setup installs it)")
        n = Nginx(root, tmp_path / f"nginx{len(started)}", upstreams).start()
        started.append(n)
        return n

    yield make
    for n in started:
        n.stop()


PG_BIN = Path("/usr/lib/postgresql")


class Postgres:
    """A throw-away PostgreSQL cluster: initdb and pg_ctl run as the postgres user (the
    server refuses to run as root), trust authentication, 127.0.0.1 only, no fsync."""

    def __init__(self) -> None:
        versions = sorted(PG_BIN.glob("*/bin/pg_ctl"))
        if not versions:
            raise RuntimeError(f"no PostgreSQL under {PG_BIN} (make setup installs it)")
        self.bin = versions[-1].parent
        self.dir = Path(tempfile.mkdtemp(prefix="mpfota-pg-"))
        self.port = 0
        self._made: set[str] = set()

    def _as_postgres(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True,
                              text=True, timeout=120)

    def start(self) -> Postgres:
        shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        done = self._as_postgres(str(self.bin / "initdb"), "-D", str(data), "-A", "trust",
                                 "-U", "postgres", "--no-sync", "-E", "UTF8")
        if done.returncode:
            raise RuntimeError(f"initdb: {done.stderr[-500:]}")
        for _ in range(3):  # the free port can be taken between probe and bind: try again
            self.port = free_port()
            done = self._as_postgres(
                str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"), "-w",
                "-t", "60", "start", "-o",
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off "
                "-c full_page_writes=off -c max_connections=40")
            if done.returncode == 0:
                return self
        log = (self.dir / "log").read_text() if (self.dir / "log").exists() else done.stderr
        raise RuntimeError(f"pg_ctl start: {log[-500:]}")

    def url(self, dbname: str) -> str:
        """A new, empty database (dropped first if it exists)."""
        import psycopg

        with psycopg.connect(self.url_of("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{dbname}"')
        return self.url_of(dbname)

    def emptied(self, dbname: str) -> str:
        """A database with no rows: made on first use, its tables emptied after that (much
        quicker than a new database for each test)."""
        import psycopg

        if dbname not in self._made:
            self._made.add(dbname)
            return self.url(dbname)
        with psycopg.connect(self.url_of(dbname), autocommit=True) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            if tables:
                conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables)
                             + " RESTART IDENTITY CASCADE")
        return self.url_of(dbname)

    def url_of(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def stop(self) -> None:
        if (self.dir / "data" / "postmaster.pid").exists():
            self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m",
                              "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    if os.geteuid() != 0:
        pytest.skip("PostgreSQL test cluster: needs root to run initdb as the postgres user")
    if not list(PG_BIN.glob("*/bin/pg_ctl")) or shutil.which("runuser") is None:
        pytest.skip(f"PostgreSQL is not installed under {PG_BIN} (make setup installs it)")
    pg = Postgres()
    try:
        pg.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        pg.stop()
        pytest.skip(f"could not start a PostgreSQL cluster: {e}")
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def state_db(request, monkeypatch):
    if request.param == "sqlite":
        return None
    url = request.getfixturevalue("postgres").emptied("rules")
    monkeypatch.setenv("MPFOTA_SERVER_DB", url)
    return url


class LoggedServer:
    """A FotaServer whose log lines are kept in `.lines`."""

    def __init__(self, data: Path, **kw) -> None:
        from mpfota_host.server import FotaServer

        self.lines: list[str] = []
        self.server = FotaServer(data, log=self.lines.append, **kw)

    def start(self) -> LoggedServer:
        self.server.start()
        return self

    def wait_lines(self, n: int, timeout: float = 5.0) -> list[str]:
        """The log once it has n lines (a line is written after its answer is sent)."""
        deadline = time.monotonic() + timeout
        while len(self.lines) < n and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.lines

    def last_line(self, count: int) -> str:
        """The log line of request number `count` (1-based), waiting for it."""
        return self.wait_lines(count)[count - 1]

    def __getattr__(self, name):  # base, store, stop, ...
        return getattr(self.server, name)


@pytest.fixture
def fota_server(tmp_path):
    srv = LoggedServer(tmp_path / "fota")
    srv.start()
    yield srv
    srv.stop()


# --- device tests: core images served to the default virtual board ----------------------

PROJECT = "mpfotaTestProjectKey0123456789ab"
FIRMWARE = "FOTA_TEST_LuatOS-SoC_UNIX"
SCRIPT = "001.000.000"  # the script VERSION the test devices report


def _body(version: str, size: int) -> bytes:
    seed = hashlib.sha256(version.encode()).digest()
    out = bytearray()
    while len(out) < size:
        seed = hashlib.sha256(seed).digest()
        out += seed
    return bytes(out[:size])


class BoardFota:
    def __init__(self, tmp: Path, make_nginx) -> None:
        from mpfota_host import image
        from mpfota_host.server import FotaServer

        data = tmp / "board-fota"
        self.direct = FotaServer(data, log=lambda line: None)
        self.images: dict[str, dict] = {}
        # The release: core 2.0.0 for boards on core 1.0.0 (the default test board), another
        # image for core 1.5.0 (one package per installed core, seed 002), same script.
        for name, version, size, from_core in (("core-2.0.0", "2.0.0", 60_000, "1.0.0"),
                                               ("core-2.0.0-from-1.5", "2.0.0", 50_000, "1.5.0")):
            data_bytes = image.make_image(_body(name, size), version)
            path = tmp / f"{name}.img"
            path.write_bytes(data_bytes)
            self.direct.store.publish(PROJECT, FIRMWARE, SCRIPT, core="2.0.0",
                                      from_core=from_core, file=path)
            self.images[name] = {"size": len(data_bytes), "version": version,
                                 "md5": hashlib.md5(data_bytes).hexdigest(),
                                 "sha256": hashlib.sha256(data_bytes).hexdigest()}
        self.nginx = make_nginx(self.direct.store.files)
        self.redirect = FotaServer(data, log=lambda line: None,
                                   redirect_base=self.nginx.fota_base)
        self.direct.start()
        self.redirect.start()

    def to_device(self) -> dict:
        return {"base": self.direct.base, "redirect_base": self.redirect.base,
                "nginx": self.nginx.base, "project": PROJECT, "firmware": FIRMWARE,
                "script": SCRIPT, "images": self.images}

    def close(self) -> None:
        self.redirect.stop()
        self.direct.stop()


@pytest.fixture
def board_fota(tmp_path, make_nginx):
    fx = BoardFota(tmp_path, make_nginx)
    yield fx
    fx.close()
