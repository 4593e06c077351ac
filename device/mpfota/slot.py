# The one door to the spare core slot. Every route that writes a core image (a raw download, a
# package's core section, a delta, the fota module, Aliyun) opens a Slot, feeds it bytes,
# verifies and switches; nothing else touches the spare slot, its sector buffer or the switch
# record in the journal.
#
#   s = Slot()                        # refuses while the running image or scripts are unconfirmed
#   n = await stream.readinto(s.space()); s.advance(n)    # or s.write(chunk), or s.pour(stream)
#   s.checkpoint(key, validator, total)                    # resume point (journal "dl")
#   s.verify(length, md5, sha256)     # one read of the slot: read-back digest + image check
#   s.switch(version)                 # journal "core", then set_boot()
#
# Bytes land in one 4 KiB sector buffer; every full sector is erased and programmed in one
# writeblocks() call. SHA-256 is computed on the way, and MD5 (what LuatOS platforms give) when
# there is one to check. A checkpoint keeps the CRC-32 of the prefix in flash, a plain integer
# computed on the way once a checkpoint is likely (caught up from flash first), so a resume can
# check that the prefix is still what was written. Before the first sector is written, the image's identity
# is compared with the running image's: the same image is refused (ALREADY_RUNNING) with
# nothing written, so a board never reinstalls what it runs.
#
# The sector buffer is taken first, when this module is imported and before its own imports:
# later, imports leave the heap in small holes and a 4 KiB block would need fresh heap
# (docs/engine.md, "The sector buffer"). Every Slot of the process shares it: only one
# update writes the spare slot at a time.
_BUF = bytearray(4096)

import binascii
import hashlib
from time import ticks_diff, ticks_ms

from micropython import const

import board
from mpfota import journal, log
from mpfota.errors import ALREADY_RUNNING, DIGEST, FOTA_ERROR, IMAGE, LENGTH, SAME, FotaError

SECTOR = const(4096)
# By default, the least time between two resume records (each a journal write): on a fast link
# a write costs more than fetching a second's worth of bytes again (download and deltafetch).
CHECKPOINT_MS = const(1000)
_TENTHS = const(10)  # progress is logged each time another tenth has arrived

reads = 0  # full reads of the spare slot after a write, this process (the bench reports it)


def _hex(digest):
    return binascii.hexlify(digest).decode()


def _label(part):
    return part.info()[4]


def _switch_verifies(check, part, n):
    # The board's switch verifies all n bytes in flash (ESP32's set_boot() and the SHA-256 an
    # ESP-IDF image carries): a read-back here would be a second full read of the slot.
    f = getattr(check, "switch_verifies", None)
    return f is not None and f(part, n)


def unconfirmed(running=None):
    # What is still awaiting confirmation ("image" or "script set"), or None; from the journal.
    # A journal that does not verify cannot say the running image was confirmed.
    rec = journal.load()
    if journal.damaged():
        return "image (the update journal does not verify)"
    core = rec.get("core")
    if core and core.get("slot") == (running or _label(board.Partition(board.Partition.RUNNING))):
        return "image"
    if (rec.get("scripts") or {}).get("state") in ("swapping", "pending"):
        return "script set"
    return None


class Slot:
    # md5: compute the MD5 of the bytes (only worth it when verify() will get one to check;
    # hash_md5 may be turned on before restart(), and verify() refuses an MD5 it cannot check).
    def __init__(self, buf=None, md5=True):
        self.running, self.spare = board.ota_slots()
        what = unconfirmed(_label(self.running))
        if what:
            raise FotaError(FOTA_ERROR, "the running %s is not confirmed yet; an update now "
                            "would overwrite the only known-good one" % what)
        self.label = _label(self.spare)
        self._bs = self.spare.ioctl(5, 0)
        self.capacity = self.spare.ioctl(4, 0) * self._bs
        self.buf = buf if buf is not None else _BUF
        self.hash_md5 = md5
        if len(self.buf) != SECTOR:
            raise ValueError("the sector buffer must be 4096 bytes")
        self.mv = memoryview(self.buf)
        self.flushed = 0
        self.md5 = self.sha256 = None
        self.restart()

    # --- taking bytes --------------------------------------------------------------------------

    def restart(self):
        # Start again at offset 0 (nothing is erased until a sector is full). The digests are
        # made anew only once bytes went into them: made again mid-download, after the HTTP
        # response's objects, they would stay as islands in the heap the response leaves.
        if self.flushed:
            self.md5 = self.sha256 = None
        if self.sha256 is None:
            self.sha256 = hashlib.sha256()
        if self.md5 is None and self.hash_md5:
            self.md5 = hashlib.md5()
        self.flushed = 0  # bytes programmed into flash (a multiple of SECTOR until finish)
        self.fill = 0  # bytes waiting in the sector buffer
        self.crc = 0  # CRC-32 of the first crc_at bytes in flash
        self.crc_at = 0
        # The function keeping the CRC up to date on the way (else it is brought up at
        # checkpoints, from flash): None until then.
        self.crc_fn = None
        self.verified = False

    @property
    def written(self):
        return self.flushed + self.fill

    def space(self):
        # The free part of the sector buffer, for readinto(); call advance(n) afterwards. Most
        # reads fill a whole sector: the buffer itself then, no slice.
        return self.mv[self.fill:] if self.fill else self.mv

    def advance(self, n):
        if self.flushed + self.fill + n > self.capacity:
            raise FotaError(FOTA_ERROR, "update larger than the slot (%d bytes)" % self.capacity,
                            LENGTH)
        self.fill += n
        if self.fill == SECTOR:
            self._flush()

    def write(self, data):
        # Copy bytes in, for callers that hold their own chunk (fota.run, the delta applier).
        mv = memoryview(data)
        pos = 0
        end = len(mv)
        while pos < end:
            k = min(SECTOR - self.fill, end - pos)
            self.mv[self.fill:self.fill + k] = mv[pos:pos + k]
            pos += k
            self.advance(k)
        return pos

    async def pour(self, stream, limit=None, progress=None, every=0, on_checkpoint=None,
                   every_ms=0):
        # Read `stream` (await readinto(mv, n): at most n bytes into the start of mv) into the
        # slot until it ends or `limit` bytes are written; on_checkpoint() once `every` bytes
        # were flushed and `every_ms` passed since the last one; progress(written, limit) as
        # bytes arrive, and a log line every 10 %. Returns the bytes written in all. Per read:
        # no allocation but the stream's own.
        saved = self.flushed
        start = saved_at = ticks_ms()
        if every and not every_ms:
            self._crc_on()  # checkpoints are certain
        end = self.capacity + 1 if limit is None else limit  # a byte too many: advance() refuses
        mark = self._tenth(limit) if limit else end + 1  # when the next log line is due
        while True:
            got = self.flushed + self.fill
            n = end - got
            if n <= 0:
                break
            if n > SECTOR - self.fill:
                n = SECTOR - self.fill
            n = await stream.readinto(self.space(), n)
            if not n:
                break
            self.advance(n)
            got += n
            if every and self.flushed - saved >= every:
                now = ticks_ms()
                if not every_ms or ticks_diff(now, saved_at) >= every_ms:
                    on_checkpoint()
                    saved = self.flushed
                    saved_at = ticks_ms()
                elif self.crc_fn is None and not self.fill and (
                        not limit or ticks_diff(now, start) * (limit // self.flushed) * 2
                        >= every_ms):
                    # Half the time gate projected: a checkpoint is likely, so the CRC goes
                    # on the way now rather than read back later from flash.
                    self._crc_on()
            if progress:
                progress(got, limit)
            if got >= mark:
                log.info("fota", "received %d%% (%d of %d bytes)"
                         % (got * _TENTHS // limit * 10, got, limit))
                mark = self._tenth(limit)
        return self.written

    def _tenth(self, limit):
        # The byte count at which the next tenth of `limit` is reached.
        return -(-(self.written * _TENTHS // limit + 1) * limit // _TENTHS)

    def _flush(self):
        data = self.mv if self.fill == SECTOR else self.mv[:self.fill]
        if self.flushed == 0:
            self._refuse_same(data)
        self.sha256.update(data)
        if self.md5 is not None:
            self.md5.update(data)
        if self.crc_fn is not None:
            self.crc = self.crc_fn(data, self.crc)
            self.crc_at += self.fill
        # writeblocks without offset erases the sector first (esp32.Partition semantics).
        self.spare.writeblocks(self.flushed // self._bs, data)
        self.flushed += self.fill
        self.fill = 0

    def _refuse_same(self, head):
        # The same-image guard: runs on the first sector, before anything is written.
        new = board.image_id(head)
        if new is not None and new == board.image_id_running():
            log.info("fota", "already running this image (%s): nothing written" % new[0])
            raise FotaError(ALREADY_RUNNING, "already running this image", SAME)

    def drop_partial(self):
        # Forget the bytes waiting in the sector buffer (never hashed, never written); returns
        # the offset to fetch again from.
        self.fill = 0
        return self.flushed

    def finish(self):
        if self.fill:
            self._flush()

    # --- resuming ------------------------------------------------------------------------------

    def checkpoint(self, key, validator=None, length=None):
        # Save the resume point of the bytes flushed so far (journal section "dl").
        self._crc_flushed()
        journal.put("dl", {"key": key, "slot": self.label, "offset": self.flushed,
                           "crc": self.crc, "validator": validator, "length": length})

    def resume_point(self, key):
        # (offset, validator) to continue the download `key` from, after re-hashing the prefix
        # in flash; (0, None) when there is none or the prefix is not what was written.
        rec = journal.get("dl")
        if not rec or rec.get("key") != key or rec.get("slot") != self.label:
            return 0, None
        if self._resume(rec["offset"], rec["crc"]):
            log.info("fota", "resuming at", rec["offset"])
            return rec["offset"], rec.get("validator")
        log.warn("fota", "saved progress does not match the slot: starting again")
        return 0, None

    def saved_validator(self, key):
        rec = journal.get("dl")
        return rec.get("validator") if rec and rec.get("key") == key else None

    def forget(self):
        journal.put("dl", None)

    def _crc_on(self):
        # From now on the CRC is computed on the way (caught up first), by mpfota.crc32 (~2.5
        # times binascii.crc32, the same values) given viper and room for its 4 KiB table,
        # taken first: without room for it, the module is not loaded either. Only pour() asks
        # (a raw download): the routes with tighter heap budgets (delta, packages) never hold
        # the table, and verify() lets it go.
        if self.crc_fn is None:
            try:
                table = bytearray(SECTOR)
                from mpfota.crc32 import fast

                self.crc_fn = fast(table)
            except (ImportError, SyntaxError, ValueError, MemoryError):
                self.crc_fn = binascii.crc32  # ValueError: an .mpy of another architecture
            self._crc_flushed()

    def _crc_flushed(self):
        # Bring the CRC up to the bytes flushed by reading back what was written since it was
        # last brought up: a download that ends before any checkpoint (a fast link) never pays
        # for it. Reads into the sector buffer, so no bytes may be waiting there.
        if self.crc_at < self.flushed and self.fill:
            raise ValueError("checkpoint with bytes waiting in the sector buffer")
        crc32 = self.crc_fn or binascii.crc32
        while self.crc_at < self.flushed:
            self.spare.readblocks(self.crc_at // self._bs, self.mv)
            self.crc = crc32(self.mv, self.crc)
            self.crc_at += SECTOR

    def _resume(self, offset, crc):
        self.restart()
        if offset % SECTOR or offset > self.capacity:
            return False
        mv = self.mv
        while self.flushed < offset:
            self.spare.readblocks(self.flushed // self._bs, mv)
            if self.md5 is not None:
                self.md5.update(mv)
            self.sha256.update(mv)
            self.crc = binascii.crc32(mv, self.crc)
            self.flushed += SECTOR
        self.crc_at = self.flushed
        if self.crc != crc:
            self.restart()
            return False
        return True

    # --- verifying and switching ---------------------------------------------------------------

    def verify(self, length=None, md5=None, sha256=None):
        # Length and expected digests, then ONE read of the written bytes feeding both the
        # read-back digest and the board's image check (none when the board's switch reads and
        # checks every byte itself: ESP32). Raises FotaError; returns the digests.
        self.finish()
        self.crc_fn = None  # the fast CRC's table, if any, is free for what follows
        n = self.flushed
        if n == 0:
            raise FotaError(FOTA_ERROR, "empty update", LENGTH)
        if length is not None and n != length:
            raise FotaError(FOTA_ERROR, "length %d, expected %d" % (n, length), LENGTH)
        got_md5 = _hex(self.md5.digest()) if self.md5 is not None else None
        got = self.sha256.digest()
        if md5 and got_md5 != md5.lower():
            raise FotaError(FOTA_ERROR, "md5 %s, expected %s" % (got_md5, md5.lower()), DIGEST)
        if sha256 and _hex(got) != sha256.lower():
            raise FotaError(FOTA_ERROR, "sha256 %s, expected %s" % (_hex(got), sha256.lower()),
                            DIGEST)
        check = board.image_check()  # None: the board's switch checks the image itself
        if check is None or not _switch_verifies(check, self.spare, n):
            self._read_back(n, got, check)
        if check is not None and not check.ok(n):
            raise FotaError(FOTA_ERROR, "the update is not a bootable image for this board", IMAGE)
        log.info("fota", "verified", n, "bytes md5", got_md5, "sha256", _hex(got))
        self.verified = True
        return got_md5, _hex(got)

    def _read_back(self, n, got, check):
        # The one full read of the slot: the read-back digest and the board's image check.
        global reads
        back = hashlib.sha256()
        mv = self.mv
        pos = 0
        while pos < n:
            k = min(SECTOR, n - pos)
            self.spare.readblocks(pos // self._bs, mv[:k])
            back.update(mv[:k])
            if check is not None:
                check.update(pos, mv[:k])
            pos += k
        reads += 1
        if back.digest() != got:
            raise FotaError(FOTA_ERROR, "read-back of the slot does not match what was written",
                            DIGEST)

    def image_version(self):
        # The version the image written into the slot names (board.image_version), or None.
        return board.image_version(self.spare)

    def switch(self, version=None):
        # Make the verified slot the boot slot (applied at the next reset). The journal's core
        # record is written before set_boot() (a new image always finds it) and marked armed
        # after it: a cut between the two leaves an unarmed record, never a false rollback.
        if not self.verified:
            raise FotaError(FOTA_ERROR, "refusing to switch to an unverified slot")
        rec = {"slot": self.label, "from": _label(self.running), "version": version,
               "armed": False}
        journal.put("core", rec)
        try:
            self.spare.set_boot()
        except OSError as e:  # ESP-IDF verifies the image here (ESP_ERR_OTA_VALIDATE_FAILED)
            journal.put("core", None)
            raise FotaError(FOTA_ERROR, "the update is not a bootable image for this board "
                            "(set_boot: %s)" % (e,), IMAGE)
        rec["armed"] = True
        journal.put("core", rec)
        log.info("fota", "boot slot is now", self.label, "- reset to apply")
