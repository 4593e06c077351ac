# A full core update on the virtual board: check at boot, download into the spare slot over
# HTTP, verify, switch, reset; on the new image, confirm and report. `mpfota demo` fills in
# URL and TARGET; on a real board you would write them yourself.
import asyncio
import board
from mpfota import confirm, download, log

URL = "{url}"
TARGET = "{target}"


_quarter = [0]


def progress(done, total):
    # One line every 25 %.
    if total and done * 4 // total > _quarter[0]:
        _quarter[0] = done * 4 // total
        log.info("demo", "downloaded %d of %d bytes" % (done, total))


state = confirm.check_boot()
log.info("demo", "core", board.core_version(), "boot state", state, "reset cause",
         board.reset_cause())
if state == "pending":
    # A real application runs its health check first (see mpfota.confirm.auto_confirm).
    confirm.confirm()
if board.core_version() == TARGET:
    log.info("demo", "running", TARGET, "- update complete")
else:
    result = asyncio.run(download.fetch(URL, progress=progress, version=TARGET))
    if result.status != 200:
        log.error("demo", "no update: HTTP", result.status, result.body)
        raise SystemExit(1)
    log.info("demo", "update written and verified, rebooting")
    board.reset()
