# Download an update over HTTP straight into the spare slot, resumable, then verify and switch.
#
# The HTTP client reads into the door's sector buffer (mpfota.slot: no copy, no per-chunk
# buffers). Every CHECKPOINT bytes (256 KiB: a few seconds of a slow link to fetch again), but
# not more than once every CHECKPOINT_MS (on a fast link a journal write costs more than
# fetching a second's worth of bytes again), the offset and the CRC of what is in flash go into
# the journal; after a dropped connection, or a power cut and a new call, the download
# continues from there with a Range request (If-Range with the ETag or Last-Modified seen
# first, so a changed file starts over). An explicit `checkpoint` is a plain byte interval.
#
# The same URL may serve an mpfota update package (docs/package-format.md) instead of a raw core
# image: the first 16 bytes of a body that starts at byte 0 tell (package magic "MPFP"). A
# package goes to mpfota.package.Installer, which writes its core section through the same
# Slot and buffer and stages its script set. A dropped connection resumes inside the package
# (Range from the installer's resume offset); after a power cut a package starts from byte 0.
# A format-2 delta patch ("MPFD" version 2) goes to mpfota.deltafetch, applied as it streams.
#
# The buffers come first, before the rest of the path is imported (the imports leave the heap
# in holes): the door's sector buffer when mpfota.slot loads, then the 1 KiB head buffer.
from mpfota.slot import CHECKPOINT_MS, Slot

_HEAD = bytearray(1024)  # the HTTP head (and chunk-size lines); one download at a time

from micropython import const

from mpfota import http, log
from mpfota.errors import ALREADY_RUNNING, FOTA_ERROR, FotaError

CHECKPOINT = const(262144)
_RETRYABLE = (http.ERR_CLOSE, http.ERR_RX, http.ERR_TIMEOUT, http.ERR_CONNECT)
_SNIFF = const(16)  # bytes read before deciding: package header or raw image


class Result:
    # status: the HTTP status; size: bytes written into the slot (0 when there was no update);
    # body: the start of a non-2xx answer (for the caller's log), else None; manifest: the
    # mpfota.package.Manifest when the body was an update package, else None.
    manifest = None

    def __init__(self, status, size=0, body=None, location=None, retry_after=None):
        self.status = status
        self.size = size
        self.body = body
        self.location = location  # Location of an unfollowed 3xx
        self.retry_after = retry_after  # Retry-After: int seconds or the HTTP-date string


async def fetch(url, md5=None, sha256=None, length=None, timeout_ms=600000, retries=3,
                progress=None, version=None, switch=True, checkpoint=None,
                range_always=False, method="GET", package=None, **request):
    """Download `url` into the spare slot; verify; switch the boot slot when `switch`.

    When the body is an update package it is installed instead (mpfota.package; `package`:
    keyword arguments for its Installer, e.g. {"project": PROJECT, "version": VERSION, "key":
    PEM}); md5 / sha256 / length then apply to the whole package file, a bad package raises
    mpfota.package.PackageError (a FotaError with a `reason`), and Result.manifest is its
    manifest.

    `request` goes to mpfota.http.request (headers, body, server_cert, client_cert,
    client_key, client_password, follow_redirects, ...). Progress is saved for resuming every
    `checkpoint` bytes (a multiple of 4096), or by default every CHECKPOINT bytes and at most
    once every CHECKPOINT_MS; `range_always` sends a Range header even from 0.
    progress(done, total) is called as bytes arrive (total None when unknown); the log shows
    every 10 %.
    Returns a Result. A non-2xx answer is not an error (Result.status says what it was);
    transport failures raise http.HTTPError and bad updates raise FotaError (code -9); both
    are logged with their cause, and nothing is switched. The image the board already runs
    raises FotaError(errors.ALREADY_RUNNING) after its first bytes, with nothing written."""
    try:
        slot = Slot(md5=md5 is not None)
        if isinstance(slot.saved_validator(url), list):  # a streamed delta, cut by a power loss
            return await _delta(slot, url, version, switch, retries, timeout_ms, progress,
                                checkpoint, request)
        got, pkg = await _receive(slot, method, url, length, timeout_ms, retries, progress,
                                  checkpoint, range_always, request,
                                  (package, progress, md5, sha256))
        if got is _DELTA:
            return await _delta(slot, url, version, switch, retries, timeout_ms, progress,
                                checkpoint, request)
        if isinstance(got, Result):
            return got
        if pkg is not None:
            r = Result(200, got)
            r.manifest = pkg.finish(length, switch)
            return r
        try:
            slot.verify(length if length is not None else got, md5, sha256)
        finally:
            slot.forget()  # verified, or wrong: either way the next attempt is new
        if switch:
            slot.switch(version)
        return Result(200, slot.flushed)
    except (http.HTTPError, FotaError, OSError) as e:
        if getattr(e, "code", None) != ALREADY_RUNNING:  # the door logged that one (info)
            log.error("fota", "download of", url, "failed:", e)
        raise


async def _receive(slot, method, url, length, timeout_ms, retries, progress, checkpoint,
                   range_always, request, pkg_args):
    # The body into the slot, resuming after drops. Returns (size, None), (the Result of a
    # non-2xx answer, None), (_DELTA, None), or (package size, the mpfota.downloadpkg.Fetch
    # holding the package found in the body; pkg_args: what it needs).
    import time

    deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
    offset, validator = slot.resume_point(url)
    pkg = None
    seen = validator  # the validator of the file being written: a retry names that file
    attempt = 0
    while True:
        remaining = time.ticks_diff(deadline, time.ticks_ms())
        if remaining <= 0:
            raise http.HTTPError(http.ERR_TIMEOUT, "download deadline passed")
        try:
            resp = await http.request(
                method, url, _HEAD, range_start=offset if offset or range_always else None,
                if_range=validator if offset else None, deadline_ms=remaining, **request)
            try:
                if resp.status not in (200, 206):
                    from mpfota.brief import body_text

                    text = body_text(await resp.read(512))
                    return Result(resp.status, 0, text, resp.location, resp.retry_after), None
                if pkg is not None:
                    await pkg.feed(resp, 0 if resp.status == 200 else offset)
                    return pkg.size(), pkg
                seen = resp.etag or resp.last_modified or seen
                if resp.status == 200 or offset == 0:
                    n = await _sniff(resp, slot, offset)
                    if n >= 5 and bytes(slot.buf[:5]) == _DELTA_MAGIC:
                        return _DELTA, None
                    if _is_package(slot.buf, n):
                        from mpfota import downloadpkg

                        slot.hash_md5 = True  # a package's core section carries an MD5
                        pkg = downloadpkg.Fetch(slot, seen, *pkg_args)
                        await pkg.feed(resp, 0, bytes(slot.buf[:n]))
                        return pkg.size(), pkg
                    got = await _take(resp, slot, url, 0, length, progress, checkpoint, seen,
                                      n)
                    return got, None
                got = await _take(resp, slot, url, offset, length, progress, checkpoint, seen)
                return got, None
            except http.HTTPError as e:
                e.in_body = True  # after the answer's head: libfota2 reports a cut body as 4
                raise
            finally:
                await resp.aclose()
        except http.HTTPError as e:
            attempt += 1
            if e.code not in _RETRYABLE or attempt > retries:
                if pkg is not None:
                    pkg.abort()
                raise
            if pkg is not None:
                offset = pkg.resume_offset()
                validator = pkg.validator
            else:
                offset = slot.drop_partial()
                validator = seen
            log.warn("fota", "download interrupted (%s): retry %d at %d" % (e, attempt, offset))


async def _sniff(resp, slot, offset):
    # Read up to _SNIFF bytes of a body that starts at byte 0 into the sector buffer, without
    # counting them as written yet; returns how many arrived.
    if offset:
        log.info("fota", "server sent the whole file (changed, or no Range support): from 0")
    slot.restart()
    mv = slot.space()
    n = 0
    while n < _SNIFF:
        k = await resp.readinto(mv[n:_SNIFF])
        if not k:
            break
        n += k
    return n


# mpfota.package.MAGIC (a test checks they agree): a raw image need not load the package parser.
_PACKAGE_MAGIC = b"MPFP"
# A format-2 delta patch (mpfota.deltastream.MAGIC + VERSION): applied as it streams.
_DELTA_MAGIC = b"MPFD\x02"
_DELTA = object()


async def _delta(slot, url, version, switch, retries, timeout_ms, progress, checkpoint,
                 request):
    # The body is a streamed delta patch (docs/delta.md): mpfota.deltafetch asks for it again
    # and applies it through the same slot (a power-cut resume record of its own kind leads here
    # too), saving its resume record at most every `checkpoint` output bytes (by default its
    # own interval and time gate).
    from mpfota import deltafetch

    h = await deltafetch.fetch(url, version=version, switch=switch, retries=retries,
                               timeout_ms=timeout_ms, progress=progress, slot=slot,
                               checkpoint=checkpoint, **request)
    return Result(200, h.to_size)


def _is_package(buf, n):
    return n >= 4 and bytes(buf[:4]) == _PACKAGE_MAGIC


async def _take(resp, slot, url, offset, length, progress, checkpoint, validator, sniffed=0):
    # Stream one response into the slot (a 200 from byte 0, after _sniff; a 206 from `offset`);
    # returns the total size of the update. validator: the file's, for the resume records.
    # `sniffed`: bytes of the body already in the sector buffer (read by _sniff, not counted).
    if resp.status == 200:
        total = resp.content_length
    else:
        cr = resp.content_range
        if cr is None or cr[0] != offset:
            raise FotaError(FOTA_ERROR, "206 answer does not start at %d" % offset)
        total = cr[2]
    if length is not None and total is not None and total != length:
        raise FotaError(FOTA_ERROR, "server announces %d bytes, expected %d" % (total, length))
    if total is not None and total > slot.capacity:
        raise FotaError(FOTA_ERROR, "update of %d bytes does not fit the slot (%d)"
                        % (total, slot.capacity))
    if sniffed:
        slot.advance(sniffed)
    limit = total if total is not None else length  # a chunked body announces nothing
    got = await slot.pour(resp, limit, progress, checkpoint or CHECKPOINT,
                          lambda: slot.checkpoint(url, validator, total),
                          0 if checkpoint else CHECKPOINT_MS)
    if limit is not None and got == limit and await resp.readinto(bytearray(1)):
        raise FotaError(FOTA_ERROR, "body longer than announced (%d bytes)" % limit)
    if total is not None and got < total:
        raise http.HTTPError(http.ERR_CLOSE, "connection closed at %d of %d bytes" % (got, total))
    return total if total is not None else got
