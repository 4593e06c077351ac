# Boot confirmation for the application: a thin facade over the journal (mpfota.journal).
#
# The door (mpfota.slot) records the switch in the journal's "core" section. On the next boot
# that slot runs "pending": the application confirms it (confirm(), or auto_confirm() after a
# health check). A reset before that makes the bootloader roll back to the previous slot, and
# status() then reports "rolled_back". A new script set (mpfota.scripts) follows the same
# rules: status() is "pending" while it awaits confirmation, confirm() confirms it too, and
# check_boot() reports its rollback. While anything is pending no update may start: the
# other slot (or the saved script set) is the only known-good one.
import board
from mpfota import journal, log


def _label(part):
    return part.info()[4]


def running_label():
    return _label(board.Partition(board.Partition.RUNNING))


def _core_status(core):
    # The core's part of status(), from the journal's "core" section.
    if core is None:
        return "valid"
    running = running_label()
    if running == core["slot"]:
        return "pending"
    if running == core["from"] and core.get("armed", True):
        # Switched: rolled back only once the boot slot is no longer the new one (between a
        # switch and its reset the boot slot is the new slot, and nothing was rolled back).
        if _label(board.Partition(board.Partition.BOOT)) != core["slot"]:
            return "rolled_back"
    return "valid"


def _scripts(rec):
    # mpfota.scripts, imported only when the journal has a script set to ask about.
    if not rec.get("scripts"):
        return None
    from mpfota import scripts

    return scripts


def status():
    # "valid", "pending" (new image or script set awaiting confirmation) or "rolled_back".
    # "pending" too while the journal does not verify: only a confirmation proves the image.
    rec = journal.load()
    if journal.damaged():
        return "pending"
    s = _core_status(rec.get("core"))
    if s == "valid":
        scripts = _scripts(rec)
        t = scripts.status() if scripts else "valid"
        if t in ("pending", "rolled_back"):
            return t
    return s


def confirm():
    board.Partition.mark_app_valid_cancel_rollback()
    rec = journal.load()
    if rec.get("core") is not None or journal.damaged():
        log.info("fota", "image in", running_label(), "confirmed")
        journal.put("core", None)  # a damaged record is replaced (its scar stays)
    scripts = _scripts(rec)
    if scripts:
        scripts.confirm()


def check_boot():
    # Call once at boot: logs and clears a rollback, returns status() as it was.
    rec = journal.load()
    why = journal.damaged()
    if why:
        log.error("fota", "the update journal does not verify (%s): nothing is deleted; the "
                  "next good update replaces it" % why)
    core = rec.get("core")
    s = status()
    scripts = _scripts(rec)
    if scripts:
        scripts.check_boot()  # logs and clears the script set's own rollback note
    c = _core_status(core)
    if c == "rolled_back":
        log.error("fota", "update to", core["slot"], "was not confirmed: rolled back to",
                  core["from"])
        journal.put("core", None)
    elif c == "valid" and core is not None and \
            _label(board.Partition(board.Partition.BOOT)) != core["slot"]:
        journal.put("core", None)  # a switch the power cut short: set_boot() never happened
    elif c == "pending":
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
