# update (device/update.py, docs/libfota2.md): the Luat update module's API and URL format on
# the mpfota engine, against the real HTTP test server on 127.0.0.1.
import json

import vb

TIMEOUT = 90

G = {"PROJECT": "LUAT_DEMO", "VERSION": "1.0.1", "PRODUCT_KEY": "PK9"}


def _setup(fast=True):
    vb.boot()
    import lsys
    import update

    lsys.PROJECT, lsys.VERSION, lsys.PRODUCT_KEY = G["PROJECT"], G["VERSION"], G["PRODUCT_KEY"]
    if fast:  # Luat's waits, shortened for the test (the rules stay the same)
        update.REDIRECT_WAIT_MS = 50
        update.WAIT_43_MS = 50
    return update


def _events():
    import lsys

    got = []
    for msg in ("LIB_UPDATE_OTA_DOWNLOAD_BEGIN", "LIB_UPDATE_OTA_DOWNLOAD_END"):
        lsys.subscribe(msg, lambda *a, m=msg: got.append((m[24:],) + a))
    return got


def _cb(results, n=1, bound_ms=30000):
    # A callback that records its argument and stops the lsys loop once it has n results; the
    # loop is also stopped after bound_ms, so a test never hangs.
    import lsys

    def cb(ok):
        results.append(ok)
        if len(results) >= n:
            lsys.stop()

    lsys.timerStart(lsys.stop, bound_ms)
    return cb


async def _recorded(server, tag):
    from mpfota import http

    buf = bytearray(1024)
    r = await http.request("GET", server["base"] + "/_requests?tag=" + tag, buf)
    return json.loads(await r.read(256 * 1024))


def _header(req, name):
    for k, v in req["headers"]:
        if k.lower() == name:
            return v
    return None


async def _settle():
    # Let the lsys dispatcher deliver what was published just before the loop stopped.
    import asyncio

    await asyncio.sleep_ms(50)


def _ident():
    import board

    return board.imei()


async def test_url_format_range_events_and_cb_true(vboard, luatos_server):
    update = _setup()
    import lsys
    import vpartition

    ev = _events()
    got = []
    cb = _cb(got)
    base = luatos_server["base"] + "/t/u1/fw/core-2.0.0"
    update.request(cb, base)
    await lsys.arun()
    await _settle()
    assert got == [True]
    assert ev == [("BEGIN",), ("END", True)]
    assert vpartition.boot_record() == (1, "new")
    seen = await _recorded(luatos_server, "u1")
    assert len(seen) == 1
    assert seen[0]["target"] == (
        "/t/u1/fw/core-2.0.0?project_key=PK9&imei=%s&firmware_name=LUAT_DEMO_LuatOS-SoC_UNIX"
        "&core_version=1&dfota=1&version=1.0.1" % _ident())
    assert _header(seen[0], "range") == "bytes=0-", "Luat sends Range on every request"


async def test_redir_adds_need_oss_url_and_arguments_are_sticky(vboard, luatos_server):
    update = _setup()
    import lsys

    got = []
    cb = _cb(got)
    update.request(cb, luatos_server["base"] + "/t/u2/status/404", None, True)
    await lsys.arun()
    update.request()  # cb, url and redir kept
    await lsys.arun()
    assert got == [False, False], "404 (code 27) is cb(False)"
    seen = await _recorded(luatos_server, "u2")
    assert len(seen) == 2
    for s in seen:
        assert s["target"].endswith("&dfota=1&version=1.0.1&need_oss_url=1"), s["target"]


async def test_redirect_location_is_followed_and_kept(vboard, luatos_server):
    # A 3xx with a Location: followed after 2 s, and reused by every later check (Luat quirk).
    update = _setup()
    import lsys

    got = []
    cb = _cb(got, 2)
    to = "/t/u3b/blob/core-2.0.0"
    update.request(cb, luatos_server["base"] + "/t/u3a/redirect?code=302&to=" + to, 200)
    await lsys.arun()
    assert got == [True, True]
    first = await _recorded(luatos_server, "u3a")
    second = await _recorded(luatos_server, "u3b")
    assert len(first) == 1, "the redirecting URL is asked once"
    assert len(second) == 2, "the Location serves this check and the periodic one"
    for s in second:
        assert s["target"] == to
        assert _header(s, "range") == "bytes=0-"


async def test_a_failing_check_is_cb_false_and_the_next_one_runs(vboard, luatos_server):
    # Whatever goes wrong inside a check (here: the heap runs out in the download) gives
    # cb(False), and the periodic checks go on.
    update = _setup()
    import lsys

    fetch = update._fetch
    calls = []

    async def out_of_memory_once(url, progress):
        calls.append(url)
        if len(calls) == 1:
            raise MemoryError("memory allocation failed")
        return await fetch(url, progress)

    update._fetch = out_of_memory_once
    got = []
    update.request(_cb(got, 2), luatos_server["base"] + "/t/u20/blob/core-2.0.0", 200)
    await lsys.arun()
    update._fetch = fetch
    assert got == [False, True] and len(calls) == 2
    assert len(await _recorded(luatos_server, "u20")) == 1, "the first check sent nothing"


async def test_code_43_is_waited_out(vboard, luatos_server):
    update = _setup()
    import lsys

    got = []
    cb = _cb(got)
    update.request(cb, luatos_server["base"] + "/t/u4/after/u4/2/blob/core-2.0.0")
    await lsys.arun()
    assert got == [True]
    assert len(await _recorded(luatos_server, "u4")) == 3, "two 'please wait' answers, then data"


async def test_30_failures_give_cb_false(vboard, luatos_server):
    update = _setup()
    import lsys

    ev = _events()
    got = []
    cb = _cb(got)
    update.request(cb, luatos_server["base"] + "/t/u5/close-early")
    await lsys.arun()
    await _settle()
    assert got == [False]
    assert len(await _recorded(luatos_server, "u5")) == 30
    assert ev == [], "no data ever came: no BEGIN, no END"


async def test_resume_with_range_after_a_cut(vboard, luatos_server):
    # The first answer is cut after 36000 bytes; the retry asks for the rest with Range from
    # the last saved checkpoint (32 KiB) and the update completes.
    update = _setup()
    import lsys
    import vpartition

    ev = _events()
    got = []
    cb = _cb(got)
    first = "/truncate/core-2.0.0%3Fat%3D36000"
    update.request(cb, luatos_server["base"] + "/t/u6/after/u6/1/blob/core-2.0.0?a_path=" + first)
    await lsys.arun()
    await _settle()
    assert got == [True]
    assert ev == [("BEGIN",), ("END", True)]
    seen = await _recorded(luatos_server, "u6")
    assert [_header(s, "range") for s in seen] == ["bytes=0-", "bytes=32768-"]
    assert vpartition.boot_record() == (1, "new")


async def test_a_package_the_board_refuses_is_cb_false(vboard, luatos_server):
    update = _setup()
    import lsys
    import vpartition

    ev = _events()
    got = []
    cb = _cb(got)
    update.request(cb, luatos_server["base"] + "/t/u11/blob/not-an-image")
    await lsys.arun()
    await _settle()
    assert got == [False]
    assert ev == [("BEGIN",), ("END", False)]
    assert len(await _recorded(luatos_server, "u11")) == 1, "a refused package is not fetched again"
    assert vpartition.boot_record() is None


def test_without_cb_success_resets_into_the_new_core(vboard, luatos_server):
    update = _setup()
    import board
    import lsys

    update.request(None, luatos_server["base"] + "/t/u7/fw/core-2.0.0")
    lsys.timerStart(lsys.stop, 30000)
    code = None
    try:
        lsys.run()
    except SystemExit as e:
        code = e.args[0]
    assert code == 64, "restart after a successful download without cb"
    vb.reboot()
    assert board.core_version() == "2.0.0"


async def test_fota_start_fail_returns_without_cb(vboard, luatos_server):
    # An update that is pending confirmation blocks new ones (rtos.fota_start() fails).
    update = _setup()
    import lsys

    got = []
    cb = _cb(got)
    update.request(cb, luatos_server["base"] + "/t/u8/fw/core-2.0.0")
    await lsys.arun()
    assert got == [True]
    vb.reboot()  # the new core runs, not yet confirmed
    update.request(cb, luatos_server["base"] + "/t/u8b/fw/core-3.0.0")
    assert not update._s.running and not update.isDownloading()
    assert got == [True]
    assert await _recorded(luatos_server, "u8b") == []


async def test_custom_imei_function(vboard, luatos_server):
    update = _setup()
    import lsys

    update.setGetImeiCbFnc(lambda: "MY-IMEI")
    got = []
    cb = _cb(got)
    update.request(cb, luatos_server["base"] + "/t/u9/status/404")
    await lsys.arun()
    seen = await _recorded(luatos_server, "u9")
    assert "&imei=MY-IMEI&" in seen[0]["target"]


async def test_missing_product_key_is_cb_false(vboard, luatos_server):
    update = _setup()
    import lsys

    lsys.PRODUCT_KEY = None
    got = []
    cb = _cb(got)
    update.request(cb, luatos_server["base"] + "/t/u10/status/404")
    await lsys.arun()
    assert got == [False]
    assert await _recorded(luatos_server, "u10") == []


def test_answer_parsing():
    import update

    assert update.answer_of('{"code": 43, "msg": "wait"}') == ("43", "wait")
    assert update.answer_of('{"code":27,"msg":"\\u5df2\\u662f"}') == ("27", "已是")
    assert update.answer_of('{"code": 43, "msg": "cut') == ("43", None)
    assert update.answer_of("nothing") == (None, None)
    # Any JSON value may come as the code; str() of one nested this deep exceeds the
    # recursion limit: it is named instead.
    assert update.answer_of('{"code": []}') == ("<array:0>", None)
    assert update.answer_of('{"code": %s}' % ("[" * 3000 + "]" * 3000)) == ("<array:1>",
                                                                          None)
    assert update.luat_core("Luat_V0026_RDA8910_TTS_FLOAT", "x") == ("Luat", 26,
                                                                     "_RDA8910_TTS_FLOAT")
    assert update.luat_core("V2012", "Air780EHV-1.8V") == ("LuatOS-SoC", 2012, "_Air780EHV")
    assert update.luat_core("V", "x") is None


async def test_board_without_imei_sends_its_mac(wifi_board, luatos_server):
    update = _setup()
    import lsys

    got = []
    cb = _cb(got)
    update.request(cb, luatos_server["base"] + "/t/u12/status/404")
    await lsys.arun()
    assert got == [False]
    seen = await _recorded(luatos_server, "u12")
    assert seen[0]["target"] == (
        "/t/u12/status/404?project_key=PK9&imei=C8C2C6906511"
        "&firmware_name=LUAT_DEMO_LuatOS-SoC_Air8101&core_version=1005&dfota=1&version=1.0.1")
