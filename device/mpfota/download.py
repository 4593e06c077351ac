# Download an update over HTTP straight into the spare slot, resumable, then verify and switch.
#
# The HTTP client reads into the door's sector buffer (mpfota.slot: no copy, no per-chunk
# buffers). Every CHECKPOINT bytes (256 KiB: a few seconds of a slow link to fetch again) the
# offset and the CRC of what is in flash go into the journal; after a dropped connection, or a
# power cut and a new call, the download continues from there with a Range request (If-Range
# with the ETag or Last-Modified seen first, so a changed file starts over).
#
# The same URL may serve an mpfota update package (docs/package-format.md) instead of a raw core
# image: the first 16 bytes of a body that starts at byte 0 tell (package magic "MPFP"). A
# package goes to mpfota.package.Installer, which writes its core section through the same
# Slot and buffer and stages its script set. A dropped connection resumes inside the package
# (Range from the installer's resume offset); after a power cut a package starts from byte 0.
# A format-2 delta patch ("MPFD" version 2) goes to mpfota.deltafetch, applied as it streams.
from micropython import const

from mpfota import http, log
from mpfota.errors import ALREADY_RUNNING, FOTA_ERROR, FotaError
from mpfota.slot import Slot

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
                progress=None, version=None, switch=True, checkpoint=CHECKPOINT,
                range_always=False, method="GET", package=None, **request):
    """Download `url` into the spare slot; verify; switch the boot slot when `switch`.

    When the body is an update package it is installed instead (mpfota.package; `package`:
    keyword arguments for its Installer, e.g. {"project": PROJECT, "version": VERSION, "key":
    PEM}); md5 / sha256 / length then apply to the whole package file, a bad package raises
    mpfota.package.PackageError (a FotaError with a `reason`), and Result.manifest is its
    manifest.

    `request` goes to mpfota.http.request (headers, body, server_cert, client_cert,
    client_key, client_password, follow_redirects, ...). Progress is saved every `checkpoint`
    bytes (a multiple of 4096) for resuming; `range_always` sends a Range header even from 0.
    progress(done, total) is called as bytes arrive (total None when unknown); the log shows
    every 10 %.
    Returns a Result. A non-2xx answer is not an error (Result.status says what it was);
    transport failures raise http.HTTPError and bad updates raise FotaError (code -9); both
    are logged with their cause, and nothing is switched. The image the board already runs
    raises FotaError(errors.ALREADY_RUNNING) after its first bytes, with nothing written."""
    try:
        slot = Slot()
        if isinstance(slot.saved_validator(url), list):  # a streamed delta, cut by a power loss
            return await _delta(slot, url, version, switch, retries, timeout_ms, progress,
                                request)
        pkg = _Package(slot, package, progress, md5, sha256)
        got = await _receive(slot, method, url, length, timeout_ms, retries, progress,
                             checkpoint, range_always, request, pkg)
        if got is _DELTA:
            return await _delta(slot, url, version, switch, retries, timeout_ms, progress,
                                request)
        if isinstance(got, Result):
            return got
        if pkg.inst is not None:
            return pkg.finish(length, switch)
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
                   range_always, request, pkg):
    # The body into the slot (or into pkg's installer), resuming after drops; returns its size,
    # or the Result of a non-2xx answer.
    import time

    hbuf = bytearray(1024)
    deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
    offset, validator = slot.resume_point(url)
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
                if pkg.inst is not None:
                    await pkg.feed(resp, 0 if resp.status == 200 else offset)
                    return 0
                if resp.status == 200 or offset == 0:
                    n = await _sniff(resp, slot, offset)
                    if n >= 5 and bytes(slot.buf[:5]) == _DELTA_MAGIC:
                        return _DELTA
                    if _is_package(slot.buf, n):
                        pkg.start(resp.etag or resp.last_modified)
                        await pkg.feed(resp, 0, bytes(slot.buf[:n]))
                        return 0
                    return await _take(resp, slot, url, 0, length, progress, checkpoint, n)
                return await _take(resp, slot, url, offset, length, progress, checkpoint)
            except http.HTTPError as e:
                e.in_body = True  # after the answer's head: libfota2 reports a cut body as 4
                raise
            finally:
                await resp.aclose()
        except http.HTTPError as e:
            attempt += 1
            if e.code not in _RETRYABLE or attempt > retries:
                pkg.abort()
                raise
            if pkg.inst is not None:
                offset = pkg.resume_offset()
                validator = pkg.validator
            else:
                offset = slot.drop_partial()
                validator = slot.saved_validator(url)
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


async def _delta(slot, url, version, switch, retries, timeout_ms, progress, request):
    # The body is a streamed delta patch (docs/delta.md): mpfota.deltafetch asks for it again
    # and applies it through the same slot (a power-cut resume record of its own kind leads here
    # too).
    from mpfota import deltafetch

    h = await deltafetch.fetch(url, version=version, switch=switch, retries=retries,
                               timeout_ms=timeout_ms, progress=progress, slot=slot, **request)
    return Result(200, h.to_size)


def _is_package(buf, n):
    return n >= 4 and bytes(buf[:4]) == _PACKAGE_MAGIC


class _Package:
    # The update package found in the body, if any: its installer, the first answer's
    # validator, and the whole-file digests when the caller asked for md5 / sha256 (then a
    # retry starts again from byte 0, so that every byte is hashed in one pass).
    def __init__(self, slot, kw, progress, md5, sha256):
        self.slot = slot
        self.kw = kw or {}
        self.progress = progress
        self.want = (md5, sha256)
        self.inst = None
        self.hashed = None
        self.validator = None

    def start(self, validator):
        from mpfota import package

        self.slot.forget()  # power-cut resume does not apply to packages
        self.inst = package.Installer(slot=self.slot, progress=self.progress, **self.kw)
        self.validator = validator

    async def feed(self, resp, offset, head=None):
        src = resp
        if self.want[0] or self.want[1]:
            self.hashed = src = _Hashed(resp, head or b"", self.want)
        if head is None:
            await self.inst.feed(src, offset)
            return
        if len(head) < _SNIFF:
            from mpfota.package import TRUNCATED, PackageError

            raise PackageError(TRUNCATED, "package of %d bytes" % len(head))
        await self.inst.feed(src, 0, header=head)

    def resume_offset(self):
        return 0 if self.hashed is not None else self.inst.resume_offset()

    def abort(self):
        if self.inst is not None:
            self.inst.abort()

    def finish(self, length, switch):
        m = self.inst.manifest
        try:
            if length is not None and m.size != length:
                raise FotaError(FOTA_ERROR, "package of %d bytes, expected %d" % (m.size, length))
            if self.hashed is not None:
                self.hashed.check()
        except FotaError:
            self.inst.abort()
            raise
        self.inst.commit(switch)
        r = Result(200, m.size)
        r.manifest = m
        return r


class _Hashed:
    # A response whose body bytes are hashed on the way (the whole package file).
    def __init__(self, resp, head, want):
        import hashlib

        self.resp = resp
        self.want = want
        self.md5 = hashlib.md5(head) if want[0] else None
        self.sha = hashlib.sha256(head) if want[1] else None

    async def readinto(self, mv):
        n = await self.resp.readinto(mv)
        if n:
            if self.md5:
                self.md5.update(mv[:n])
            if self.sha:
                self.sha.update(mv[:n])
        return n

    def check(self):
        import binascii

        for name, h, want in (("md5", self.md5, self.want[0]), ("sha256", self.sha, self.want[1])):
            if h is not None:
                got = binascii.hexlify(h.digest()).decode()
                if got != want.lower():
                    raise FotaError(FOTA_ERROR, "package %s %s, expected %s" % (name, got, want))


async def _take(resp, slot, url, offset, length, progress, checkpoint, sniffed=0):
    # Stream one response into the slot; returns the total size of the update. `sniffed`: bytes
    # of the body already in the sector buffer (read by _sniff, not yet counted).
    if resp.status == 200:
        if offset:
            log.info("fota", "server sent the whole file (changed, or no Range support): from 0")
            slot.restart()
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
    validator = resp.etag or resp.last_modified
    slot.checkpoint(url, validator, total)
    if sniffed:
        slot.advance(sniffed)
    limit = total if total is not None else length  # a chunked body announces nothing
    got = await slot.pour(resp, limit, progress, checkpoint,
                          lambda: slot.checkpoint(url, validator, total))
    if limit is not None and got == limit and await resp.readinto(bytearray(1)):
        raise FotaError(FOTA_ERROR, "body longer than announced (%d bytes)" % limit)
    if total is not None and got < total:
        raise http.HTTPError(http.ERR_CLOSE, "connection closed at %d of %d bytes" % (got, total))
    return total if total is not None else got
