# Periodic update checks: the seeds' sys.timerLoopStart(libfota2.request, ...) reusing one opts,
# and libfota2.every() (device/fotatimer.py): jitter, exponential backoff after failures
# (capped at the period), Retry-After honoured. Real server on 127.0.0.1; short periods.
import json
import time

import vb

TIMEOUT = 60

G = ("FOTA2_DEMO", "001.000.001", "pk123")


def _globals():
    import lsys

    lsys.PROJECT, lsys.VERSION, lsys.PRODUCT_KEY = G


async def _recorded(server, tag):
    from mpfota import http

    buf = bytearray(1024)
    r = await http.request("GET", server["base"] + "/_requests?tag=" + tag, buf)
    return json.loads(await r.read(256 * 1024))


def _within(value, low, high):
    assert low <= value <= high, "%r not in [%r, %r]" % (value, low, high)


# ------------------------------------------------------------------ the pure schedule


def test_next_delay_period_jitter_backoff_and_retry_after():
    from fotatimer import BAD, DONE, FAILED, NO_UPDATE, next_delay

    P, R = 4 * 3600 * 1000, 60000
    # No update: the period, spread +-10 % by rnd in [0, 1).
    assert next_delay(NO_UPDATE, 0, P, 0.1, R, None, 0.5) == P
    assert next_delay(NO_UPDATE, 0, P, 0.1, R, None, 0.0) == int(P * 0.9)
    _within(next_delay(NO_UPDATE, 0, P, 0.1, R, None, 0.99999), P, int(P * 1.1))
    assert next_delay(DONE, 0, P, 0.1, R, None, 0.5) == P
    assert next_delay(BAD, 0, P, 0.1, R, None, 0.5) == P
    # Failures: retry_ms, doubling, capped at the period.
    got = [next_delay(FAILED, n, P, 0.0, R, None, 0.5) for n in range(1, 11)]
    assert got == [60000, 120000, 240000, 480000, 960000, 1920000, 3840000, 7680000, P, P]
    assert next_delay(FAILED, 500, P, 0.0, R) == P, "no overflow for long failure runs"
    # Retry-After: never sooner than the server asked, even during a backoff.
    assert next_delay(FAILED, 1, P, 0.0, R, 300000, 0.5) == 300000
    _within(next_delay(FAILED, 1, P, 0.1, R, 300000, 0.0), 300000, 330000)
    _within(next_delay(FAILED, 1, P, 0.1, R, 300000, 0.9999), 300000, 330000)
    # ... and a short Retry-After does not shorten the schedule.
    assert next_delay(FAILED, 3, P, 0.0, R, 1000, 0.5) == 240000


def test_periodic_validates_its_arguments():
    import fotatimer

    async def check():
        return fotatimer.NO_UPDATE, None

    for args in ((0, 0.1, 1), (1000, 1.0, 1), (1000, -0.1, 1), (1000, 0.1, 0)):
        try:
            fotatimer.Periodic(check, *args)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % (args,))


# ----------------------------------------------------- the seeds' timerLoopStart pattern


async def test_timer_loop_reuses_the_url_it_built(vboard, luatos_server):
    # sys.timerLoopStart(libfota2.request, period, cb, opts): the URL is built once (url_done)
    # and every check sends exactly the same request.
    vb.boot()
    _globals()
    import libfota2
    import lsys

    opts = {"url": luatos_server["base"] + "/t/loop/check?"}
    got = []

    def cb(ret):
        got.append((ret, opts["url"]))
        if len(got) == 3:
            lsys.timerStop(libfota2.request, cb, opts)
            lsys.stop()

    lsys.timerLoopStart(libfota2.request, 150, cb, opts)
    lsys.timerStart(lsys.stop, 20000)
    await lsys.arun()
    assert [r for r, _ in got] == [4, 4, 4]
    assert not lsys.timerIsActive(libfota2.request, cb, opts)
    assert got[0][1] == got[1][1] == got[2][1] == opts["url"]
    assert opts["url"].count("project_key=") == 1
    seen = await _recorded(luatos_server, "loop")
    assert len(seen) == 3
    assert seen[0]["target"] == seen[1]["target"] == seen[2]["target"]
    assert seen[0]["target"].startswith("/t/loop/check?imei=")


# ------------------------------------------------------------------ libfota2.every()


async def _every(url, n, **kw):
    # libfota2.every() until n callbacks; returns [(ret, ms since start, delay before it)].
    _globals()
    import libfota2
    import lsys

    t0 = time.ticks_ms()
    got = []
    holder = []

    def cb(ret):
        got.append((ret, time.ticks_diff(time.ticks_ms(), t0), holder[0].next_ms))
        if len(got) >= n:
            holder[0].stop()
            lsys.stop()

    holder.append(libfota2.every(cb, {"url": url}, **kw))
    lsys.timerStart(lsys.stop, 20000)
    await lsys.arun()
    return got, holder[0]


async def test_every_backs_off_after_failures_up_to_the_period(vboard, luatos_server):
    vb.boot()
    url = "###" + luatos_server["base"] + "/t/backoff/close-early"
    got, p = await _every(url, 6, period_ms=400, jitter=0.1, retry_ms=50, first_ms=0)
    assert [r for r, _, _ in got] == [3] * 6, "server closed: result 3"
    delays = [d for _, _, d in got]
    assert delays[0] == 0
    for d, want in zip(delays[1:], (50, 100, 200, 400, 400)):
        _within(d, int(want * 0.9), int(want * 1.1))
    # The clock agrees with the schedule (the checks themselves take a few ms).
    gaps = [got[i + 1][1] - got[i][1] for i in range(5)]
    for gap, d in zip(gaps, delays[1:]):
        _within(gap, d, d + 400)
    assert p.failures == 6 and p.checks == 6
    assert len(await _recorded(luatos_server, "backoff")) == 6


async def test_every_honours_retry_after_on_503(vboard, luatos_server):
    vb.boot()
    # First answer: 503 with Retry-After: 1; then "no update" (404).
    url = "###" + luatos_server["base"] + "/t/ra/after/ra/1/status/404?a_status=503&a_retry=1"
    got, p = await _every(url, 3, period_ms=300, jitter=0.1, retry_ms=50, first_ms=0)
    assert [r for r, _, _ in got] == [4, 4, 4]
    _within(got[1][2], 1000, 1100)  # not the 50 ms backoff: the server asked for 1 s
    _within(got[1][1] - got[0][1], 1000, 1600)
    _within(got[2][2], 270, 330)  # back to the period after a "no update"
    assert p.failures == 0


async def test_every_waits_a_period_after_no_update_and_after_a_bad_package(vboard,
                                                                             luatos_server):
    vb.boot()
    b = "###" + luatos_server["base"]
    got, _ = await _every(b + "/t/noup/status/404", 3, period_ms=200, jitter=0.1, retry_ms=20,
                          first_ms=0)
    assert [r for r, _, _ in got] == [4, 4, 4]
    for _, _, d in got[1:]:
        _within(d, 180, 220)
    got, p = await _every(b + "/t/badpkg/blob/not-an-image", 2, period_ms=200, jitter=0.1,
                          retry_ms=20, first_ms=0)
    assert [r for r, _, _ in got] == [4, 4]
    _within(got[1][2], 180, 220)  # the same bytes would come back: no quick retry
    assert p.failures == 0


async def test_every_with_an_update(vboard, luatos_server):
    vb.boot()
    import vpartition

    url = luatos_server["base"] + "/t/evup/fw/core-2.0.0?"
    got, _ = await _every(url, 1, period_ms=100000, first_ms=10)
    assert [r for r, _, _ in got] == [0]
    assert vpartition.boot_record() == (1, "new")


async def test_every_on_asyncio_alone_loads_no_lsys(vboard, luatos_server):
    # An app that never imports lsys: the periodic checks run as a plain asyncio task, with
    # the same backoff, and neither lsys nor lnet is loaded.
    import sys

    vb.boot()
    import asyncio

    import libfota2

    got = []
    p = libfota2.every(got.append, {"url": "###" + luatos_server["base"] + "/t/alone/status/404"},
                       period_ms=100, jitter=0.0, retry_ms=20, first_ms=0)
    for _ in range(200):
        if len(got) >= 3:
            break
        await asyncio.sleep_ms(10)
    p.stop()
    assert got[:3] == [4, 4, 4] and p.checks >= 3
    assert "lsys" not in sys.modules and "lnet" not in sys.modules
