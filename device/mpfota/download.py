# Download an update over HTTP straight into the spare slot, resumable, then verify and switch.
#
# The HTTP client reads into the slot writer's sector buffer (no copy, no per-chunk buffers).
# Every CHECKPOINT bytes (256 KiB: a few seconds of a slow link to fetch again) the offset and the CRC of what is in flash are saved; after a dropped
# connection, or a power cut and a new call, the download continues from there with a Range
# request (If-Range with the ETag or Last-Modified seen first, so a changed file starts over).
from micropython import const

from mpfota import http, log, state
from mpfota.ota import Update
from mpfota.writer import FOTA_ERROR, FotaError

CHECKPOINT = const(262144)
_RECORD = "download"
_RETRYABLE = (http.ERR_CLOSE, http.ERR_RX, http.ERR_TIMEOUT, http.ERR_CONNECT)


class Result:
    # status: the HTTP status; size: bytes written into the slot (0 when there was no update);
    # body: the start of a non-2xx answer (for the caller's log), else None.
    def __init__(self, status, size=0, body=None, location=None, retry_after=None):
        self.status = status
        self.size = size
        self.body = body
        self.location = location  # Location of an unfollowed 3xx
        self.retry_after = retry_after  # Retry-After: int seconds or the HTTP-date string


def _resume_point(upd, url):
    rec = state.load(_RECORD)
    if not rec or rec.get("url") != url or rec.get("slot") != upd.spare.info()[4]:
        return 0, None
    if upd.writer.resume(rec["offset"], rec["crc"]):
        log.info("fota", "resuming at", rec["offset"])
        return rec["offset"], rec.get("validator")
    log.warn("fota", "saved progress does not match the slot: starting again")
    return 0, None


def _checkpoint(upd, url, validator, length):
    w = upd.writer
    state.save(_RECORD, {"url": url, "slot": upd.spare.info()[4], "offset": w.flushed,
                         "crc": w.crc, "validator": validator, "length": length})


async def fetch(url, md5=None, sha256=None, length=None, timeout_ms=600000, retries=3,
                progress=None, version=None, switch=True, checkpoint=CHECKPOINT,
                range_always=False, method="GET", **request):
    """Download `url` into the spare slot; verify; switch the boot slot when `switch`.

    `request` goes to mpfota.http.request (headers, body, server_cert, client_cert,
    client_key, client_password, follow_redirects, ...). Progress is saved every `checkpoint`
    bytes (a multiple of 4096) for resuming; `range_always` sends a Range header even from 0.
    Returns a Result. A non-2xx answer is not an error (Result.status says what it was);
    transport failures raise http.HTTPError and bad updates raise FotaError (code -9); both
    are logged with their cause, and nothing is switched."""
    try:
        upd = Update()
        got = await _receive(upd, method, url, length, timeout_ms, retries, progress,
                             checkpoint, range_always, request)
        if isinstance(got, Result):
            return got
        try:
            upd.verify(length if length is not None else got, md5, sha256)
        finally:
            state.clear(_RECORD)  # verified, or wrong: either way the next attempt is new
        if switch:
            upd.switch(version)
        return Result(200, upd.writer.flushed)
    except (http.HTTPError, FotaError, OSError) as e:
        log.error("fota", "download of", url, "failed:", e)
        raise


async def _receive(upd, method, url, length, timeout_ms, retries, progress, checkpoint,
                   range_always, request):
    # The body into the slot, resuming after drops; returns its size, or the Result of a
    # non-2xx answer.
    import time

    w = upd.writer
    hbuf = bytearray(1024)
    deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
    offset, validator = _resume_point(upd, url)
    attempt = 0
    while True:
        remaining = time.ticks_diff(deadline, time.ticks_ms())
        if remaining <= 0:
            raise http.HTTPError(http.ERR_TIMEOUT, "download deadline passed")
        try:
            resp = await http.request(
                method, url, hbuf, range_start=offset if offset or range_always else None,
                if_range=validator if offset else None, deadline_ms=remaining, **request)
            try:
                if resp.status not in (200, 206):
                    text = (await resp.read(512)).decode("utf-8", "replace")
                    return Result(resp.status, 0, text, resp.location, resp.retry_after)
                return await _take(resp, upd, url, offset, length, progress, checkpoint)
            finally:
                await resp.aclose()
        except http.HTTPError as e:
            attempt += 1
            if e.code not in _RETRYABLE or attempt > retries:
                raise
            offset = w.drop_partial()
            validator = _validator_of(url)
            log.warn("fota", "download interrupted (%s): retry %d at %d" % (e, attempt, offset))


def _validator_of(url):
    rec = state.load(_RECORD)
    return rec.get("validator") if rec and rec.get("url") == url else None


async def _take(resp, upd, url, offset, length, progress, checkpoint):
    # Stream one response into the slot; returns the total size of the update.
    w = upd.writer
    if resp.status == 200:
        if offset:
            log.info("fota", "server sent the whole file (changed, or no Range support): from 0")
            w.restart()
        total = resp.content_length
    else:
        cr = resp.content_range
        if cr is None or cr[0] != offset:
            raise FotaError(FOTA_ERROR, "206 answer does not start at %d" % offset)
        total = cr[2]
    if length is not None and total is not None and total != length:
        raise FotaError(FOTA_ERROR, "server announces %d bytes, expected %d" % (total, length))
    if total is not None and total > w.capacity:
        raise FotaError(FOTA_ERROR, "update of %d bytes does not fit the slot (%d)"
                        % (total, w.capacity))
    validator = resp.etag or resp.last_modified
    _checkpoint(upd, url, validator, total)
    saved = w.flushed
    limit = total if total is not None else length  # a chunked body announces nothing
    while True:
        n = await resp.readinto(w.space())
        if not n:
            break
        w.advance(n)
        if limit is not None and w.written > limit:
            raise FotaError(FOTA_ERROR, "body longer than announced (%d bytes)" % limit)
        if w.flushed - saved >= checkpoint:
            _checkpoint(upd, url, validator, total)
            saved = w.flushed
        if progress:
            progress(w.written, total)
    if total is not None and w.written < total:
        raise http.HTTPError(http.ERR_CLOSE, "connection closed at %d of %d bytes" % (w.written, total))
    return total if total is not None else w.written
