# Boot confirmation, ESP-IDF style, with the record that lets the application know where it is.
#
# arm() records the slot being switched to, then sets it as the boot slot. On the next boot that
# slot runs "pending": the application confirms it (confirm(), or auto_confirm() after a health
# check). A reset before that makes the bootloader roll back to the previous slot, and status()
# then reports "rolled_back". While an image is pending no update may start: the other slot
# holds the only known-good image.
# A new script set (mpfota.scripts, from an update package) follows the same rules: status()
# is "pending" while it awaits confirmation, confirm() confirms it too, and check_boot()
# reports its rollback.
import board
from mpfota import log, state

_RECORD = "boot"


def _label(part):
    return part.info()[4]


def running_label():
    return _label(board.Partition(board.Partition.RUNNING))


def arm(part, version=None):
    # The record is written before set_boot() (so a new image always finds it) and marked
    # "armed" after it: a power cut between the two leaves an unarmed record, which status()
    # does not take for a rollback when the old slot boots again.
    rec = {"slot": _label(part), "from": running_label(), "version": version, "armed": False}
    state.save(_RECORD, rec)
    part.set_boot()
    rec["armed"] = True
    state.save(_RECORD, rec)


def status():
    # "valid", "pending" (new image or script set awaiting confirmation) or "rolled_back".
    s = _core_status()
    if s == "valid":
        from mpfota import scripts

        t = scripts.status()
        if t in ("pending", "rolled_back"):
            return t
    return s


def _core_status():
    rec = state.load(_RECORD)
    if rec is None:
        return "valid"
    running = running_label()
    if running == rec["slot"]:
        return "pending"
    if running == rec["from"] and rec.get("armed", True):
        return "rolled_back"
    return "valid"


def confirm():
    from mpfota import scripts

    board.Partition.mark_app_valid_cancel_rollback()
    if state.load(_RECORD) is not None:
        log.info("fota", "image in", running_label(), "confirmed")
    state.clear(_RECORD)
    scripts.confirm()


def check_boot():
    # Call once at boot: logs and clears a rollback, returns status() as it was.
    from mpfota import scripts

    s = status()
    scripts.check_boot()  # logs and clears the script set's own rollback note
    if s == "rolled_back" and _core_status() == "rolled_back":
        rec = state.load(_RECORD)
        log.error("fota", "update to", rec["slot"], "was not confirmed: rolled back to",
                  rec["from"])
        state.clear(_RECORD)
    elif s == "valid" and state.load(_RECORD) is not None:
        state.clear(_RECORD)  # a switch the power cut short: set_boot() never happened
    elif s == "pending":
        log.warn("fota", "running a new image that is not confirmed yet")
    return s


async def server_reachable(url, timeout_ms=10000):
    # A health check: True when `url` answers with any HTTP status.
    from mpfota import http

    try:
        resp = await http.request("HEAD", url, bytearray(512), deadline_ms=timeout_ms)
        resp.close()
        return True
    except http.HTTPError as e:
        log.warn("fota", "health check: server not reachable:", e)
        return False


async def auto_confirm(health_check, timeout_ms=60000):
    # Confirm once health_check() (a coroutine function) returns True within timeout_ms;
    # otherwise reset, which rolls back. Returns True when confirmed.
    import asyncio

    if status() != "pending":
        return True
    try:
        healthy = await asyncio.wait_for_ms(health_check(), timeout_ms)
    except Exception as e:  # a failing check counts as unhealthy
        log.error("fota", "health check failed:", repr(e))
        healthy = False
    if healthy:
        confirm()
        return True
    log.error("fota", "new image unhealthy: resetting to roll back")
    board.reset()
    return False
