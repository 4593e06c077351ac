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
_MAX_VERSION_LEN = const(64)


class ConfigError(ValueError):
    """A request cannot be built (result 5); the message is the cause for the log."""


def version():
    # libfota2.version(): the LuatOS library revision this port follows.
    return LIB_VERSION


# ---------------------------------------------------------------------- pure rules


def _unset(v):
    # Lua's "not v": only nil and false (an empty string is set).
    return v is None or v is False


def _digits_end(s, i):
    n = len(s)
    while i < n and "0" <= s[i] <= "9":
        i += 1
    return i


def version_groups(s):
    """Lua string.match(s, "(%d+).(%d+).(%d+)"): (x, y, z) strings or None.

    Unanchored, greedy with backtracking, and each "." matches any character, as in Lua."""
    if not isinstance(s, str) or len(s) > _MAX_VERSION_LEN:
        return None
    n = len(s)
    for i in range(n):
        e1 = _digits_end(s, i)
        for j in range(e1, i, -1):  # x = s[i:j], s[j] is the first "."
            if j >= n:
                continue
            e2 = _digits_end(s, j + 1)
            for m in range(e2, j + 1, -1):  # y = s[j+1:m], s[m] is the second "."
                if m >= n:
                    continue
                e3 = _digits_end(s, m + 1)
                if e3 > m + 1:
                    return s[i:j], s[j + 1 : m], s[m + 1 : e3]
    return None


def core_digits(core_version):
    # rtos.version():sub(2): the board's core version without one leading "V" or "v".
    core = str(core_version)
    return core[1:] if core[:1] in ("V", "v") else core


def derive_version(core_version, version):
    """The version libfota2 sends: <core>.<x>.<z> from VERSION "x.y.z" (y is ignored).

    None when VERSION does not hold three digit groups."""
    g = version_groups(version)
    if g is None or core_version is None:
        return None
    return "%s.%s.%s" % (core_digits(core_version), g[0], g[2])


def bsp_name(bsp):
    # rtos.bsp() cut at the first "-" ("Air780EHV-1.8V" -> "Air780EHV").
    bsp = str(bsp)
    i = bsp.find("-")
    return bsp if i < 0 else bsp[:i]


def firmware_name(project, bsp):
    return "%s_LuatOS-SoC_%s" % (project, bsp_name(bsp))


def hex_upper(data):
    # LuatOS string.toHex: upper-case hex digits, no separators.
    import binascii

    return binascii.hexlify(bytes(data)).decode().upper()


def mac_hex(mac):
    # wlan.getMac() form: 12 upper-case hex digits ("02:ab:..." -> "02AB...").
    if isinstance(mac, (bytes, bytearray)):
        return hex_upper(mac)
    return "".join(c for c in str(mac) if c not in ":-. ").upper()


def device_query(imei, mac, uid):
    """The device-id parameter (LuatOS's rule before 2026-06): imei=, else mac=, else uid=.

    None when the board has none of the three (LuatOS would send "nil")."""
    if imei:
        return "imei=%s" % (imei,)
    if mac:
        return "mac=" + mac_hex(mac)
    if uid:
        return "uid=" + hex_upper(uid)
    return None


# LuatOS master's rule (libfota2.lua get_device_query, 2026-06): the id by module model.
_BY_MODEL = (
    (("Air780E", "Air8000", "Air700"), "imei"),
    (("Air8101",), "mac"),
    (("Air1601", "Air1602", "Air1780"), "uid"),
)


def model_name(model, bsp):
    # hmeta.model(); a board without model() is named by its bsp (cut at "-").
    return str(model) if model else bsp_name(bsp or "")


def model_device_query(model, imei, mac, uid):
    """The device-id parameter by module model (opts id_rule "model"): Air780E*, Air8000 and
    Air700 send imei=; Air8101 mac=; Air1601, Air1602 and Air1780 "mac=" + the unique id in
    hex. None for other models (LuatOS would send "nil") or when the board lacks that id."""
    for prefixes, source in _BY_MODEL:
        for p in prefixes:
            if model[:len(p)] == p:
                if source == "imei":
                    return "imei=%s" % (imei,) if imei else None
                if source == "mac":
                    return "mac=" + mac_hex(mac) if mac else None
                return "mac=" + hex_upper(uid) if uid else None
    return None


def _board_query(opts, dev):
    # The device id of the board, by opts' id_rule ("portable", the default, or "model").
    imei, mac, uid = dev.get("imei"), dev.get("mac"), dev.get("unique_id")
    rule = opts.get("id_rule") or "portable"
    if rule == "portable":
        query = device_query(imei, mac, uid)
        if query is None:
            raise ConfigError("no device id: the board has no IMEI, MAC or unique id")
        return query
    if rule != "model":
        raise ConfigError("opts.id_rule must be \"portable\" or \"model\", not %r" % (rule,))
    model = model_name(dev.get("model"), dev.get("bsp"))
    query = model_device_query(model, imei, mac, uid)
    if query is None:
        raise ConfigError("no device id for model %s under the model rule (LuatOS would send "
                          "\"nil\"): use id_rule \"portable\" or set opts.imei" % (model,))
    return query


def join_query(url, query):
    # url + query with the separator LuatOS leaves to the user: none after "?" or "&" (or an
    # empty url), "&" when the url already has a query, else "?".
    if not url or url[-1] in "?&":
        return url + query
    return url + ("&" if "?" in url else "?") + query


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
        if _unset(opts.get("project_key")):
            key = g.get("PRODUCT_KEY")
            if _unset(key):
                raise ConfigError("PRODUCT_KEY is not set: the IoT platform needs it "
                                  "(a server URL with every parameter can be given as ###url)")
            opts["project_key"] = key
        if _unset(opts.get("version")):
            v = derive_version(dev.get("core_version"), g.get("VERSION"))
            if v is None:
                raise ConfigError("VERSION %r is not of the form xxx.yyy.zzz"
                                  % (g.get("VERSION"),))
            opts["version"] = v
        if _unset(opts.get("firmware_name")):
            project = g.get("PROJECT")
            if _unset(project):
                raise ConfigError("PROJECT is not set: it names the firmware")
            opts["firmware_name"] = firmware_name(project, dev.get("bsp") or "")
        imei = opts.get("imei")
        if _unset(imei):
            query = _board_query(opts, dev)
            full = join_query(url, query)
        else:
            full = join_query(url, "imei=%s" % (imei,))
        opts["url"] = "%s&project_key=%s&firmware_name=%s&version=%s" % (
            full, opts["project_key"], opts["firmware_name"], opts["version"])
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
        _explain(out, url)
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
        out.iot = iot_code(out.body)
        label, why = iot_explain(out.iot)
        log.info("libfota2", "IoT platform code", out.iot, label, why)


def every(cb=None, opts=None, period_ms=4 * 3600 * 1000, jitter=0.1, retry_ms=60000,
          first_ms=None):
    """request() every period_ms (+-jitter), sooner after failures (retry_ms doubling up to
    period_ms), never sooner than a Retry-After. Returns a fotatimer.Periodic (stop())."""
    import fotatimer
    from mpfota import log

    if opts is None:
        opts = {}
    if cb is None:
        cb = _nothing

    async def one():
        try:
            prepare(opts, _globals(), _device())
        except ConfigError as e:
            log.error("libfota2", e.args[0])
            r = cb(CONFIG_ERROR)
            if _is_coro(r):
                await r
            return fotatimer.BAD, None
        out = await check(opts)
        r = cb(out.code)
        if _is_coro(r):
            await r
        return classify(out)

    p = fotatimer.Periodic(one, period_ms, jitter, retry_ms, first_ms)
    p.start()
    return p


def classify(out):
    """(kind, retry_after_ms) of an Outcome for the periodic schedule (fotatimer)."""
    import fotatimer

    ra = out.retry_after
    ra_ms = ra * 1000 if isinstance(ra, int) else None
    if out.code == OK:
        return fotatimer.DONE, None
    if out.error is not None:
        # A package the board refused (-9) comes back the same: wait a full period.
        return (fotatimer.BAD if out.error == -9 else fotatimer.FAILED), None
    if out.status is not None and (out.status >= 500 or out.status == 429) or out.iot == 43:
        return fotatimer.FAILED, ra_ms
    return fotatimer.NO_UPDATE, ra_ms  # a Retry-After still sets the earliest next check
