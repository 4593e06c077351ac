# libfota2: the LuatOS remote-upgrade library (script/libs/libfota2.lua) on the mpfota engine.
#
#     import libfota2, lsys as sys
#     def fota_cb(ret):                      # 0 ok, 1 connect, 3 closed, 4 receive, 5 config
#         if ret == 0:
#             board.reset()
#     opts = {"url": "###http://my.server/fw.bin"}     # every field optional, see below
#     libfota2.request(fota_cb, opts)                  # returns at once; cb runs from a task
#     sys.timerLoopStart(libfota2.request, 4 * 3600000, fota_cb, opts)  # the seeds' pattern
#     h = libfota2.every(fota_cb, opts)      # the same with jitter, backoff and Retry-After
#
# opts (a dict, mutated in place as LuatOS mutates its table, so a periodic timer reuses the
# URL built by the first call): url, version, timeout, project_key, imei, firmware_name,
# server_cert, client_cert, client_key, client_password, method, headers, body; also
# callback(total, received[, userdata]) with userdata, as LuatOS's http layer reads them; and
# id_rule ("portable" or "model": which device-id rule, see docs/libfota2.md).
# Set by request(): url (built), url_done, method, project_key, version, firmware_name, fota.
#
# The URL, version, firmware-name and result-code rules are pure functions below (they run
# under CPython too, for tests/vectors/check.py); docs/libfota2.md lists every difference from
# LuatOS.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


DEFAULT_URL = "http://iot.openluat.com/api/site/firmware_upgrade?"
IOT_HOST = "iot.openluat.com"
TIMEOUT_MS = const(600000)  # LuatOS FOTA mode: HTTP_TIMEOUT * 2 when opts.timeout < 1000
LIB_VERSION = "202607021200"  # the LuatOS libfota2.version() this module follows

# Result codes (the callback's argument).
OK = const(0)
CONNECT_FAILED = const(1)
BAD_URL = const(2)  # documented by LuatOS, never produced by libfota2 (nor here)
SERVER_CLOSED = const(3)
RECEIVE_ERROR = const(4)
CONFIG_ERROR = const(5)

NOT_JSON = 1111111111111  # LuatOS's sentinel for "the platform's answer is not JSON"


class ConfigError(ValueError):
    """A request cannot be built (result 5); the message is the cause for the log."""


def version():
    # libfota2.version(): the LuatOS library revision this port follows.
    return LIB_VERSION


# ---------------------------------------------------------------------- pure rules


def _unset(v):
    # Lua's "not v": only nil and false (an empty string is set).
    return v is None or v is False


def __getattr__(name):
    # The LuatOS URL rules (version, firmware name, device id) live in libfota2url, loaded
    # when a URL is built: libfota2.<rule> still reaches them, and a ###URL never loads them.
    import libfota2url

    return getattr(libfota2url, name)


def prepare(opts, g, dev):
    """The synchronous part of libfota2.request(): fill in opts (mutated) and build the URL.

    g: the LuatOS globals {"PROJECT", "VERSION", "PRODUCT_KEY"}; dev: the board
    {"core_version", "bsp", "imei", "mac", "unique_id" (bytes), "model"}. Returns the
    device-id query that was used ("" when none was built); raises ConfigError (result 5)."""
    if not hasattr(opts, "get"):
        raise ConfigError("opts must be a dict, not %s" % type(opts).__name__)
    opts["fota"] = True
    url = opts.get("url")
    if url is None:
        url = opts["url"] = DEFAULT_URL
    if not isinstance(url, str):
        raise ConfigError("opts.url must be a string")
    query = ""
    if url[:3] != "###" and not opts.get("url_done"):
        from libfota2url import build

        query = build(opts, g, dev, url)
    elif url[:3] == "###":
        opts["url"] = url[3:]
    opts["url_done"] = True
    if _unset(opts.get("method")):
        opts["method"] = "GET"
    return query


def result_code(status=None, size=0, error=None, in_body=False):
    """The callback's code: from an HTTP status and the bytes written, or a LuatOS http error.

    200/206 with a non-empty body -> 0; -4 (connect) -> 1; -5 (closed) before the answer's
    head ended -> 3; else 4. A body cut short (-5 in_body) is 4, as LuatOS's FOTA mode reports
    it: luat_http_client.c on_complete, "fota body incomplete" -> HTTP_ERROR_FOTA."""
    if error is not None:
        if error == -4:
            return CONNECT_FAILED
        if error == -5 and not in_body:
            return SERVER_CLOSED
        return RECEIVE_ERROR
    if status in (200, 206) and size:
        return OK
    return RECEIVE_ERROR


def iot_code(body):
    """The IoT platform's "code" in a JSON answer; NOT_JSON when the answer is not a JSON
    object ({...}); None when the object has no code."""
    from libfota2log import iot_code

    return iot_code(body)


def iot_explain(code):
    # (label, explanation) of a platform code, for the log.
    from libfota2log import iot_explain

    return iot_explain(code)


def explain(ret):
    # Log what the seed's fota_cb logs for result `ret` ("fota", ret, then its meaning); the
    # callback itself still decides what to do (reboot after 0).
    from libfota2log import explain

    explain(ret)


def timeout_of(opts):
    # opts.timeout in ms; LuatOS's FOTA mode uses 600000 when it is below 1000 (or unset).
    t = opts.get("timeout")
    if isinstance(t, (int, float)) and not isinstance(t, bool) and t >= 1000:
        return int(t)
    return TIMEOUT_MS


# ------------------------------------------------------------------- device side


def _lsys():
    # The LuatOS scheduler when the app uses it, else None: a raw-image update through
    # libfota2 must not load lsys (and lnet) for an app that runs on asyncio alone.
    import sys

    return sys.modules.get("lsys")


def _globals():
    # The LuatOS globals live in lsys; an app that never imported lsys has set none of them.
    s = _lsys()
    if s is None:
        return {}
    return {"PROJECT": s.PROJECT, "VERSION": s.VERSION, "PRODUCT_KEY": s.PRODUCT_KEY}


def _spawn(fn, *args):
    # Run fn(*args) as a task: an lsys task when the app uses lsys (so that sys.run() waits
    # for it, as LuatOS's sys.run waits for libfota2's task), else a plain asyncio task.
    s = _lsys()
    if s is not None:
        return s.taskInit(fn, *args)
    import asyncio

    return asyncio.create_task(_logged(fn, args))


async def _logged(fn, args):
    # What lsys does for its tasks: an exception (from the callback) gets a log line.
    try:
        await fn(*args)
    except Exception as e:  # noqa: BLE001 - a task has nobody else to report to
        from mpfota import log

        log.error("libfota2", "task failed:", repr(e))


def _device():
    # The board's identity; a function the board lacks or that fails gives None.
    import board

    out = {}
    for key in ("core_version", "bsp", "imei", "mac", "unique_id", "model"):
        try:
            out[key] = getattr(board, key)()
        except Exception:  # noqa: BLE001 - any board error means "not available"
            out[key] = None
    return out


def _nothing(ret):
    pass


def _is_coro(r):
    return type(r).__name__ in ("generator", "coroutine")


async def _await(coro):
    await coro


def request(cb=None, opts=None):
    """libfota2.request(cbFnc, opts): check for an update and download it; returns None.

    cb(result) is called once, from a task (synchronously for result 5)."""
    from mpfota import log

    if opts is None:
        opts = {}
    if cb is None:
        cb = _nothing
    try:
        query = prepare(opts, _globals(), _device())
    except ConfigError as e:
        log.error("libfota2", e.args[0])
        r = cb(CONFIG_ERROR)
        if _is_coro(r):
            _spawn(_await, r)
        return
    log.info("libfota2.url", opts["method"], opts["url"])
    log.info("libfota2.imei/mac", query)
    log.info("libfota2.project_key", opts.get("project_key"))
    log.info("libfota2.firmware_name", opts.get("firmware_name"))
    log.info("libfota2.version", opts.get("version"))
    _spawn(_task, cb, opts)


async def _task(cb, opts):
    out = await check(opts)
    r = cb(out.code)
    if _is_coro(r):
        await r


class Outcome:
    # One check: code (the callback's), status (HTTP) or error (LuatOS http error number),
    # size (bytes written), body (start of a non-2xx answer), retry_after (from the answer),
    # iot (the platform's code, for iot.openluat.com).
    def __init__(self):
        self.code = RECEIVE_ERROR
        self.status = None
        self.error = None
        self.size = 0
        self.body = None
        self.retry_after = None
        self.iot = None
        self.in_body = False  # the error came after the answer's head (a body cut short)


_lock = None


async def check(opts):
    """One download attempt with a prepared opts (after request()); returns an Outcome.

    Checks run one at a time (they share the spare slot)."""
    global _lock
    import asyncio

    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        return await _check(opts)


def _progress(opts):
    fn = opts.get("callback")
    if fn is None:
        return None
    ud = opts.get("userdata")
    if ud is None:
        return lambda done, total: fn(total or 0, done)
    return lambda done, total: fn(total or 0, done, ud)


async def _check(opts):
    from mpfota import download, http, log
    from mpfota.errors import FotaError

    out = Outcome()
    url = opts.get("url")
    try:
        r = await download.fetch(
            url, method=opts.get("method") or "GET", headers=opts.get("headers"),
            body=opts.get("body"), server_cert=opts.get("server_cert"),
            client_cert=opts.get("client_cert"), client_key=opts.get("client_key"),
            client_password=opts.get("client_password"), timeout_ms=timeout_of(opts),
            retries=0, progress=_progress(opts))
    except http.HTTPError as e:
        out.error = e.code
        out.in_body = getattr(e, "in_body", False)
    except FotaError as e:
        out.error = e.code
    except Exception as e:  # noqa: BLE001 - a bug or a board error still gets a result
        log.error("libfota2", "check failed:", repr(e))
        out.error = http.ERR_STATE
    else:
        out.status, out.size, out.body = r.status, r.size, r.body
        out.retry_after = r.retry_after
    out.code = result_code(out.status, out.size, out.error, out.in_body)
    if out.code == RECEIVE_ERROR:
        try:
            _explain(out, url)
        except Exception as e:  # noqa: BLE001 - the diagnosis is log lines: the result stands
            log.error("libfota2", "diagnosis failed:", repr(e))
    return out


def _explain(out, url):
    # The log lines of a result 4 (LuatOS: log.info("fota", code, body) and, for the IoT
    # platform, what its JSON code means).
    from mpfota import log

    if out.error is None and out.status in (200, 206):
        log.info("fota", out.status, "empty body: nothing to update with")
        return
    log.info("fota", out.error if out.error is not None else out.status, out.body)
    if isinstance(url, str) and IOT_HOST in url and out.error is None:
        out.iot = code = iot_code(out.body)
        label, why = iot_explain(code)
        if isinstance(code, (list, dict)):  # printing it whole could exceed the recursion limit
            from mpfota.brief import brief

            code = brief(code)
        log.info("libfota2", "IoT platform code", code, label, why)


def every(cb=None, opts=None, period_ms=4 * 3600 * 1000, jitter=0.1, retry_ms=60000,
          first_ms=None):
    """request() every period_ms (+-jitter), sooner after failures (retry_ms doubling up to
    period_ms), never sooner than a Retry-After. Returns a fotatimer.Periodic (stop())."""
    import fotatimer

    return fotatimer.every(cb or _nothing, {} if opts is None else opts, period_ms, jitter,
                           retry_ms, first_ms)
