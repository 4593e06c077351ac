# A streamed delta update (format 2, docs/delta.md): the patch is applied as it arrives over
# HTTP, reading the base from the running slot and writing the new image through the door
# (mpfota.slot), in constant memory, with nothing stored on the filesystem.
#
# A dropped connection continues with a Range request from the first patch byte not yet taken
# (the Applier keeps its place in RAM). At a unit that ends on a sector boundary, at most every
# CHECKPOINT output bytes, the apply state goes into the journal with the door's resume record
# (section "dl": output offset and the CRC of what is in flash, plus the patch offset, the next
# unit, the patch header and the answer's validator); after a power cut the next call
# continues from there, not from byte 0. By default that is at most once every CHECKPOINT_MS
# too (a journal write costs more than applying a second's worth of patch again); an explicit
# `checkpoint` interval is a plain byte interval.
#
# The patch bytes are read straight into the free part of the door's sector buffer and copied
# from there into the Applier's unit buffer (no network buffer of its own), a unit at a time.
from time import ticks_diff, ticks_ms

from micropython import const

from mpfota import http, log
from mpfota.deltastream import Applier, PatchError, apply_stream, take_blocks
from mpfota.errors import BASE, FOTA_ERROR, FotaError
from mpfota.slot import CHECKPOINT_MS, Slot

_RETRYABLE = (http.ERR_CLOSE, http.ERR_RX, http.ERR_TIMEOUT, http.ERR_CONNECT)
CHECKPOINT = const(65536)  # output bytes between resume records, at least (and CHECKPOINT_MS)
_UNIT_MAX = const(4096)  # the generator's default unit budget: the unit buffer made up front


class _Sink:
    # The Applier's sink: output into the door's sector buffer, checkpoints into the door's
    # resume record (at most one per `every` bytes of output and, when every_ms, at most one
    # per every_ms milliseconds: each is a journal write).
    def __init__(self, slot, key, every, every_ms=0):
        self.slot = slot
        self.every = every
        self.every_ms = every_ms
        self.saved_ms = ticks_ms()
        self.space = slot.space
        self.advance = slot.advance
        self.key = key
        self.ap = None  # the Applier, for its patch header
        self.header = None  # hex of the patch header when resumed (kept with every record)
        self.validator = None
        self.saved = 0

    def check(self, h):
        # Sizes the slots cannot hold are refused from the header, before the spare slot is
        # erased (as a raw image larger than the slot is).
        run = self.slot.running
        cap = run.ioctl(4, 0) * run.ioctl(5, 0)
        if h.from_size > cap:
            raise PatchError("base is %d bytes, larger than the running slot (%d)"
                             % (h.from_size, cap), True)
        if h.to_size > self.slot.capacity:
            raise PatchError("result is %d bytes, larger than the spare slot (%d)"
                             % (h.to_size, self.slot.capacity))

    def checkpoint(self, state):
        patch_at, out_at, unit = state
        if out_at - self.saved < self.every:
            return
        if self.every_ms and ticks_diff(ticks_ms(), self.saved_ms) < self.every_ms:
            return
        if self.slot.flushed != out_at:  # the door flushes every full sector
            raise FotaError(FOTA_ERROR, "delta: checkpoint at %d, slot at %d"
                            % (out_at, self.slot.flushed))
        self.saved = out_at
        self.saved_ms = ticks_ms()
        header = self.header
        if header is None:
            # Made anew for every record: kept, made in the middle of the apply, it would be
            # an island in the hole the next unit's decoder needs.
            import binascii

            header = binascii.hexlify(self.ap.header).decode()
        self.slot.checkpoint(self.key, [patch_at, unit, header, self.validator])
        # The record's transient objects lie in the hole the next decoder is about to take:
        # collected now, or that decoder's state could land in the part they left free and
        # its window then find no hole (a journal write costs far more than this).
        import gc

        gc.collect()


def _decoder(src, wbits):
    import deflate

    return deflate.DeflateIO(src, deflate.RAW, wbits)


def applier(slot, key=None, every=1 << 30, every_ms=0, blocks=None):
    # An Applier writing into the door `slot`, its base the running slot; resume records under
    # `key` at most every `every` output bytes and every_ms milliseconds (none by default: a
    # package section); blocks: what take_blocks(_UNIT_MAX, _decoder) gave (taken here when
    # None).
    sink = _Sink(slot, key, every, every_ms)
    sink.ap = Applier(sink, slot.running, _decoder, _UNIT_MAX, blocks)
    return sink.ap


def _fail(msg, reason=None):
    log.error("fota", "delta patch refused:", msg)
    return FotaError(FOTA_ERROR, "delta: " + msg, reason)


def fetch(url, *args, **kw):
    """fetch(url, version=None, switch=True, retries=3, timeout_ms=600000, progress=None,
    slot=None, checkpoint=None, md5=None, sha256=None, size=None, **request)

    Apply the format-2 patch at `url` into the spare slot as it downloads; verify; switch
    when `switch`. `request` goes to mpfota.http.request (headers, server_cert, ...).
    progress(done, total) is called as output is written; the apply state is saved for a
    resume at most every `checkpoint` output bytes (by default CHECKPOINT bytes and at most
    once every CHECKPOINT_MS). md5 / sha256 / size: of the patch file
    (Aliyun's job), checked before anything is switched; a hash cannot be saved, so with them
    a power cut starts the patch again from byte 0. Returns the patch header. A bad
    patch raises FotaError(-9, "delta: <cause>"), logged, with nothing switched; transport
    failures raise http.HTTPError once `retries` reconnections have not helped.

    `await fetch(...)`: fetch is not a coroutine function itself, it returns _fetch's coroutine;
    the Applier's large blocks are taken when it is called, before the coroutine's own frame
    (half a KB) and the door's objects, while the heap's one large hole is whole (2 KiB less
    heap in the bench, docs/delta.md "Memory and speed")."""
    return _fetch(take_blocks(_UNIT_MAX, _decoder), url, *args, **kw)


async def _fetch(blocks, url, version=None, switch=True, retries=3, timeout_ms=600000,
                 progress=None, slot=None, checkpoint=None, md5=None, sha256=None, size=None,
                 **request):
    import binascii
    import time

    slot = slot if slot is not None else Slot(md5=False)  # verify() checks SHA-256 only
    hashed = _Hashed(md5, sha256)
    # No resume records with patch digests: they could not carry the hashes.
    every = 1 << 30 if hashed.on else checkpoint or CHECKPOINT
    every_ms = 0 if checkpoint else CHECKPOINT_MS
    ap = applier(slot, url, every, every_ms, blocks)
    blocks = None  # the Applier's now (a new Applier below takes its own)
    if hashed.on:
        slot.forget()
        slot.restart()
    else:
        _resume(ap, slot, ap.sink, url)
    ap.sink.saved = slot.flushed
    hbuf = bytearray(512)
    deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
    attempt = 0
    try:
        while True:
            remaining = time.ticks_diff(deadline, time.ticks_ms())
            if remaining <= 0:
                raise http.HTTPError(http.ERR_TIMEOUT, "delta download deadline passed")
            at = ap.patch_at
            try:
                resp = await http.request("GET", url, hbuf, range_start=at or None,
                                          if_range=ap.sink.validator if at else None,
                                          deadline_ms=remaining, **request)
                try:
                    if resp.status not in (200, 206):
                        raise _fail("HTTP %d for the patch" % resp.status)
                    got = resp.etag or resp.last_modified
                    if resp.status == 200 and at:
                        if got is not None and got == ap.sink.validator:
                            log.info("fota", "delta: the server ignored Range: skipping", at)
                            await _skip(resp, slot, at)
                        else:
                            log.warn("fota", "delta: the patch changed on the server: from 0")
                            hashed = _Hashed(md5, sha256)
                            ap = applier(slot, url, every, every_ms)
                            slot.forget()
                            slot.restart()
                    if ap.sink.validator is None:
                        ap.sink.validator = got
                    await apply_stream(ap, hashed.wrap(resp), progress)
                finally:
                    await resp.aclose()
                break
            except http.HTTPError as e:
                attempt += 1
                if e.code not in _RETRYABLE or attempt > retries:
                    raise
                log.warn("fota", "delta download interrupted (%s): retry %d at %d"
                         % (e, attempt, ap.patch_at))
        h = ap.h
        if size is not None and ap.patch_at != size:
            raise _fail("patch of %d bytes, expected %d" % (ap.patch_at, size))
        hashed.check()
        slot.verify(h.to_size, sha256=binascii.hexlify(h.to_sha256).decode())
    except PatchError as e:
        slot.forget()
        raise _fail(str(e), BASE if e.wrong_base else None)
    except FotaError:
        slot.forget()
        raise
    slot.forget()
    if switch:
        slot.switch(version)
    return ap.h


async def _skip(resp, slot, n):
    # Read past the first n bytes of a body (a server that answers a Range request with all),
    # into the free part of the door's sector buffer.
    mv = slot.space()
    while n:
        k = await resp.readinto(mv, min(n, len(mv)))
        if not k:
            raise http.HTTPError(http.ERR_CLOSE, "body ended %d bytes before the resume point"
                                 % n)
        n -= k


def _resume(ap, slot, sink, url):
    # Continue from the journal's resume record when it is this patch's and the flash still
    # holds what it says (the door re-hashes that prefix); otherwise start from byte 0.
    import binascii

    offset, saved = slot.resume_point(url)
    if not offset or not isinstance(saved, list) or len(saved) != 4:
        slot.restart()
        return
    patch_at, unit, header, validator = saved
    try:
        ap.resume(binascii.unhexlify(header), (patch_at, offset, unit))
    except (PatchError, ValueError, TypeError) as e:
        log.warn("fota", "delta resume record unusable (%s): from byte 0" % (e,))
        slot.restart()
        return
    sink.header = header
    sink.validator = validator
    log.info("fota", "delta: resuming at patch byte", patch_at, "output", offset)


class _Hashed:
    # MD5 / SHA-256 of the patch bytes as they arrive (Range continuations keep the order).
    def __init__(self, md5, sha256):
        import hashlib

        self.want = (md5, sha256)
        self.on = bool(md5 or sha256)
        self.md5 = hashlib.md5() if md5 else None
        self.sha = hashlib.sha256() if sha256 else None
        self.resp = None

    def wrap(self, resp):
        if not self.on:
            return resp
        self.resp = resp
        return self

    async def readinto(self, mv, n=None):
        n = await self.resp.readinto(mv, n)
        if n:
            if self.md5 is not None:
                self.md5.update(mv[:n])
            if self.sha is not None:
                self.sha.update(mv[:n])
        return n

    def check(self):
        import binascii

        for name, h, want in (("md5", self.md5, self.want[0]), ("sha256", self.sha, self.want[1])):
            if h is not None:
                got = binascii.hexlify(h.digest()).decode()
                if got != want.lower():
                    raise _fail("patch file %s %s, expected %s" % (name, got, want))
