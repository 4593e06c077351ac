"""The HTTP side of `mpfota serve`: an aiohttp application on its own event-loop thread.

aiohttp parses HTTP/1.1 (llhttp): a malformed request line, header or Content-Length gets a
400 with the parser's reason and the connection is closed, so nothing after it can be read
as a second request. The rules run in worker threads (the database calls block); files are
sent with sendfile. One log line per request, after its answer (an aborted transfer too).

    with FotaServer("/tmp/fota-data") as srv:        # 127.0.0.1, a free port
        srv.store.publish("KEY", "DEMO_LuatOS-SoC_UNIX", "001.000.001", file="pkg.bin")
        url = srv.base + "/upgrade?"                  # libfota2 opts.url
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .errors import UserError
from .serverdb import Package, Store
from .serverrules import (
    DAILY_LIMIT,
    RETRY_AFTER_S,
    UNSATISFIABLE,
    Answer,
    BodyPlan,
    body_plan,
    covers_all,
    decide,
    no_upgrade,
    parse_check,
    parse_range,
)
from .serverstatus import status_page

BODY_MAX = 64 * 1024  # a POST check's body is read and ignored (libfota2 opts.method="POST")
KEEPALIVE_S = 30  # idle seconds before a keep-alive connection is closed
STOP_GRACE_S = 1.0  # transfers still running at stop() are cut after this
_WORKERS = 8
NOTE = web.RequestKey("note", str)  # the handler's part of the log line
STARTED = web.RequestKey("started", float)  # time.monotonic() when the handler began
LOGGED = web.RequestKey("logged", bool)  # the handler wrote the line itself
_JSON = "application/json; charset=utf-8"


def _stderr_log(line: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} {line}", file=sys.stderr, flush=True)


def _line(request: web.BaseRequest, path: str, status: int | str, sent: int, ms: float,
          note: str) -> str:
    return f"{request.remote} {request.method} {path[:80]} {status} {sent}B {ms:.1f}ms {note}"


class _AccessLog(AbstractAccessLogger):
    """The line of a request the handler never saw: the HTTP parser refused it."""

    logger: Callable[[str], None]  # type: ignore[assignment] - FotaServer.log, not a Logger

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if request.get(NOTE) is not None:
            return  # the handler logged it
        text = getattr(response, "text", None) or ""
        self.logger(_line(request, "-", response.status, response.content_length or 0,
                          time * 1000, "bad request: " + " ".join(text.split())[:200]))

    @property
    def enabled(self) -> bool:
        return True


_quiet = logging.getLogger("mpfota.serve.aiohttp")
_quiet.propagate = False  # the access log line says what went wrong; no tracebacks on stderr
_quiet.disabled = True


class FotaServer:
    """The server, in-process: start() serves on a thread, stop() shuts it down cleanly.

    `log` gets one line per request; `clock` gives the time for day counters and bans
    (tests move it forward); `db` a postgresql:// URL for state shared by several servers."""

    def __init__(self, data_dir: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 0,
                 redirect_base: str | None = None, daily_limit: int = DAILY_LIMIT,
                 log: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time, db: str | None = None,
                 status: bool = False) -> None:
        self.store = Store(data_dir, db)
        self.host = host
        self.port = port
        if redirect_base and not redirect_base.endswith("/"):
            redirect_base += "/"
        self.redirect_base = redirect_base
        self.daily_limit = daily_limit
        self.log = log or _stderr_log
        self.clock = clock
        self.status = status
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> FotaServer:
        self._pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="mpfota-serve-db")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mpfota-serve",
                                        daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(30)
        except OSError as e:
            self.stop()
            raise UserError(f"cannot listen on {self.host}:{self.port}: "
                            f"{e.strerror or e}") from e
        return self

    async def _listen(self) -> None:
        app = web.Application(client_max_size=BODY_MAX)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=STOP_GRACE_S,
                                     access_log_class=_AccessLog, access_log=self.log,
                                     logger=_quiet, keepalive_timeout=KEEPALIVE_S)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=128, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if self._runner is not None:
            runner, self._runner = self._runner, None
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread:
            self._thread.join(5)
        loop.close()
        if self._pool:
            self._pool.shutdown(wait=True)
        self.store.close()

    def __enter__(self) -> FotaServer:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- requests -------------------------------------------------------------------------

    async def _run(self, fn: Callable, *args: object):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _log(self, request: web.Request, status: int | str, sent: int, note: str) -> None:
        request[LOGGED] = True
        ms = (time.monotonic() - request[STARTED]) * 1000
        self.log(_line(request, request.path, status, sent, ms, note).rstrip())

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """Answer, and log the line before a small answer leaves (what the client does next
        comes after it in a shared log) or after a file was sent."""
        request[NOTE] = ""
        request[STARTED] = time.monotonic()
        resp = await self._answer(request)
        if not request.get(LOGGED):
            body = getattr(resp, "body", None)
            sent = len(body) if isinstance(body, bytes) and request.method != "HEAD" else 0
            self._log(request, resp.status, sent, request[NOTE])
        return resp

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD", "POST"):
            request[NOTE] = "method not allowed"
            return web.Response(status=405, text="method not allowed\n",
                                headers={"Allow": "GET, HEAD, POST"})
        if request.body_exists:
            try:
                await request.read()  # libfota2 POST: the query decides, the body is ignored
            except web.HTTPRequestEntityTooLarge:
                request[NOTE] = f"body over {BODY_MAX} bytes"
                return web.Response(status=413, text=f"body over {BODY_MAX} bytes\n")
        path = request.path
        try:
            if path.startswith("/files/"):
                return await self._file(request, path[len("/files/"):])
            if path == "/healthz":
                return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})
            if path == "/status" and self.status:
                html = await self._run(status_page, self.store, self.clock())
                return web.Response(text=html, content_type="text/html",
                                    headers={"Cache-Control": "no-store"})
            return await self._check(request)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as e:  # noqa: BLE001 - a fault: answer 500, say why in the log
            request[NOTE] += f" internal error: {e.__class__.__name__}: {e}"
            return web.Response(status=500, text="internal error\n")

    async def _check(self, request: web.Request) -> web.StreamResponse:
        try:
            check = parse_check(request.rel_url.raw_query_string)
        except ValueError as e:
            return self._json(request, no_upgrade(3, f"bad query: {e}", 400))
        plans: list[BodyPlan | None] = []
        rng, if_range = request.headers.get("Range"), request.headers.get("If-Range")

        def whole(pkg: Package) -> bool:  # runs in decide's transaction
            if request.method == "HEAD":
                return False
            if self.redirect_base:  # the static server sends it: judge by the Range alone
                return covers_all(parse_range(rng, pkg.size or 0), pkg.size or 0)
            plans.append(body_plan(self.store, pkg.file or "", rng, if_range))
            return plans[-1] is not None and plans[-1].whole

        answer = await self._run(lambda: decide(
            self.store, check, now=self.clock(), addr=request.remote, whole=whole,
            daily_limit=self.daily_limit))
        request[NOTE] = (f"{check.style} {check.id_param or 'id'}={check.device[:40]} "
                         f"fw={check.firmware[:60]} v={check.version[:40]}")
        if answer.code is not None:
            return self._json(request, answer)
        pkg = answer.package
        assert pkg is not None and pkg.file is not None
        request[NOTE] += f" {answer.cause}"
        if self.redirect_base:
            location = self.redirect_base + quote(pkg.file)
            request[NOTE] += f" -> {location}"
            return web.Response(status=302, headers={"Location": location,
                                                     "Cache-Control": "no-store"})
        refund = None
        if answer.counted:  # a transfer that breaks takes back what the download gave
            def refund() -> None:
                if self._pool:
                    self._pool.submit(self.store.download_aborted, check.device, check.project,
                                      self.clock(), answer.claimed)
        return await self._file(request, pkg.file, pkg, plans[-1] if plans else None, refund)

    def _json(self, request: web.Request, answer: Answer) -> web.Response:
        request[NOTE] += f" code={answer.code} {answer.cause}"
        headers = {"Cache-Control": "no-store"}
        if answer.code == 43:
            headers["Retry-After"] = str(RETRY_AFTER_S)
        return web.Response(status=answer.status, body=answer.body, content_type=None,
                            headers={**headers, "Content-Type": _JSON})

    async def _file(self, request: web.Request, name: str, pkg: Package | None = None,
                    plan: BodyPlan | None = None,
                    refund: Callable[[], None] | None = None) -> web.StreamResponse:
        """Send a stored file (the plan decide already judged, when it did)."""
        plan = plan or body_plan(self.store, name, request.headers.get("Range"),
                                 request.headers.get("If-Range"))
        if plan is None:
            request[NOTE] += " no such file"
            return web.Response(status=404, text="not found\n")
        if plan.range == UNSATISFIABLE:
            return web.Response(status=416, headers={"Content-Range": f"bytes */{plan.size}"})
        first, last = plan.range or (0, plan.size - 1)
        resp = web.StreamResponse(status=206 if plan.range else 200)
        resp.content_type = "application/octet-stream"
        resp.content_length = last - first + 1
        resp.headers.update({"Accept-Ranges": "bytes", "ETag": plan.etag,
                             "Last-Modified": plan.last_modified})
        if plan.range:
            resp.headers["Content-Range"] = f"bytes {first}-{last}/{plan.size}"
        if pkg is not None:
            resp.headers["X-Fota-Version"] = pkg.version
            if pkg.sha256:
                resp.headers["X-Fota-Sha256"] = pkg.sha256
        sent = 0
        try:
            await resp.prepare(request)
            if request.method != "HEAD" and last >= first:
                await self._send(request, plan, first, last - first + 1)
                sent = last - first + 1
            await resp.write_eof()
        except (ConnectionError, asyncio.CancelledError) as e:
            if refund:
                refund()
            self._log(request, "-", 0, f"{request[NOTE]} aborted: {e.__class__.__name__}")
            raise
        self._log(request, resp.status, sent, request[NOTE])
        return resp

    async def _send(self, request: web.Request, plan: BodyPlan, offset: int,
                    count: int) -> None:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("connection lost")
        with open(plan.path, "rb") as f:
            await asyncio.get_running_loop().sendfile(transport, f, offset, count)
