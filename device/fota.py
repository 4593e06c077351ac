# The LuatOS C `fota` module's API, on mpfota's slot writer.
#
#   fota.init([storge_location, len, param1, param2])  -> bool
#   fota.wait()                                        -> True
#   fota.run(buff[, offset, len])                      -> ok, isDone, status
#   fota.isDone()                                      -> ok, done
#   fota.finish(is_ok)                                 -> bool
#   fota.file(path)                                    -> ok, isDone, status
#
# Differences from LuatOS, for safety: `len` (the update's total size) lets run() know the last
# block; without it the stream ends at finish(True). finish(True) verifies the length, MD5 and
# SHA-256 (when given to init), reads the slot back and checks it is a bootable image before the
# boot slot is switched. storge_location and the SPI parameters are accepted and ignored: the
# update always goes to the spare core slot.
from mpfota import log
from mpfota.ota import Update
from mpfota.writer import FotaError

_update = None
_length = None
_digests = (None, None)
_state = 0  # 0 idle, 1 receiving, 2 verified, -1 failed


def init(storge_location=None, len=0, param1=None, param2=None, md5=None, sha256=None):
    global _update, _length, _digests, _state
    try:
        _update = Update()
    except (FotaError, OSError) as e:
        log.error("fota", "init failed:", e)
        _update, _state = None, -1
        return False
    _length = len or None
    _digests = (md5, sha256)
    _state = 1
    return True


def wait():
    return True


def _verify():
    global _state
    try:
        _update.verify(_length, _digests[0], _digests[1])
        _state = 2
    except (FotaError, OSError) as e:
        log.error("fota", "verification failed:", e)
        _state = -1


def run(buff, offset=0, length=None):
    global _state
    if _state != 1:
        return False, True, -1
    data = memoryview(buff)[offset:] if length is None else memoryview(buff)[offset:offset + length]
    try:
        _update.writer.write(data)
    except (FotaError, OSError) as e:
        log.error("fota", "write failed:", e)
        _state = -1
        return False, True, -1
    if _length is not None and _update.writer.written >= _length:
        _verify()
        return _state == 2, True, 0 if _state == 2 else -1
    return True, False, _update.writer.written


def isDone():
    if _state == 2:
        return True, True
    if _state == -1:
        return False, True
    return True, False


def finish(is_ok):
    global _update, _state
    if not is_ok:
        if _state in (1, 2) and _update is not None:
            log.warn("fota", "update aborted")
        ok = False
    else:
        if _state == 1:
            _verify()
        ok = _state == 2
        if ok:
            try:
                _update.switch()
            except (FotaError, OSError) as e:
                log.error("fota", "switch failed:", e)
                ok = False
    _update = None
    _state = 0
    return ok


def file(path):
    try:
        f = open(path, "rb")
    except OSError:
        return False, False, 0
    import os

    size = os.stat(path)[6]
    if not init(len=size):
        f.close()
        return False, True, -1
    buf = bytearray(4096)
    with f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            ok, done, r = run(buf, 0, n)
            if not ok or done:
                break
    ok, done = isDone()
    return finish(ok and done), True, 0 if ok and done else -1
