# Device tests of mpfota.http (MicroPython) against the real test servers of
# tests/host/httpserver.py (fixtures http_server and tls_server, tests/fixtures_http.py).
import asyncio
import binascii
import gc
import hashlib
import json
import time

from mpfota import http

HEAPSIZE = "160K"  # TLS included, with the modules compiled from source
TIMEOUT = 60


# ------------------------------------------------------------------------- helpers


async def download(url, bufsize=4096, chunk=4096, md5=None, **kw):
    """GET url and read the whole body; return (resp, md5 hex, byte count)."""
    resp = await http.request("GET", url, bytearray(bufsize), **kw)
    h = md5 or hashlib.md5()
    mv = memoryview(bytearray(chunk))
    total = 0
    try:
        while True:
            n = await resp.readinto(mv)
            if not n:
                break
            assert 0 < n <= chunk
            h.update(mv[:n])
            total += n
    finally:
        await resp.aclose()
    return resp, binascii.hexlify(h.digest()).decode(), total


async def fails(code, coro, text=None):
    """Await coro; it must raise HTTPError with this code (and text in its message)."""
    try:
        await coro
    except http.HTTPError as e:
        assert e.code == code, "expected error %d, got %d: %s" % (code, e.code, e.msg)
        assert e.msg, "every error carries a cause"
        assert str(e) == "http error %d: %s" % (code, e.msg)
        if text is not None:
            assert text in e.msg, "%r not in %r" % (text, e.msg)
        return e
    raise AssertionError("no HTTPError %d" % code)


async def echo(base, method="GET", **kw):
    resp = await http.request(method, base + "/echo", bytearray(4096), **kw)
    assert resp.status == 200
    seen = json.loads(await resp.read(8192))
    seen["h"] = {k.lower(): v for k, v in seen["headers"]}
    return resp, seen


def ms_since(t):
    return time.ticks_diff(time.ticks_ms(), t)


# ---------------------------------------------------------------- body framing


async def test_content_length_bodies_arrive_intact(http_server):
    for name in ("small", "medium", "big"):
        blob = http_server["blobs"][name]
        resp, md5, n = await download(http_server["base"] + "/blob/" + name)
        assert resp.status == 200
        assert resp.content_length == blob["size"] and not resp.chunked
        assert (n, md5) == (blob["size"], blob["md5"]), name
        assert resp.etag == blob["etag"]
        assert resp.last_modified == blob["last_modified"]


async def test_readinto_with_a_length_reads_at_most_that_many(http_server):
    # readinto(mv, n): at most n bytes into the start of mv, from the head's leftovers, plain
    # and chunked bodies alike; the rest of mv is left as it was.
    blob = http_server["blobs"]["small"]
    for query in ("", "?te=chunked&chunk=100"):
        resp = await http.request("GET", http_server["base"] + "/blob/small" + query,
                                  bytearray(256))
        buf = bytearray(b"\xee" * 64)
        h = hashlib.md5()
        total = 0
        while True:
            n = await resp.readinto(buf, 7)
            if not n:
                break
            assert 0 < n <= 7 and buf[7:] == b"\xee" * 57, (query, n)
            h.update(buf[:n])
            total += n
        assert (total, binascii.hexlify(h.digest()).decode()) == (blob["size"], blob["md5"])
    resp = await http.request("GET", http_server["base"] + "/blob/small", bytearray(256))
    await fails(http.ERR_STATE, resp.readinto(bytearray(8), 0), "non-empty")
    await resp.aclose()


async def test_chunked_bodies_arrive_intact(http_server):
    base = http_server["base"]
    for name, query in (
        ("big", "chunk=1000&ext=1&trailer=1"),
        ("medium", "chunk=65536"),
        ("small", "chunk=1"),
        ("small", "chunk=7&ext=1"),
    ):
        blob = http_server["blobs"][name]
        resp, md5, n = await download(base + "/blob/%s?te=chunked&%s" % (name, query))
        assert resp.chunked and resp.content_length is None
        assert (n, md5) == (blob["size"], blob["md5"]), query


async def test_body_until_close_arrives_intact(http_server):
    blob = http_server["blobs"]["medium"]
    resp, md5, n = await download(http_server["base"] + "/blob/medium?te=close")
    assert resp.status == 200 and resp.content_length is None and not resp.chunked
    assert (n, md5) == (blob["size"], blob["md5"])


async def test_tiny_buffers_still_deliver_every_byte(http_server):
    base = http_server["base"]
    blob = http_server["blobs"]["small"]
    for query in ("", "?te=chunked&chunk=100", "?te=close"):
        for bufsize, chunk in ((128, 1), (128, 3), (200, 333)):
            _, md5, n = await download(base + "/blob/small" + query, bufsize=bufsize, chunk=chunk)
            assert (n, md5) == (blob["size"], blob["md5"]), (query, bufsize, chunk)


async def test_empty_bodies_end_at_once(http_server):
    for te in ("length", "chunked", "close"):
        resp, md5, n = await download(http_server["base"] + "/empty?te=" + te)
        assert resp.status == 200 and n == 0, te
        assert md5 == "d41d8cd98f00b204e9800998ecf8427e"


async def test_head_has_no_body(http_server):
    blob = http_server["blobs"]["big"]
    resp = await http.request("HEAD", http_server["base"] + "/blob/big", bytearray(1024))
    assert resp.status == 200 and resp.content_length == blob["size"]
    assert await resp.readinto(bytearray(100)) == 0


async def test_reading_after_close_is_a_state_error(http_server):
    for query in ("", "?te=chunked&chunk=100"):
        resp = await http.request(
            "GET", http_server["base"] + "/blob/medium" + query, bytearray(512)
        )
        assert await resp.readinto(bytearray(10)) == 10
        await resp.aclose()
        await fails(http.ERR_STATE, resp.readinto(bytearray(10)), "closed")
    resp = await http.request("GET", http_server["base"] + "/blob/small", bytearray(512))
    await fails(http.ERR_STATE, resp.readinto(bytearray(0)), "non-empty")
    await resp.aclose()


async def test_interim_100_continue_is_skipped(http_server):
    resp = await http.request("GET", http_server["base"] + "/interim", bytearray(512))
    assert resp.status == 200
    assert await resp.read() == b"ok"


async def test_longer_body_than_announced_is_cut_at_content_length(http_server):
    blob = http_server["blobs"]["small"]
    resp, md5, n = await download(http_server["base"] + "/overlong/small?extra=3000")
    assert (n, md5) == (blob["size"], blob["md5"])


# --------------------------------------------------------------- range, if-range


async def test_resume_with_range_completes_the_same_bytes(http_server):
    base = http_server["base"]
    blob = http_server["blobs"]["medium"]
    # First attempt: the first 40000 bytes, then the connection is given up.
    h = hashlib.md5()
    resp = await http.request("GET", base + "/blob/medium", bytearray(4096))
    mv = memoryview(bytearray(4000))
    got = 0
    while got < 40000:
        n = await resp.readinto(mv)
        h.update(mv[:n])
        got += n
    await resp.aclose()
    # Resume from there, guarded by the ETag.
    resp, md5, n = await download(base + "/blob/medium", range_start=got, if_range=resp.etag, md5=h)
    assert resp.status == 206
    assert resp.content_range == (got, blob["size"] - 1, blob["size"])
    assert resp.content_length == blob["size"] - got
    assert got + n == blob["size"] and md5 == blob["md5"]


async def test_resume_works_with_every_framing(http_server):
    blob = http_server["blobs"]["small"]
    for query in ("?te=chunked&chunk=64", "?te=close"):
        resp, _, n = await download(http_server["base"] + "/blob/small" + query, range_start=900)
        size = blob["size"]
        assert resp.status == 206 and n == size - 900
        assert resp.content_range == (900, size - 1, size)


async def test_if_range_validators(http_server):
    base = http_server["base"] + "/blob/small"
    blob = http_server["blobs"]["small"]
    for validator in (blob["etag"], blob["last_modified"]):
        resp, _, n = await download(base, range_start=10, if_range=validator)
        assert resp.status == 206 and n == blob["size"] - 10
    # A stale validator: the server sends everything again, and says so with 200.
    resp, md5, n = await download(base, range_start=10, if_range='"stale"')
    assert resp.status == 200 and resp.content_range is None
    assert (n, md5) == (blob["size"], blob["md5"])


async def test_range_past_the_end_is_416(http_server):
    size = http_server["blobs"]["small"]["size"]
    resp = await http.request(
        "GET", http_server["base"] + "/blob/small", bytearray(512), range_start=size
    )
    assert resp.status == 416
    assert resp.content_range == (None, None, size)
    await resp.aclose()


async def test_206_from_the_wrong_offset_is_refused(http_server):
    url = http_server["base"] + "/blob/small?shift=1"
    await fails(
        http.ERR_HEADER,
        http.request("GET", url, bytearray(512), range_start=10),
        "got Content-Range from 11",
    )


# ---------------------------------------------------------------- request head


async def test_request_head_as_the_server_sees_it(http_server):
    base = http_server["base"]
    resp, seen = await echo(
        base,
        "POST",
        headers={"X-Imei": "861234567890123", "Content-Type": "application/json"},
        body='{"v": 1}',
        range_start=5,
        if_range='"abc"',
    )
    h = seen["h"]
    assert seen["method"] == "POST" and seen["target"] == "/echo"
    assert h["host"] == "127.0.0.1:%d" % http_server["port"]
    assert h["connection"] == "close"
    assert h["user-agent"] == "mpfota"
    assert h["x-imei"] == "861234567890123"
    assert h["content-length"] == "8" and seen["body"] == '{"v": 1}'
    assert h["range"] == "bytes=5-" and h["if-range"] == '"abc"'
    # A plain GET: no body, no Content-Length, no Range.
    _, seen = await echo(base, headers=[("Connection", "keep-alive"), ("User-Agent", "luatos")])
    h = seen["h"]
    assert "content-length" not in h and "range" not in h and seen["body"] == ""
    assert h["connection"] == "keep-alive" and h["user-agent"] == "luatos"  # the caller's win
    assert [k.lower() for k, _ in seen["headers"]].count("connection") == 1


async def test_bad_arguments_are_state_errors(http_server):
    base = http_server["base"]
    buf = bytearray(512)
    for url in ("ftp://127.0.0.1/x", "http://", "127.0.0.1/x", "http://h:99999/", "http://a b/"):
        await fails(http.ERR_STATE, http.request("GET", url, buf), "bad URL")
    await fails(
        http.ERR_STATE, http.request("GET", base + "/echo", buf, headers={"X": "a\r\nB: c"})
    )
    await fails(http.ERR_STATE, http.request("GET", base + "/echo", bytearray(10)))
    await fails(http.ERR_STATE, http.request("G T", base + "/echo", buf))
    await fails(http.ERR_STATE, http.request("GET", base + "/echo", buf, range_start=-1))


# ------------------------------------------------------------------- redirects


async def test_every_redirect_code_is_followed(http_server):
    base = http_server["base"]
    blob = http_server["blobs"]["small"]
    for code in (301, 302, 303, 307, 308):
        resp, md5, n = await download(base + "/redirect?code=%d&to=/blob/small" % code)
        assert resp.status == 200 and resp.redirects == 1, code
        assert resp.url == base + "/blob/small"
        assert md5 == blob["md5"]


async def test_fields_of_a_redirect_hop_do_not_stay(http_server):
    # The hop's Location (and anything else it set) is not the final answer's.
    base = http_server["base"]
    blob = http_server["blobs"]["small"]
    resp, _, n = await download(base + "/redirect?to=/empty")
    assert (resp.status, resp.redirects, n) == (200, 1, 0)
    assert resp.location is None and resp.etag is None and resp.last_modified is None
    resp, md5, _ = await download(base + "/hop/2?to=/blob/small%3Fte=chunked")
    assert (resp.status, resp.redirects, md5) == (200, 2, blob["md5"])
    assert resp.location is None and resp.chunked and resp.etag == blob["etag"]
    resp, _, _ = await download(base + "/redirect?to=/status/503%3Fretry=7")
    assert (resp.status, resp.retry_after, resp.location) == (503, 7, None)


async def test_relative_and_absolute_locations(http_server):
    blob = http_server["blobs"]["small"]
    for style in ("abs", "scheme", "path", "rel", "dotdot"):
        resp, md5, _ = await download(
            http_server["base"] + "/hop/3?style=%s&to=/blob/small" % style
        )
        assert resp.redirects == 3 and md5 == blob["md5"], style


async def test_redirect_limit(http_server):
    base = http_server["base"]
    resp, _, _ = await download(base + "/hop/5")
    assert resp.redirects == 5
    await fails(http.ERR_STATE, download(base + "/hop/6"), "too many redirects")
    await fails(http.ERR_STATE, download(base + "/hop/3", max_redirects=2), "too many redirects")
    await fails(http.ERR_STATE, download(base + "/hop/1", max_redirects=0))


async def test_redirect_loops_are_errors(http_server):
    for path in ("/loop/a", "/loop/self"):
        await fails(http.ERR_STATE, download(http_server["base"] + path), "redirect loop")


async def test_303_turns_into_get_others_keep_method_and_body(http_server):
    base = http_server["base"]
    resp = await http.request(
        "POST", base + "/redirect?code=303&to=/echo", bytearray(4096), body="data"
    )
    seen = json.loads(await resp.read(4096))
    assert seen["method"] == "GET" and seen["body"] == ""
    assert "content-length" not in [k.lower() for k, _ in seen["headers"]]
    for code in (307, 308):
        resp = await http.request(
            "POST", base + "/redirect?code=%d&to=/echo" % code, bytearray(4096), body="data"
        )
        seen = json.loads(await resp.read(4096))
        assert seen["method"] == "POST" and seen["body"] == "data", code


async def test_range_and_if_range_are_sent_on_every_hop(http_server):
    base = http_server["base"]
    tag = "hops%d" % time.ticks_ms()
    resp, _, n = await download(
        base + "/hop/2?tag=%s&to=/blob/small" % tag,
        range_start=600,
        if_range=http_server["blobs"]["small"]["etag"],
    )
    assert resp.status == 206 and n == 400
    log = json.loads(
        await (await http.request("GET", base + "/_requests?tag=" + tag, bytearray(512))).read(8192)
    )
    assert len(log) == 3
    for req in log:
        h = {k.lower(): v for k, v in req["headers"]}
        assert h["range"] == "bytes=600-" and h["if-range"] == http_server["blobs"]["small"]["etag"]


async def test_bad_location_is_a_header_error(http_server):
    url = http_server["base"] + "/redirect?to=ftp://127.0.0.1/x"
    await fails(http.ERR_HEADER, http.request("GET", url, bytearray(512)), "bad Location")


async def test_3xx_without_location_comes_back_to_the_caller(http_server):
    resp = await http.request("GET", http_server["base"] + "/status/300", bytearray(512))
    assert resp.status == 300 and resp.location is None and resp.redirects == 0
    assert json.loads(await resp.read())["code"] == 27


# -------------------------------------------------------------- error statuses


async def test_error_statuses_come_back_with_a_readable_body(http_server):
    base = http_server["base"]
    for code in (400, 403, 404, 409, 500):
        resp = await http.request("GET", base + "/status/%d" % code, bytearray(512))
        assert resp.status == code
        body = json.loads(await resp.read())
        assert body["code"] == 27 and body["msg"] == "\u5df2\u662f\u6700\u65b0\u7248\u672c"
    resp = await http.request("GET", base + "/status/503?retry=120", bytearray(512))
    assert resp.status == 503 and resp.retry_after == 120
    await resp.aclose()
    resp = await http.request(
        "GET", base + "/status/429?retry=Wed,%2021%20Oct%202015%2007:28:00%20GMT", bytearray(512)
    )
    assert resp.retry_after == "Wed, 21 Oct 2015 07:28:00 GMT"
    await resp.aclose()
    # A big error body is read only as far as the caller asks.
    resp = await http.request("GET", base + "/status/500?len=50000", bytearray(512))
    assert await resp.read(100) == b"x" * 100


# ------------------------------------------------------------- broken servers


async def test_truncated_bodies_are_close_errors(http_server):
    base = http_server["base"]
    got = []

    async def count(url):
        resp = await http.request("GET", url, bytearray(4096))
        mv = bytearray(1000)
        while True:
            n = await resp.readinto(mv)
            if not n:
                return
            got[-1] += n

    for query, text in (
        ("at=5000", "after 5000 of 100003 body bytes"),
        ("at=5000&te=chunked", "in chunk 1"),
    ):
        got.append(0)
        await fails(http.ERR_CLOSE, count(base + "/truncate/medium?" + query), text)
        assert got[-1] == 5000, query  # every byte that did arrive was delivered
    # A reset instead of a clean close (the kernel may drop what was not read yet).
    got.append(0)
    await fails(http.ERR_CLOSE, count(base + "/truncate/medium?at=5000&rst=1"), "ECONNRESET")
    assert got[-1] <= 5000


async def test_close_before_answering_is_a_close_error(http_server):
    await fails(
        http.ERR_CLOSE,
        http.request("GET", http_server["base"] + "/close-early", bytearray(512)),
        "without answering",
    )


async def test_garbage_status_lines_are_header_errors(http_server):
    for kind in ("text", "http2", "short", "binary"):
        url = http_server["base"] + "/garbage?kind=" + kind
        await fails(http.ERR_HEADER, http.request("GET", url, bytearray(512)))


async def test_endless_headers_are_header_errors(http_server):
    await fails(
        http.ERR_HEADER,
        http.request("GET", http_server["base"] + "/endless-headers", bytearray(4096)),
        "endless headers",
    )


async def test_lines_longer_than_the_buffer_are_header_errors(http_server):
    base = http_server["base"]
    for path in ("/long-header?len=5000", "/long-status?len=5000"):
        await fails(
            http.ERR_HEADER,
            http.request("GET", base + path, bytearray(4096)),
            "longer than the 4096-byte buffer",
        )
    # Long, but within the buffer: fine (an unknown header is skipped).
    resp = await http.request("GET", base + "/long-header?len=3000", bytearray(4096))
    assert resp.status == 200 and await resp.readinto(bytearray(10)) == 0


async def test_malformed_chunked_bodies_are_body_errors(http_server):
    for kind in ("size", "crlf", "huge"):
        url = http_server["base"] + "/bad-chunk?kind=" + kind
        await fails(http.ERR_BODY, download(url))


# --------------------------------------------------------- connect and timeouts


async def test_connection_refused_is_a_connect_error(http_server):
    await fails(
        http.ERR_CONNECT,
        http.request("GET", http_server["refused"] + "/x", bytearray(512)),
        "ECONNREFUSED",
    )


async def test_unknown_host_is_a_connect_error():
    await fails(
        http.ERR_CONNECT,
        http.request("GET", "http://nonexistent.invalid/x", bytearray(512)),
        "cannot resolve",
    )


async def test_connect_timeout(http_server):
    t = time.ticks_ms()
    url = http_server["blackhole"] + "/x"
    await fails(
        http.ERR_TIMEOUT,
        http.request("GET", url, bytearray(512), connect_timeout_ms=300),
        "connect timeout",
    )
    assert 250 <= ms_since(t) < 2000


async def test_idle_read_timeout_before_and_during_the_body(http_server):
    base = http_server["base"]
    t = time.ticks_ms()
    await fails(
        http.ERR_TIMEOUT,
        http.request("GET", base + "/silent?ms=3000", bytearray(512), read_timeout_ms=300),
        "no data for 300 ms",
    )
    assert 250 <= ms_since(t) < 2000
    resp = await http.request(
        "GET", base + "/silent?ms=3000&after=head", bytearray(512), read_timeout_ms=300
    )
    assert resp.status == 200
    mv = bytearray(100)
    assert await resp.readinto(mv) == 3  # "abc", then silence
    t = time.ticks_ms()
    await fails(http.ERR_TIMEOUT, resp.readinto(mv), "no data")
    assert 250 <= ms_since(t) < 2000
    await resp.aclose()


async def test_trickling_server_hits_the_deadline(http_server):
    base = http_server["base"]
    # One byte every 50 ms never trips the 1 s idle timeout; the 800 ms deadline ends it.
    t = time.ticks_ms()
    e = await fails(
        http.ERR_TIMEOUT,
        download(base + "/trickle?n=200&ms=50", read_timeout_ms=1000, deadline_ms=800),
    )
    assert "deadline" in e.msg
    assert 700 <= ms_since(t) < 2500
    # The same while the head trickles in.
    t = time.ticks_ms()
    await fails(
        http.ERR_TIMEOUT,
        http.request(
            "GET", base + "/trickle?n=5&ms=50&phase=head", bytearray(512), deadline_ms=500
        ),
        "deadline",
    )
    assert 400 <= ms_since(t) < 2500


async def test_other_tasks_run_during_waits_and_downloads(http_server):
    ticks = [0]

    async def ticker(ms):
        while True:
            await asyncio.sleep_ms(ms)
            ticks[0] += 1

    task = asyncio.create_task(ticker(10))
    await fails(
        http.ERR_TIMEOUT,
        http.request(
            "GET", http_server["base"] + "/silent?ms=3000", bytearray(512), read_timeout_ms=300
        ),
    )
    task.cancel()
    assert ticks[0] >= 10, ticks[0]  # ~30 expected in 300 ms
    # Reading a body that is already all there (no read ever waits) still lets other tasks
    # run at least every 10 ms (http._YIELD_MS), so a task that is always ready gets turns
    # while the reader works (here 1 ms of blocking work per read, as a flash write is).
    resp = await http.request("GET", http_server["base"] + "/blob/medium", bytearray(1024))
    await asyncio.sleep_ms(200)  # the server has sent what the socket buffers hold
    mv = bytearray(1024)
    await resp.readinto(mv)  # the bytes that came with the head
    ticks[0] = 0
    task = asyncio.create_task(ticker(0))
    for _ in range(40):
        assert await resp.readinto(mv) == 1024
        t = time.ticks_ms()
        while time.ticks_diff(time.ticks_ms(), t) < 1:
            pass
    task.cancel()
    await resp.aclose()
    assert ticks[0] >= 3, ticks[0]  # 40 ms of reading: a turn every 10 ms


async def test_deadline_holds_even_when_data_keeps_coming(http_server):
    resp = await http.request(
        "GET", http_server["base"] + "/blob/medium", bytearray(1024), deadline_ms=300
    )
    mv = bytearray(1024)
    assert await resp.readinto(mv) > 0
    await asyncio.sleep_ms(400)  # data waits in the socket, but the transaction is over time
    await fails(http.ERR_TIMEOUT, resp.readinto(mv), "deadline of 300 ms")
    await resp.aclose()


async def test_a_callers_own_timeout_is_not_taken_for_ours(http_server):
    url = http_server["base"] + "/silent?ms=3000"
    try:
        await asyncio.wait_for_ms(
            http.request("GET", url, bytearray(512), read_timeout_ms=5000), 200
        )
    except asyncio.TimeoutError:
        pass
    else:
        raise AssertionError("wait_for_ms did not time out")
    # And the client still works afterwards (no stray watchdog cancels us).
    _, md5, _ = await download(http_server["base"] + "/blob/small")
    await asyncio.sleep_ms(400)
    assert md5 == http_server["blobs"]["small"]["md5"]


# ---------------------------------------------------------------------- memory


async def test_body_path_allocation_is_small_and_independent_of_chunk_size(http_server):
    url = http_server["base"] + "/blob/big"
    per_call = []
    for chunk in (512, 4096):
        resp = await http.request("GET", url, bytearray(4096))
        mv = memoryview(bytearray(chunk))
        while resp._end > resp._pos:  # first the bytes that came with the head (copied)
            await resp.readinto(mv)
        calls = 200  # 200 reads: 100 KB or 800 KB straight from the socket
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        for _ in range(calls):
            assert await resp.readinto(mv) > 0
        used = gc.mem_alloc() - before
        gc.enable()
        await resp.aclose()
        per_call.append(used / calls)
    # Only the coroutine object of each readinto call (MicroPython allocates one per await);
    # no buffer, no bytes object, nothing that grows with the chunk.
    assert max(per_call) <= 256, per_call
    assert abs(per_call[0] - per_call[1]) <= 32, per_call


async def test_a_response_has_few_instance_attributes(http_server):
    # Their table is one block: beyond 17 attributes it needs a hole of 368 bytes or more
    # (64-bit), which a fragmented heap may not have (docs/delta.md, "Memory and speed"). A
    # plain answer with ETag and Last-Modified, and a 206 with a Content-Range too, stay
    # within 17.
    base = http_server["base"] + "/blob/small"
    blob = http_server["blobs"]["small"]
    resp, _, _ = await download(base)
    assert resp.etag == blob["etag"] and resp.last_modified == blob["last_modified"]
    assert len(resp.__dict__) <= 16, sorted(resp.__dict__)
    resp, _, _ = await download(base, range_start=10, if_range=blob["etag"])
    assert resp.status == 206 and resp.content_range is not None
    assert len(resp.__dict__) <= 17, sorted(resp.__dict__)


async def test_repeated_downloads_do_not_leak(http_server):
    url = http_server["base"] + "/blob/medium?te=chunked&chunk=3000"
    buf = bytearray(4096)
    mv = memoryview(bytearray(4096))

    async def once():
        resp = await http.request("GET", url, buf)
        while await resp.readinto(mv):
            pass
        await resp.aclose()
        await asyncio.sleep_ms(0)  # let the cancelled watchdog task finish
        gc.collect()
        return gc.mem_alloc()

    await once()  # first use interns names and sets up the poller
    base = await once()
    for _ in range(5):
        last = await once()
    assert last - base <= 512, (base, last)


# ------------------------------------------------------------------------- TLS


async def test_tls_download_verified_with_pem_or_der_ca(tls_server):
    blob = tls_server["blobs"]["big"]
    ca_der = binascii.unhexlify(tls_server["ca_der_hex"])
    for base, ca in (
        (tls_server["base"], tls_server["ca"]),
        (tls_server["base_localhost"], ca_der),
    ):
        resp, md5, n = await download(base + "/blob/big", server_cert=ca)
        assert resp.status == 200 and (n, md5) == (blob["size"], blob["md5"]), base


async def test_tls_chunked_and_until_close_bodies(tls_server):
    blob = tls_server["blobs"]["medium"]
    for query in ("?te=chunked&chunk=5000", "?te=close"):
        _, md5, n = await download(
            tls_server["base"] + "/blob/medium" + query, server_cert=tls_server["ca"]
        )
        assert (n, md5) == (blob["size"], blob["md5"]), query


async def test_tls_without_a_ca_does_not_verify(tls_server):
    # As LuatOS: no server_cert, no verification (even a wrong host name passes).
    resp, md5, _ = await download(tls_server["wrong_host_base"] + "/blob/small")
    assert md5 == tls_server["blobs"]["small"]["md5"]


async def test_tls_unknown_ca_is_a_connect_error(tls_server):
    url = tls_server["base"] + "/blob/small"
    await fails(
        http.ERR_CONNECT,
        http.request("GET", url, bytearray(512), server_cert=tls_server["other_ca"]),
        "TLS",
    )


async def test_tls_wrong_host_name_is_a_connect_error(tls_server):
    url = tls_server["wrong_host_base"] + "/blob/small"
    await fails(
        http.ERR_CONNECT,
        http.request("GET", url, bytearray(512), server_cert=tls_server["ca"]),
        "CN",
    )


async def test_tls_bad_ca_data_is_a_connect_error(tls_server):
    url = tls_server["base"] + "/blob/small"
    for junk in (b"junk", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"):
        await fails(
            http.ERR_CONNECT,
            http.request("GET", url, bytearray(512), server_cert=junk),
            "TLS setup failed",
        )


async def test_tls_client_certificate(tls_server):
    url = tls_server["mtls_base"] + "/blob/small"
    ca = tls_server["ca"]
    await fails(http.ERR_CONNECT, download(url, server_cert=ca))
    resp, md5, _ = await download(
        url,
        server_cert=ca,
        client_cert=tls_server["client_cert"],
        client_key=tls_server["client_key"],
    )
    assert resp.status == 200 and md5 == tls_server["blobs"]["small"]["md5"]


async def test_tls_client_key_password_is_refused_clearly(tls_server):
    url = tls_server["mtls_base"] + "/blob/small"
    kw = {"server_cert": tls_server["ca"], "client_cert": tls_server["client_cert"]}
    await fails(
        http.ERR_CONNECT,
        download(
            url,
            client_key=tls_server["client_key_encrypted"],
            client_password=tls_server["client_key_password"],
            **kw,
        ),
        "not supported",
    )
    await fails(
        http.ERR_CONNECT,
        download(url, client_key=tls_server["client_key_encrypted"], **kw),
        "not supported",
    )
    await fails(
        http.ERR_CONNECT,
        download(url, client_key=tls_server["client_key"], client_password="x", **kw),
        "not supported",
    )


async def test_tls_redirect_to_plain_http_and_timeouts(tls_server):
    url = tls_server["base"] + "/redirect?to=" + tls_server["plain_base"] + "/blob/small"
    resp, md5, _ = await download(url, server_cert=tls_server["ca"])
    assert resp.url.startswith("http://") and md5 == tls_server["blobs"]["small"]["md5"]
    t = time.ticks_ms()
    url = tls_server["base"] + "/silent?ms=3000"
    await fails(
        http.ERR_TIMEOUT,
        http.request("GET", url, bytearray(512), server_cert=tls_server["ca"], read_timeout_ms=300),
    )
    assert ms_since(t) < 2000
