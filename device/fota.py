# The LuatOS C `fota` module (luat/modules/luat_lib_fota.c) on mpfota's spare slot (the door:
# mpfota.slot).
#
#   fota.init([storge_location, len, param1, param2])  -> bool   (len: the storage capacity)
#   fota.wait()                                        -> bool
#   fota.run(buff[, offset, len])                      -> ok, isDone, result
#   fota.isDone()                                      -> ok, isDone
#   fota.finish(is_ok)                                 -> bool
#   fota.file(path)                                    -> ok, isDone, result
#
# The return values are luat_lib_fota.c's mapping of its port's result r (1 more data wanted,
# 0 complete and verified, -1 error): r > 0 -> (True, False, r), r == 0 -> (True, True, 0),
# r < 0 -> (False, True, r). file() ends the flow itself (done + end(1)): after it succeeded
# the boot slot is switched, isDone() gives (True, True) and finish(True) gives True.
#
# Where mpfota differs (docs/porting.md): storge_location, param1 and param2 are accepted and
# ignored (the update always goes to the spare core slot); `len` only lowers the slot's capacity.
# A LuatOS port learns the end of the stream from its package header; mpfota learns it from
# `size=` (an mpfota keyword, with md5= and sha256=), else from the first isDone() or finish(True)
# after the last block, which verifies what was written. Nothing is switched unless the length,
# the digests given, a read-back of the slot and the board's image check all pass.
from micropython import const
from mpfota import log
from mpfota.errors import FotaError

_IDLE = const(0)
_RECEIVING = const(1)
_VERIFIED = const(2)
_SWITCHED = const(3)
_FAILED = const(-1)

_MORE = const(1)  # the port's "more data wanted"
_ERROR = const(-1)

_slot = None
_state = _IDLE
_limit = 0  # bytes the update may take: the slot, or init's smaller len
_size = None  # the update's size, when the app gave it
_digests = (None, None)


def init(storge_location=None, len=0, param1=None, param2=None, size=None, md5=None,
         sha256=None):
    # A new flow; False (with the cause logged) when the spare slot cannot take an update now.
    global _slot, _state, _limit, _size, _digests
    from mpfota.slot import Slot

    _slot = None
    try:
        slot = Slot()
    except (FotaError, OSError) as e:
        log.error("fota", "init failed:", e)
        _state = _FAILED
        return False
    cap = slot.capacity
    if storge_location is not None or param1 is not None:
        log.info("fota", "storage location ignored: the update goes to the spare core slot")
    if len and len > cap:
        log.info("fota", "storage of %d bytes asked, the spare slot holds %d" % (len, cap))
    _slot, _state = slot, _RECEIVING
    _limit = min(len, cap) if len and len > 0 else cap
    _size, _digests = size, (md5, sha256)
    return True


def wait():
    # luat_fota_wait_ready(): the slot is written synchronously, so it is always ready.
    return True


def _fail(*why):
    global _state
    log.error("fota", *why)
    _state = _FAILED


def _verify():
    # The end of the stream: length, digests, read-back and the board's image check.
    global _state
    try:
        _slot.verify(_size, _digests[0], _digests[1])
    except (FotaError, OSError) as e:
        _fail("verification failed:", e)
        return
    _state = _VERIFIED


def _switch():
    # The slot's buffer is let go once switched: nothing more can be written in this flow.
    global _slot, _state
    try:
        _slot.switch()
    except (FotaError, OSError) as e:
        _fail("switch failed:", e)
        return
    _slot, _state = None, _SWITCHED


def _port_result():
    # The port's result r for the state the flow is in.
    if _state in (_VERIFIED, _SWITCHED):
        return 0
    if _state == _RECEIVING:
        return _MORE
    return _ERROR


def _triple(r):
    # luat_lib_fota.c's return values of run() and file().
    if r > 0:
        return True, False, r
    if r == 0:
        return True, True, 0
    return False, True, r


def _take(mv):
    # Append mv to the slot; False (flow failed) when it does not fit.
    if _slot.written + len(mv) > _limit:
        _fail("update larger than the storage (%d bytes)" % _limit)
        return False
    try:
        _slot.write(mv)
    except (FotaError, OSError) as e:
        _fail("write failed:", e)
        return False
    return True


def run(buff, offset=0, len=None):
    # Write one block; with size= known, the block that completes it also verifies it.
    if _state != _RECEIVING:
        log.error("fota", "run() outside a flow: call init() first")
        return _triple(_ERROR)
    mv = memoryview(buff)
    mv = mv[offset:] if len is None else mv[offset:offset + len]
    if _take(mv) and _size is not None and _slot.written >= _size:
        _verify()
    return _triple(_port_result())


def isDone():
    # While receiving: (True, False) when size= says more is due, else the stream has ended
    # and is verified now. A flow never stays "in progress" without more data coming, so a loop
    # polling isDone() ends.
    if _state == _RECEIVING and (_size is None or _slot.written >= _size):
        _verify()
    return _triple(_port_result())[:2]


def finish(is_ok):
    # finish(True): verify if needed, switch; True once the boot slot is switched (also when
    # file() already did). finish(False): abandon the flow; False only when a switch already
    # happened (it is not undone: the next reset runs the new image, pending confirmation).
    global _slot, _state
    if is_ok:
        if _state == _RECEIVING:
            _verify()
        if _state == _VERIFIED:
            _switch()
        return _state == _SWITCHED
    if _state == _SWITCHED:
        log.warn("fota", "finish(false) after the switch: the new image boots at the next reset")
        return False
    if _state == _RECEIVING:
        log.warn("fota", "update abandoned: nothing switched")
    _slot, _state = None, _IDLE
    return True


def _pour(f):
    # The file straight into the slot's sector buffer (no second buffer, no copy).
    while _state == _RECEIVING:
        space = _slot.space()
        room = _limit - _slot.written
        n = f.readinto(space if room >= len(space) else space[:room + 1])
        if not n:
            return
        if n > room:
            _fail("update larger than the storage (%d bytes)" % _limit)
            return
        try:
            _slot.advance(n)
        except (FotaError, OSError) as e:
            _fail("write failed:", e)


def file(path):
    # The whole update from a file, then done + end(1), as luat_lib_fota.c: (True, True, 0) when
    # the boot slot is switched. Without a flow open (no init(), or one already ended), opens one.
    try:
        f = open(path, "rb")
    except OSError as e:
        log.error("fota", "no such file for FOTA", path, e)
        return False, False, 0
    with f:
        if _state != _RECEIVING and not init():
            return _triple(_ERROR)
        _pour(f)
    if _state == _RECEIVING:
        _verify()
    if _state == _VERIFIED:
        _switch()
    return _triple(_port_result())
