# libfota2 (device/libfota2.py, docs/libfota2.md): LuatOS libfota2.request on the mpfota engine,
# against the real HTTP/TLS test servers on 127.0.0.1. Every opts field, every result code,
# the query string as the server receives it (tests/vectors/libfota2_url.json), and a full
# update on the virtual board: download -> cb(0) -> board.reset() -> the new core.
import json
import time

import vb

TIMEOUT = 90

G = {"PROJECT": "FOTA2_DEMO", "VERSION": "001.000.001", "PRODUCT_KEY": "pk123"}


def _globals(g=G):
    import lsys

    lsys.PROJECT, lsys.VERSION, lsys.PRODUCT_KEY = g["PROJECT"], g["VERSION"], g["PRODUCT_KEY"]


def _logged(lines, text):
    for _mark, tag, args in lines:
        if text in tag or any(text in str(a) for a in args):
            return True
    return False


async def _request(opts, g=G):
    # libfota2.request() as an app calls it; returns the callback's results.
    import libfota2
    import lsys

    _globals(g)
    got = []
    libfota2.request(got.append, opts)
    await lsys.arun()
    return got


async def _recorded(server, tag):
    # The requests the server recorded with this tag (its /_requests?tag=T).
    from mpfota import http

    buf = bytearray(1024)
    r = await http.request("GET", server["base"] + "/_requests?tag=" + tag, buf)
    data = await r.read(256 * 1024)
    return json.loads(data)


def _header(req, name):
    for k, v in req["headers"]:
        if k.lower() == name:
            return v
    return None


# ------------------------------------------------------------------------ vectors


def test_vectors_pure_rules(luatos_vectors):
    # Every vector of tests/vectors against the pure functions (the same check.py CPython runs).
    import sys

    sys.path.append(luatos_vectors["dir"])
    import check

    fails = check.run_all(luatos_vectors["data"])
    assert not fails, "\n".join(fails)


async def _e2e(board_name, server, vectors):
    # The e2e vectors of one board: the query string as the server receives it, byte for byte.
    vb.boot()
    cases = [c for c in vectors["data"]["libfota2_url"]["cases"]
             if c.get("e2e") and c["board"] == board_name]
    assert cases, "no e2e vectors for " + board_name
    for c in cases:
        tag = c["name"]
        prefix = server["base"] + "/t/" + tag
        opts = {}
        for k, v in c["opts"].items():
            opts[k] = v.replace("{server}", prefix) if isinstance(v, str) else v
        got = await _request(opts, c["globals"])
        assert got == [4], (tag, got)  # the test server has no update there
        seen = await _recorded(server, tag)
        assert len(seen) == 1, (tag, seen)
        want = c["expect"]["url"].replace("{server}", prefix)
        assert server["base"] + seen[0]["target"] == want, (tag, seen[0]["target"], want)
        assert seen[0]["method"] == "GET"


async def test_query_string_as_the_server_sees_it_imei(cat1_board, luatos_server,
                                                       luatos_vectors):
    await _e2e("cat1", luatos_server, luatos_vectors)


async def test_query_string_as_the_server_sees_it_mac(wifi_board, luatos_server, luatos_vectors):
    await _e2e("wifi", luatos_server, luatos_vectors)


async def test_query_string_as_the_server_sees_it_uid(mcu_board, luatos_server, luatos_vectors):
    await _e2e("mcu", luatos_server, luatos_vectors)


async def test_version_and_firmware_name_from_the_board(cat1_board, luatos_server):
    # Core image "V2012" and bsp "Air780EHV-1.8V": 2012.001.001 and FOTA2_DEMO_LuatOS-SoC_Air780EHV.
    vb.boot()
    import board

    assert board.core_version() == "V2012" and board.bsp() == "Air780EHV-1.8V"
    opts = {"url": luatos_server["base"] + "/t/board-id/check?"}
    assert await _request(opts) == [4]
    assert opts["version"] == "2012.001.001"
    assert opts["firmware_name"] == "FOTA2_DEMO_LuatOS-SoC_Air780EHV"
    assert opts["project_key"] == "pk123" and opts["method"] == "GET"
    assert opts["url_done"] is True and opts["fota"] is True
    seen = await _recorded(luatos_server, "board-id")
    assert seen[0]["target"].endswith(
        "?imei=868488076543218&project_key=pk123&firmware_name=FOTA2_DEMO_LuatOS-SoC_Air780EHV"
        "&version=2012.001.001")


def test_no_device_id_is_result_5_not_nil(anonymous_board):
    vb.boot()
    import libfota2

    _globals()
    lines = vb.capture_log(raw=True)
    got = []
    libfota2.request(got.append, {"url": "http://127.0.0.1:9/x?"})
    assert got == [5]  # synchronously
    assert _logged(lines, "no device id")


# ------------------------------------------------------------------------ opts fields


def test_missing_product_key_is_5_synchronously(vboard):
    vb.boot()
    import libfota2

    _globals({"PROJECT": "P", "VERSION": "1.0.0", "PRODUCT_KEY": None})
    lines = vb.capture_log(raw=True)
    got = []
    opts = {}
    assert libfota2.request(got.append, opts) is None
    assert got == [5], "cb(5) before request() returns"
    assert opts["url"] == libfota2.DEFAULT_URL and "url_done" not in opts
    assert _logged(lines, "PRODUCT_KEY")
    got.clear()
    libfota2.request(got.append, {"url": "http://127.0.0.1:9/own-server?"})
    assert got == [5], "a custom URL without ### needs PRODUCT_KEY too"


def test_bad_version_is_5_and_logged(vboard):
    vb.boot()
    import libfota2

    _globals({"PROJECT": "P", "VERSION": "1.2", "PRODUCT_KEY": "k"})
    lines = vb.capture_log(raw=True)
    got = []
    libfota2.request(got.append, {"url": "http://127.0.0.1:9/u?"})
    assert got == [5]
    assert _logged(lines, "xxx.yyy.zzz")


async def test_project_key_version_firmware_name_and_imei_opts(vboard, luatos_server):
    vb.boot()
    _globals({"PROJECT": None, "VERSION": None, "PRODUCT_KEY": None})
    opts = {"url": luatos_server["base"] + "/t/fields/check?", "project_key": "KEY",
            "version": "7.8.9", "firmware_name": "FW", "imei": "ID-1"}
    assert await _request(opts, {"PROJECT": None, "VERSION": None, "PRODUCT_KEY": None}) == [4]
    seen = await _recorded(luatos_server, "fields")
    assert seen[0]["target"] == ("/t/fields/check?imei=ID-1&project_key=KEY&firmware_name=FW"
                                 "&version=7.8.9")


async def test_method_headers_and_body_reach_the_server(vboard, luatos_server):
    vb.boot()
    opts = {"url": "###" + luatos_server["base"] + "/t/mhb/status/404", "method": "POST",
            "headers": {"X-Fota": "yes", "Authorization": "Bearer t0k"}, "body": "hello=1"}
    assert await _request(opts) == [4]
    seen = (await _recorded(luatos_server, "mhb"))[0]
    assert seen["method"] == "POST" and seen["target"] == "/t/mhb/status/404"
    assert _header(seen, "x-fota") == "yes" and _header(seen, "authorization") == "Bearer t0k"
    assert seen["body"] == "hello=1" and _header(seen, "content-length") == "7"


async def test_timeout_opt_bounds_the_transaction(vboard, luatos_server):
    vb.boot()
    opts = {"url": "###" + luatos_server["base"] + "/silent?ms=4000", "timeout": 1000}
    t0 = time.ticks_ms()
    assert await _request(opts) == [4]  # -8 timeout -> 4
    took = time.ticks_diff(time.ticks_ms(), t0)
    assert 900 <= took < 3500, took
    import libfota2

    assert libfota2.timeout_of({"timeout": 999}) == 600000  # LuatOS: < 1000 -> the default
    assert libfota2.timeout_of({}) == 600000
    assert libfota2.timeout_of({"timeout": 300000}) == 300000


async def test_server_cert_checks_the_server(vboard, tls_server):
    vb.boot()
    url = "###" + tls_server["base"] + "/status/404"
    assert await _request({"url": url, "server_cert": tls_server["ca"]}) == [4]  # got an answer
    assert await _request({"url": url, "server_cert": tls_server["other_ca"]}) == [1]
    wrong = "###" + tls_server["wrong_host_base"] + "/status/404"
    assert await _request({"url": wrong, "server_cert": tls_server["ca"]}) == [1]


async def test_client_cert_key_and_password(vboard, tls_server):
    vb.boot()
    url = "###" + tls_server["mtls_base"] + "/status/404"
    base = {"url": url, "server_cert": tls_server["ca"]}
    assert await _request(dict(base)) == [1], "the server demands a client certificate"
    good = dict(base, client_cert=tls_server["client_cert"], client_key=tls_server["client_key"])
    assert await _request(good) == [4]  # TLS passed, the server answered 404
    pw = dict(good, client_key=tls_server["client_key_encrypted"],
              client_password=tls_server["client_key_password"])
    assert await _request(pw) == [1], "an encrypted key cannot be loaded: connect failure"


async def test_progress_callback_opt(vboard, luatos_server):
    vb.boot()
    img = luatos_server["images"]["core-2.0.0"]
    seen = []
    opts = {"url": "###" + luatos_server["base"] + img["path"],
            "callback": lambda total, got, ud: seen.append((total, got, ud)), "userdata": "u"}
    assert await _request(opts) == [0]
    assert seen[-1] == (img["size"], img["size"], "u")


# ------------------------------------------------------------------------ result codes


async def test_result_1_connect_failed(vboard, luatos_server):
    vb.boot()
    assert await _request({"url": "###" + luatos_server["refused"] + "/x"}) == [1]


async def test_result_3_server_closed(vboard, luatos_server):
    vb.boot()
    url = "###" + luatos_server["base"] + "/close-early"
    assert await _request({"url": url}) == [3]


async def test_result_4_body_cut_short(vboard, luatos_server):
    # LuatOS's FOTA mode reports a body cut short as HTTP_ERROR_FOTA (luat_http_client.c
    # on_complete: "fota body incomplete"), which libfota2 maps to 4.
    vb.boot()
    url = "###" + luatos_server["base"] + "/truncate/core-2.0.0?at=5000"
    assert await _request({"url": url}) == [4]
    import vpartition

    assert vpartition.boot_record() is None, "nothing switched"


async def test_result_4_cases(vboard, luatos_server):
    vb.boot()
    import vpartition

    b = luatos_server["base"]
    for path in ("/status/404", "/status/300", "/status/500", "/empty", "/blob/not-an-image",
                 "/garbage?kind=text"):
        assert await _request({"url": "###" + b + path}) == [4], path
    assert await _request({"url": "###ftp://127.0.0.1/x"}) == [4], "a bad URL is 4 (never 2)"
    assert vpartition.boot_record() is None, "nothing switched"


async def test_iot_platform_diagnostics_are_logged(vboard, luatos_server):
    vb.boot()
    import libfota2

    lines = vb.capture_log(raw=True)
    b = "###" + luatos_server["base"]
    # The IoT-platform diagnostics apply when the URL names iot.openluat.com.
    opts = {"url": b + "/status/404?via=iot.openluat.com"}
    libfota2.prepare(opts, G, {})
    out = await libfota2.check(opts)
    assert (out.code, out.status, out.iot) == (4, 404, 27)
    assert _logged(lines, "已是最新版本")
    opts = {"url": b + "/status/404?via=iot.openluat.com&body=oops"}
    libfota2.prepare(opts, G, {})
    out = await libfota2.check(opts)
    assert out.iot == libfota2.NOT_JSON and _logged(lines, "json")
    # Any JSON value may come as the code: a list nested 200 deep (the 512 bytes of the body
    # that are kept) is named, not printed level by level.
    nested = "%7B%22code%22%3A" + "%5B" * 200 + "%5D" * 200 + "%7D"  # {"code":[[...]]}
    opts = {"url": b + "/status/404?via=iot.openluat.com&body=" + nested}
    libfota2.prepare(opts, G, {})
    out = await libfota2.check(opts)
    assert isinstance(out.iot, list)
    assert ("IoT platform code", "<array:1>", "不是上面的那些错误code",
            "unknown platform code <array:1>") in [tuple(a) for _m, _t, a in lines]
    opts = {"url": b + "/status/404"}
    libfota2.prepare(opts, G, {})
    out = await libfota2.check(opts)
    assert out.iot is None, "not the IoT platform: no diagnostics"
    # A diagnosis that fails (here: the heap runs out while the texts load) is logged, and
    # the check still has its result.
    import libfota2log

    explain = libfota2log.iot_explain

    def out_of_memory(code):
        raise MemoryError("memory allocation failed")

    libfota2log.iot_explain = out_of_memory
    try:
        assert await _request({"url": b + "/status/404?via=iot.openluat.com"}) == [4]
    finally:
        libfota2log.iot_explain = explain
    assert ("diagnosis failed:", "MemoryError('memory allocation failed',)") in [
        tuple(a) for _m, _t, a in lines]


# ------------------------------------------------------------- the seed's scenario one


def fota_cb(ret):
    # The seed's fota_cb (scenario one), with its log texts; board.reset() plays rtos.reboot().
    import board
    import libfota2

    libfota2.explain(ret)
    if ret == 0:
        board.reset()


def test_full_update_download_cb0_reset_new_core(vboard, luatos_server):
    # The seed's app: wait for the network, request, and check again every 4 hours. The server
    # (/fw/) has core 2.0.0 for a device that reports an older version.
    vb.boot()
    import board
    import libfota2
    import lnet as socket
    import lsys as sys

    assert board.core_version() == "1.0.0"
    sys.PROJECT, sys.VERSION, sys.PRODUCT_KEY = "FOTA2_DEMO", "001.000.001", "pk123"
    opts = {"url": luatos_server["base"] + "/t/full/fw/core-2.0.0?"}

    async def fota_task_func():
        while not socket.adapter(socket.dft()):
            sys.log.warn("fota_task_func", "wait IP_READY", socket.dft())
            await sys.waitUntil("IP_READY", 1000)
        sys.log.info("fota_task_func", "recv IP_READY", socket.dft())
        sys.log.info("开始检查升级")
        libfota2.request(fota_cb, opts)

    sys.taskInit(fota_task_func)
    sys.timerLoopStart(libfota2.request, 4 * 3600000, fota_cb, opts)
    sys.timerStart(sys.stop, 30000)  # a bound for the test: the reset must come long before
    code = None
    try:
        sys.run()
    except SystemExit as e:
        code = e.args[0]
    assert code == 64, "fota_cb(0) resets the board (exit 64), got %r" % (code,)
    assert opts["version"] == "1.0.0.001.001"
    # The next power-on: the bootloader boots the new core, pending confirmation.
    vb.reboot()
    from mpfota import confirm

    assert board.core_version() == "2.0.0"
    assert confirm.status() == "pending"
    confirm.confirm()
    # Checking again from the new core: the server says "already latest" (27) -> 4.
    import asyncio

    asyncio.new_event_loop()
    opts2 = {"url": luatos_server["base"] + "/t/full2/fw/core-2.0.0?"}
    libfota2.prepare(opts2, G, libfota2._device())
    out = asyncio.run(libfota2.check(opts2))
    assert (out.code, out.status) == (4, 404)
    assert opts2["version"] == "2.0.0.001.001"


# ------------------------------------------------------------- what a raw-image update loads


async def test_raw_image_update_on_asyncio_alone_loads_no_lsys(vboard, luatos_server):
    # An app that never imports lsys: request() schedules on asyncio, the callback still runs,
    # and neither the LuatOS scheduler nor what a plain 200 to a ###URL does not need (chunked
    # decoding, redirects, Content-Range, TLS; the URL rules, log texts, periodic schedule)
    # is loaded.
    import sys

    vb.boot()
    import asyncio

    import libfota2

    img = luatos_server["images"]["core-2.0.0"]
    got = []
    libfota2.request(got.append, {"url": "###" + luatos_server["base"] + img["path"]})
    for _ in range(500):
        if got:
            break
        await asyncio.sleep_ms(20)
    assert got == [0]
    loaded = [m for m in ("lsys", "lnet", "mpfota.httpchunk", "mpfota.httpredirect",
                          "mpfota.httprange", "mpfota.httptls", "ssl", "libfota2url",
                          "libfota2log", "fotatimer") if m in sys.modules]
    assert not loaded, loaded


async def test_callback_error_on_asyncio_alone_is_logged(vboard, luatos_server):
    # Without lsys, an exception in the callback still leaves a log line with its cause.
    vb.boot()
    import asyncio

    import libfota2

    lines = vb.capture_log(raw=True)
    calls = []

    def cb(ret):
        calls.append(ret)
        raise ValueError("app bug")

    libfota2.request(cb, {"url": "###" + luatos_server["refused"] + "/x"})
    for _ in range(500):
        if calls and _logged(lines, "app bug"):
            break
        await asyncio.sleep_ms(20)
    assert calls == [1]
    assert _logged(lines, "task failed")
