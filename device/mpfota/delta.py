# Apply an mpfota delta patch (docs/delta.md): the running slot is the base, the new image goes
# into the spare slot through the door (mpfota.slot.Slot), then verify (and switch).
#
# The patch is a file on the board's filesystem (the package code stores the verified delta
# section there first): its four streams are read at once, each through its own file handle
# and deflate.DeflateIO. The running slot is only read, so after a power cut the same call
# starts again from the beginning and produces the same bytes.
from micropython import const

from mpfota import log
from mpfota.deltafmt import (HEADER_SIZE, STREAM_NAMES, STREAMS, PatchError,
                             Reader, apply_streams, parse_header)
from mpfota.errors import BASE, FOTA_ERROR, FotaError

PATCH_PATH = "/.mpfota/patch.bin"
_LOG_EVERY = const(131072)
# Read buffers of the varint and diff streams (the extra stream is read straight into the
# writer's sector buffer).
_BUF_CTRL = const(32)
_BUF_RUNS = const(64)
_BUF_DIFF = const(64)


def _fail(msg, reason=None):
    log.error("fota", "delta patch refused:", msg)
    return FotaError(FOTA_ERROR, "delta: " + msg, reason)


def read_header(path=PATCH_PATH, buf=None):
    # The patch's Header (deltafmt.Header); FotaError(-9) when the file is not a sound patch.
    import os

    try:
        size = os.stat(path)[6]
        with open(path, "rb") as f:
            head = buf if buf is not None else bytearray(HEADER_SIZE)
            mv = memoryview(head)[:HEADER_SIZE]
            n = f.readinto(mv)
    except OSError as e:
        raise _fail("cannot read %s: %s" % (path, e))
    try:
        h = parse_header(mv[:n])
    except PatchError as e:
        raise _fail(str(e))
    if size != h.total_size:
        raise _fail("patch file is %d bytes, its header announces %d (truncated or padded)"
                    % (size, h.total_size))
    return h


def _check_body(path, h, mv):
    # CRC-32 of the stream bytes, before anything is written to the spare slot.
    import binascii

    crc = 0
    with open(path, "rb") as f:
        f.seek(HEADER_SIZE)
        while True:
            n = f.readinto(mv)
            if not n:
                break
            crc = binascii.crc32(mv[:n], crc)
    if crc & 0xFFFFFFFF != h.body_crc:
        raise _fail("body CRC mismatch (corrupt patch)")


def _hash_base(part, size, mv):
    # SHA-256 of the first `size` bytes of the running slot.
    import hashlib

    digest = hashlib.sha256()
    bs = part.ioctl(5, 0)
    pos = 0
    while pos < size:
        k = min(len(mv), size - pos)
        part.readblocks(pos // bs, mv[:k], pos % bs)
        digest.update(mv[:k])
        pos += k
    return digest.digest()


def check_base(slot, h):
    # Refuse a patch made for another base than the image in the running slot.
    run = slot.running
    cap = run.ioctl(4, 0) * run.ioctl(5, 0)
    if h.from_size > cap:
        raise _fail("base is %d bytes, larger than the running slot (%d)" % (h.from_size, cap),
                    BASE)
    if h.to_size > slot.capacity:
        raise _fail("result is %d bytes, larger than the spare slot (%d)"
                    % (h.to_size, slot.capacity))
    if _hash_base(run, h.from_size, slot.mv) != h.from_sha256:
        raise _fail("made for another base image: the running slot's first %d bytes do not "
                    "match its base SHA-256" % h.from_size, BASE)


def apply(path=PATCH_PATH, slot=None, version=None, switch=True, progress=None):
    """Rebuild the new core from the running slot and the patch at `path` into the spare slot.

    slot: an mpfota.slot.Slot (opened here when None). Checks, in order: the header, the
    file size, the body CRC, the base SHA-256 (running slot), then applies in one pass and
    calls slot.verify(to_size, sha256=...) (length, digest, read-back, board image check)
    and, when `switch`, slot.switch(version). progress(done, total) is called as bytes are
    produced. Returns the Header. Any failure raises FotaError(-9, cause), logged, with
    nothing switched; a patch that rebuilds the running image raises
    FotaError(errors.ALREADY_RUNNING) with nothing written."""
    if slot is None:
        from mpfota.slot import Slot

        slot = Slot()
    slot.restart()
    h = read_header(path, slot.buf)
    _check_body(path, h, slot.mv)
    check_base(slot, h)
    log.info("fota", "delta: base ok,", h.from_size, "->", h.to_size, "bytes,", h.triples,
             "triples")
    _run(path, h, slot, progress)
    try:
        slot.verify(h.to_size, sha256=_hex(h.to_sha256))
    except FotaError as e:
        log.error("fota", "delta: the rebuilt image is refused:", e.msg)
        raise
    if switch:
        slot.switch(version)
    return h


def _hex(b):
    import binascii

    return binascii.hexlify(b).decode()


def _run(path, h, slot, progress):
    import deflate

    run = slot.running
    bs = run.ioctl(5, 0)

    def read_old(pos, mv):
        run.readblocks(pos // bs, mv, pos % bs)

    marks = [0]

    def report(done, total):
        if done - marks[0] >= _LOG_EVERY or done == total:
            marks[0] = done
            log.info("fota", "delta: wrote", done, "of", total, "bytes")
        if progress:
            progress(done, total)

    files = []
    try:
        readers = []
        sizes = (_BUF_CTRL, _BUF_RUNS, _BUF_DIFF, 1)
        for i in range(STREAMS):
            f = open(path, "rb")
            files.append(f)
            f.seek(h.offset(i))
            wbits, _, raw = h.streams[i]
            s = deflate.DeflateIO(f, deflate.RAW, wbits)
            readers.append(Reader(s, STREAM_NAMES[i], raw, sizes[i]))
        apply_streams(h, readers, read_old, slot, report)
    except PatchError as e:
        raise _fail(str(e))
    except (OSError, EOFError, ValueError) as e:
        # uzlib raises OSError(EINVAL) on bad DEFLATE data and EOFError on a cut stream.
        raise _fail("corrupt stream data or I/O error (%r)" % (e,))
    finally:
        for f in files:
            f.close()
    slot.finish()
