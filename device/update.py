# update: the older Luat remote-upgrade module (Air724 LuaTask lib/update.lua) on the mpfota
# engine, for scripts written against it.
#
#     import update
#     update.request()                                    # IoT platform, once; reset on success
#     update.request(cb)                                  # cb(True) / cb(False)
#     update.request(cb, "www.userserver.com/update")     # own server (scheme optional)
#     update.request(cb, None, 4 * 3600 * 1000)           # and again every 4 hours
#     update.request(cb, None, 4 * 3600 * 1000, True)     # ask for the OSS copy (need_oss_url)
#     update.setGetImeiCbFnc(fn)                          # a custom device id
#     update.isDownloading()
#
# As Luat: the arguments are sticky (a later request() keeps what it does not give); every
# request carries "Range: bytes=N-" (also N = 0) and resumes after a failure; a 3xx with a
# Location is followed after 2 s and that Location is kept for every later check; the
# platform's code 43 ("building a delta") is waited out (30 s); the 30th failure in a row gives
# cb(False). LIB_UPDATE_OTA_DOWNLOAD_BEGIN / LIB_UPDATE_OTA_DOWNLOAD_END (True/False) are
# published through lsys. docs/libfota2.md lists the differences from Luat.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


DEFAULT_URL = "iot.openluat.com/api/site/firmware_upgrade"
MAX_FAILURES = const(30)  # failed requests in a row before cb(False) (Luat: 30)
MAX_REDIRECTS = const(5)  # 3xx answers in a row before cb(False) (Luat: unbounded)
MAX_WAITS_43 = const(10)  # "please wait" answers in a row before cb(False) (Luat: unbounded)
WAIT_43_MS = 30000  # Luat's wait after code 43
REDIRECT_WAIT_MS = 2000  # Luat's wait before following a redirect
TIMEOUT_MS = 60000  # per request, as Luat's http.request(..., 60000, ...)
CHECKPOINT = const(32768)  # progress saved every 32 KiB, so a retry resumes close to the cut

BEGIN = "LIB_UPDATE_OTA_DOWNLOAD_BEGIN"
END = "LIB_UPDATE_OTA_DOWNLOAD_END"


class ConfigError(ValueError):
    pass


# ---------------------------------------------------------------------- pure rules


def luat_core(core_version, bsp):
    """(name1, number, name2) of the core, as Luat splits rtos.get_version().

    A Luat core string "Luat_V0026_RDA8910_TTS_FLOAT" gives ("Luat", 26, "_RDA8910_TTS_FLOAT").
    Any other core version is read as LuatOS's rtos.firmware() "LuatOS-SoC_V<n>_<bsp>": its
    leading number (after one "V") and the bsp cut at "-" ("V2012", "Air780EHV-1.8V" ->
    ("LuatOS-SoC", 2012, "_Air780EHV")). None when there is no number."""
    s = str(core_version)
    n = len(s)
    i = s.find("_V")
    while i >= 0:
        j = i + 2
        while j < n and "0" <= s[j] <= "9":
            j += 1
        if j > i + 2 and j + 1 < n and s[j] == "_":
            return s[:i], int(s[i + 2 : j]), s[j:]
        i = s.find("_V", i + 1)
    from libfota2url import bsp_name, core_digits

    d = core_digits(s)
    j = 0
    while j < len(d) and "0" <= d[j] <= "9":
        j += 1
    if not j:
        return None
    b = bsp_name(bsp or "")
    return "LuatOS-SoC", int(d[:j]), ("_" + b if b else "")


def build_url(url, g, imei, core_version, bsp, redir):
    """The check URL: <url>?project_key=&imei=&firmware_name=&core_version=&dfota=1&version=
    [&need_oss_url=1]; "http://" is added when the url has no scheme. Raises ConfigError."""
    for key in ("PRODUCT_KEY", "PROJECT", "VERSION"):
        if g.get(key) is None:
            raise ConfigError("%s is not set" % key)
    if not imei:
        raise ConfigError("no device id (IMEI, MAC or unique id)")
    core = luat_core(core_version, bsp)
    if core is None:
        raise ConfigError("core version %r has no number" % (core_version,))
    base = url or DEFAULT_URL
    query = "project_key=%s&imei=%s&firmware_name=%s_%s%s&core_version=%d&dfota=1&version=%s%s" % (
        g["PRODUCT_KEY"], imei, g["PROJECT"], core[0], core[2], core[1], g["VERSION"],
        "&need_oss_url=1" if redir else "")
    if base[-1] in "?&":
        full = base + query
    else:
        full = base + ("&" if "?" in base else "?") + query
    if "://" not in full.split("?", 1)[0]:
        full = "http://" + full
    return full


def answer_of(body):
    """(code, msg) of a platform answer: code as a string (Luat's httpRspCode), or None."""
    if not isinstance(body, str):
        return None, None
    import json

    try:
        obj = json.loads(body)
    except (ValueError, RuntimeError):  # RuntimeError: CPython's json nests by recursion
        obj = None
    if isinstance(obj, dict):
        code = obj.get("code")
        msg = obj.get("msg")
        if isinstance(code, (list, dict)):  # str() of it could exceed the recursion limit
            from mpfota.brief import brief

            code = brief(code)
        return (None if code is None else str(code)), (msg if isinstance(msg, str) else None)
    # Not JSON (or cut at 512 bytes): Luat's pattern "code":%s*(%d+)
    i = body.find('"code":')
    if i < 0:
        return None, None
    j = i + 7
    while j < len(body) and body[j] in " \t\r\n":
        j += 1
    k = j
    while k < len(body) and "0" <= body[k] <= "9":
        k += 1
    return (body[j:k] if k > j else None), None


# ------------------------------------------------------------------- device side


class _State:
    def __init__(self):
        self.cb = None
        self.url = None
        self.period = None
        self.redir = None
        self.location = None  # a redirect target, kept for every later check (as Luat)
        self.imei_fn = None
        self.running = False  # the client task is alive
        self.downloading = False
        self.fotastart = False


_s = _State()


def setGetImeiCbFnc(fn):
    _s.imei_fn = fn


def isDownloading():
    return _s.downloading


def _fota_start():
    # rtos.fota_start(): the spare slot can take an update. (ok, cause)
    try:
        from mpfota import confirm

        if confirm.status() == "pending":
            return False, "the running image is not confirmed yet"
        import board

        board.ota_slots()
    except Exception as e:  # noqa: BLE001 - any board error means "cannot start"
        return False, str(e)
    return True, None


def request(cb=None, url=None, period=None, redir=None):
    """update.request(cbFnc, url, period, redir): start (or re-arm) the update client."""
    import lsys
    from mpfota import log

    ok, why = _fota_start()
    _s.fotastart = ok
    if not ok:
        log.error("update.request", "fota_start fail:", why)
        return
    s = _s
    s.cb = cb or s.cb
    s.url = url or s.url
    s.period = period or s.period
    s.redir = s.redir or redir
    log.info("update.request", "cb" if s.cb else None, s.url, s.period, s.redir)
    if not s.running:
        s.running = True
        lsys.taskInit(_client)


def _imei():
    # The id sent as imei=: setGetImeiCbFnc's, else the IMEI, else the MAC, else the unique id.
    if _s.imei_fn is not None:
        return _s.imei_fn()
    from libfota2 import _device
    from libfota2url import hex_upper, mac_hex

    d = _device()
    if d["imei"]:
        return d["imei"]
    if d["mac"]:
        return mac_hex(d["mac"])
    return hex_upper(d["unique_id"]) if d["unique_id"] else None


def _url():
    import board
    import lsys

    if _s.location:
        return _s.location
    g = {"PRODUCT_KEY": lsys.PRODUCT_KEY, "PROJECT": lsys.PROJECT, "VERSION": lsys.VERSION}
    return build_url(_s.url, g, _imei(), board.core_version(), board.bsp(), _s.redir)


async def _client():
    import lnet
    import lsys
    from mpfota import log

    try:
        while not lnet.adapter():
            await lsys.waitUntil("IP_READY", 1000)
        while True:
            if _s.fotastart:
                _s.downloading = True
                try:
                    await _check()
                except Exception as e:  # a bug or a MemoryError: this check failed, the
                    # periodic ones go on (as libfota2, which gives such a check a result too)
                    log.error("update", "check failed:", repr(e))
                    await _done(False)
                finally:
                    _s.downloading = False
            if not _s.period:
                break
            await lsys.wait(_s.period)
            ok, why = _fota_start()
            _s.fotastart = ok
            if not ok:
                log.error("update.request", "fota_start fail:", why)
    finally:
        _s.running = False


async def _done(ok):
    # The end of one check: cb(ok), or a restart after a success without cb.
    from mpfota import log

    cb = _s.cb
    if cb is not None:
        r = cb(ok)
        if type(r).__name__ in ("generator", "coroutine"):
            await r
    elif ok:
        import board

        log.info("update", "restart", "UPDATE_DOWNLOAD_SUCCESS")
        board.reset()


async def _check():
    # One check, with Luat's retry rules; ends with _done(True/False).
    import lsys
    from mpfota import http, log
    from mpfota.httpredirect import resolve_location
    from mpfota.errors import FotaError

    failures = redirects = waits = 0
    began = [False]

    def progress(done, total):
        if not began[0]:
            began[0] = True
            lsys.publish(BEGIN)

    while True:
        try:
            url = _url()
        except (ConfigError, OSError, ValueError) as e:
            log.error("update", "cannot build the request:", e)
            await _done(False)
            return
        log.info("update.http.request", url, "attempt", failures + 1)
        try:
            r = await _fetch(url, progress)
        except FotaError as e:
            log.error("update.processOta", "fail:", e)
            lsys.publish(END, False)
            await _done(False)
            return
        except (http.HTTPError, OSError) as e:
            failures += 1
            log.warn("update", "request failed (%d of %d):" % (failures, MAX_FAILURES), e)
            if failures >= MAX_FAILURES:
                if began[0]:
                    lsys.publish(END, False)
                await _done(False)
                return
            continue
        status = r.status
        log.info("update.waitUntil UPDATE_DOWNLOAD", status)
        if status in (200, 206):
            lsys.publish(END, True)
            await _done(True)
            return
        loc = r.location
        if 300 <= status < 400 and loc:
            redirects += 1
            if redirects > MAX_REDIRECTS:
                log.error("update", "more than %d redirects" % MAX_REDIRECTS)
                await _done(False)
                return
            try:
                _s.location = resolve_location(url, loc)
            except ValueError as e:
                log.error("update", "bad Location:", e)
                await _done(False)
                return
            log.info("update", "redirected to", _s.location)
            await lsys.wait(REDIRECT_WAIT_MS)
            continue
        code, msg = answer_of(r.body)
        if msg:
            log.warn("update.error", msg)
        if code == "43":
            waits += 1
            if waits > MAX_WAITS_43:
                log.error("update", "the server is still building the package: giving up")
                await _done(False)
                return
            log.info("update.clientTask", "wait server create fota")
            await lsys.wait(WAIT_43_MS)
            continue
        log.info("update", "no update:", status, "code", code)
        await _done(False)
        return


async def _fetch(url, progress):
    # Range on every request (Luat sends "bytes=0-" too) and 3xx left to us (we keep Location).
    from mpfota import download

    return await download.fetch(url, timeout_ms=TIMEOUT_MS, retries=0, progress=progress,
                                checkpoint=CHECKPOINT, range_always=True,
                                follow_redirects=False)
