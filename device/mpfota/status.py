# A read-only summary of the board's update state, for people and tools (`mpfota board status`
# prints it for a virtual board; on any board: mpremote exec "from mpfota import status;
# print(status.status())"). It writes nothing.
#
# status() -> dict with:
#   running  label of the slot that booted, e.g. "ota_0"
#   boot     label of the slot the next reset boots
#   core     board.core_version()
#   slots    {label: core version named by the image in that slot, or None}
#   image    confirm.status(): "valid", "pending" (not confirmed yet) or "rolled_back"
#   scripts  {"state": scripts.status(), "installed": version or None, "staged": version or None}
#   records  the journal's sections (mpfota.journal: "dl", "core", "scripts", "min")
#   journal  {"seq": sequence number, "damaged": why it does not verify, or None}
#   files    [[path, size], ...] of every file on the filesystem, sorted by path
import os

import board
from mpfota import confirm, journal, scripts

_DIR = 0x4000


def _label(part):
    return part.info()[4]


def _version(rec):
    return rec.get("version") if rec else None


def files(top="/", fs=None):
    # Stays on the filesystem of `top`, as `find -xdev` does: a folder with another statvfs()
    # is a mount point (the virtual board's /.romN "frozen" modules), not the board's files.
    if fs is None:
        fs = os.statvfs(top)
    out = []
    for entry in os.ilistdir(top):
        path = top.rstrip("/") + "/" + entry[0]
        if not entry[1] & _DIR:
            out.append([path, os.stat(path)[6]])
        elif os.statvfs(path) == fs:
            out += files(path, fs)
    out.sort()
    return out


def status():
    apps = board.Partition.find(board.Partition.TYPE_APP)
    records = journal.load()  # before seq() and damaged(), which describe the last load()
    return {
        "running": _label(board.Partition(board.Partition.RUNNING)),
        "boot": _label(board.Partition(board.Partition.BOOT)),
        "core": board.core_version(),
        "slots": {_label(p): board.image_version(p) for p in apps},
        "image": confirm.status(),
        "scripts": {
            "state": scripts.status(),
            "installed": _version(scripts.installed()),
            "staged": _version(scripts.staged()),
        },
        "records": records,
        "journal": {"seq": journal.seq(), "damaged": journal.damaged()},
        "files": files(),
    }
