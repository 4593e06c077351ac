# The application's script set: staged beside the live files, swapped in at boot under a
# journal, kept until confirmed, rolled back when a new set resets before it is confirmed.
#
# Live scripts are ordinary files (/main.py, /lib/app.mpy, ...). A package's script section is
# written to /.mpfota/stage/ while the application runs (Stager); commit() records the staged
# set. At the next boot, before main.py, apply_at_boot() (mpfota.bootapply.run) swaps it in:
#
#   staged    -> wipe /.mpfota/prev/; journal "swapping" with the list of old files;
#   swapping  -> move each old live file to /.mpfota/prev/, then each staged file into place;
#   pending   -> the new set runs; confirm() makes it "valid" and deletes the old copies;
#                a boot that finds "pending" (reset before confirm) reverts:
#   reverting -> remove the new files, move the old ones back; "valid" + a rolled_back note.
#
# Every step is a littlefs rename or remove (each atomic) and is idempotent, and the journal
# (section "scripts" of mpfota.journal: CRC, write-then-rename) is written before the steps it
# describes, so a power cut at any instant is finished (or undone) at the next boot before
# main.py runs: main.py sees the whole old set or the whole new set, never a mix.
# Files in the keep list (user data: config, secrets) are never moved, overwritten or removed.
# A set may only put a file where there is nothing, a file a package installed, or a code file
# (.py/.mpy: the application the package updates); a folder, a file on the way to a folder, or
# any other file no package installed is the user's, and the set is refused (blocker()).
import os

from mpfota import journal, log

ROOT = "/"
STAGE = "/.mpfota/stage/"
PREV = "/.mpfota/prev/"
_DIR = 0x4000


def _load():
    rec = journal.get("scripts")
    if not isinstance(rec, dict) or "state" not in rec:
        return {"state": "valid", "cur": None, "keep": []}
    return rec


def _save(rec):
    journal.put("scripts", rec)


def status():
    # "valid", "staged" (waits for the next boot), "pending" (new set running, not confirmed)
    # or "rolled_back" (the last new set was not confirmed and was undone).
    rec = _load()
    s = rec["state"]
    if s in ("swapping", "reverting"):
        return "pending" if s == "swapping" else "valid"
    if s == "valid" and rec.get("rolled_back"):
        return "rolled_back"
    return s


def installed():
    # The running set: {"version", "project", "firmware_name", "files"}, or None before the
    # first package. While a new set is pending, the new one.
    rec = _load()
    if rec["state"] in ("pending", "swapping"):
        return rec["new"]
    return rec.get("cur")


def staged():
    # The set waiting for the next boot, or None.
    rec = _load()
    return rec["new"] if rec["state"] == "staged" else None


# --- small filesystem helpers ------------------------------------------------------------------


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _makedirs(path):
    # Create the parent folders of file `path`.
    parts = path.split("/")[1:-1]
    cur = ""
    for p in parts:
        cur += "/" + p
        try:
            os.mkdir(cur)
        except OSError:
            pass


def _move(src, dst):
    _makedirs(dst)
    os.rename(src, dst)


def _wipe(path):
    # Remove a folder and everything below it (it may not exist).
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for e in entries:
        p = path.rstrip("/") + "/" + e[0]
        if e[1] == _DIR:
            _wipe(p)
        else:
            os.remove(p)
    try:
        os.rmdir(path.rstrip("/"))
    except OSError:
        pass


def _is_dir(path):
    try:
        return os.stat(path)[0] & _DIR != 0
    except OSError:
        return False


def blocker(path, installed_files, keep):
    # Why a new set may not put a file at `path` (None when it may): it would replace a folder,
    # need a folder where a file is, or replace a file that no package installed (user data).
    cur = ""
    for part in path.split("/")[:-1]:
        cur += "/" + part
        if _exists(cur) and not _is_dir(cur):
            return "/%s needs a folder where the board has the file %s" % (path, cur)
    live = ROOT + path
    if not _exists(live) or path in keep or path in installed_files:
        return None
    if _is_dir(live):
        return "/%s is a folder on the board that no package installed" % path
    if path.endswith(".py") or path.endswith(".mpy"):
        return None
    return "/%s is a file on the board that no package installed" % path


# --- staging (while the application runs) ------------------------------------------------------


class Stager:
    # Writes one new script set into /.mpfota/stage/, file by file.
    def __init__(self):
        self.files = []
        self._f = None

    def begin(self, keep=()):
        # `keep`: the new set's keep list (beside the one already recorded).
        rec = _load()
        cur = rec.get("cur")
        self._installed = cur["files"] if cur else []
        self._keep = list(rec.get("keep") or []) + list(keep)
        if rec["state"] == "staged":
            log.warn("fota", "discarding the script set", rec["new"]["version"],
                     "staged before: a new one replaces it")
        self._close()
        discard()
        _makedirs(STAGE + "x")
        self.files = []

    def open(self, path):
        # Raises ValueError (with the reason) when the file would replace something of the user's.
        why = blocker(path, self._installed, self._keep)
        if why:
            raise ValueError(why)
        self._close()
        p = STAGE + path
        _makedirs(p)
        self._f = open(p, "wb")
        self.files.append(path)

    def write(self, data):
        n = self._f.write(data)
        if n is not None and n != len(data):
            raise OSError(28)  # ENOSPC: the file system took less than given

    def close(self):
        self._close()

    def _close(self):
        if self._f is not None:
            f = self._f
            self._f = None
            f.close()

    def abort(self):
        try:
            self._close()
        except OSError:
            pass
        _wipe(STAGE)
        self.files = []


def discard():
    # Forget a staged set (replaced, or its core was refused at the switch) and its files.
    rec = _load()
    if rec["state"] == "staged":
        rec["state"] = "valid"
        del rec["new"]
        _save(rec)
    _wipe(STAGE)


def commit(files, version, project, firmware_name, keep=(), core=None):
    # Record a complete, verified stage as the set to swap in at the next boot. `core`: the core
    # version it needs (a core+script package); a boot on another core discards it.
    rec = _load()
    all_keep = list(rec.get("keep") or [])
    for k in keep:
        if k not in all_keep:
            all_keep.append(k)
    rec.pop("rolled_back", None)
    rec.update({"state": "staged", "keep": all_keep, "core": core,
                "new": {"version": version, "project": project,
                        "firmware_name": firmware_name, "files": list(files)}})
    journal.put("scripts", rec, heal=True)  # sound again: the staged set replaces the damage
    log.info("fota", "script set", version, "staged: applied at the next boot")


# --- at boot -----------------------------------------------------------------------------------


def _settle():
    # littlefs repairs a cross-folder rename that a power cut interrupted on its first write
    # after mounting; until then the file can be missing from both folders. Any write call
    # makes it repair first, even one that then fails: removing a file that does not exist.
    try:
        os.remove("/.mpfota-settle")
    except OSError:
        pass


def apply_at_boot():
    # Finish whatever the journal says. Returns the status afterwards. Call before main.py.
    _settle()
    rec = _load()
    why = journal.damaged() or journal.scar()
    if why:
        # The journal cannot say which set is whole: move and delete nothing (the saved and
        # staged sets stay where they are) and boot the live files. A new package's commit
        # writes a sound journal again.
        log.error("fota", "script journal unusable (%s): keeping every script set as it is"
                  % why)
        return "damaged"
    s = rec["state"]
    why = _inconsistent(rec)
    if why:
        log.error("fota", "script journal says %s but %s (an older record?): keeping every "
                  "script set as it is" % (s, why))
        return "damaged"
    if s == "staged":
        need = rec.get("core")
        if need is not None:
            import board

            running = board.core_version()
            if running != need:
                log.error("fota", "staged script set", rec["new"]["version"], "needs core", need,
                          "but core", running, "booted (the core update did not take): discarded")
                rec["state"] = "valid"
                del rec["new"]
                _save(rec)
                _wipe(STAGE)
                return status()
        _swap(rec)
    elif s == "swapping":
        if _core_gone(rec):
            _revert(rec)
        else:
            log.warn("fota", "finishing an interrupted script swap")
            _run_swap(rec)
    elif s == "pending":
        if rec.get("core") is not None and not _core_gone(rec):
            # The core this set came with booted again, so it was confirmed (an unconfirmed
            # core is rolled back by the bootloader): the power failed between the core's
            # confirmation and the script set's. Finish it.
            log.warn("fota", "script set", rec["new"]["version"], "confirmed with its core")
            confirm()
        else:
            log.error("fota", "script set", rec["new"]["version"], "was not confirmed: "
                      "rolling back")
            _revert(rec)
    elif s == "reverting":
        log.warn("fota", "finishing an interrupted script rollback")
        _run_revert(rec)
    elif _exists(STAGE):
        _wipe(STAGE)  # a half-staged set a cut left behind (the download is simply lost)
    # A saved previous set a cut left in /.mpfota/prev/ (during a confirm) stays until the
    # next install: a boot never deletes the only other whole set on the word of a record.
    return status()


def _inconsistent(rec):
    # Why the folders contradict the record (as when a sound record of another state replaced
    # the current one), or None. The steps of a state need these folders.
    s = rec["state"]
    if s == "staged" and not _exists(STAGE):
        return "there is no staged set"
    if s in ("pending", "reverting") and rec.get("old") and not _exists(PREV):
        return "the previous set was not saved"
    return None


def _core_gone(rec):
    # True when the set needs a core that is not the one running (its core was rolled back).
    need = rec.get("core")
    if need is None:
        return False
    import board

    if board.core_version() == need:
        return False
    log.error("fota", "script set", rec["new"]["version"], "needs core", need, "but core",
              board.core_version(), "booted: rolling the script set back")
    return True


def _swap(rec):
    _wipe(PREV)
    keep = rec["keep"]
    old = []
    cur = rec.get("cur")
    for f in rec["new"]["files"]:
        # Checked when staged; the user may have made a folder or file there since.
        why = blocker(f, cur["files"] if cur else [], keep)
        if why:
            log.error("fota", "staged script set", rec["new"]["version"], "discarded:", why)
            rec["state"] = "valid"
            del rec["new"]
            _save(rec)
            _wipe(STAGE)
            return
    for f in (cur["files"] if cur else []) + rec["new"]["files"]:
        if f not in keep and f not in old and _exists(ROOT + f):
            old.append(f)
    rec["old"] = old
    rec["state"] = "swapping"
    _save(rec)
    _run_swap(rec)


def _run_swap(rec):
    keep = rec["keep"]
    try:
        for f in rec["old"]:
            if _exists(ROOT + f) and not _exists(PREV + f):
                _move(ROOT + f, PREV + f)
        for f in rec["new"]["files"]:
            if not _exists(STAGE + f):
                continue
            if f in keep and _exists(ROOT + f):
                continue  # the user's copy wins
            _move(STAGE + f, ROOT + f)
    except OSError as e:
        log.error("fota", "script swap failed (%r): restoring the previous set" % (e,))
        _revert(rec)
        return
    rec["state"] = "pending"
    _save(rec)
    _wipe(STAGE)
    log.info("fota", "script set", rec["new"]["version"], "installed: pending confirmation")


def _revert(rec):
    rec["state"] = "reverting"
    _save(rec)
    _run_revert(rec)


def _run_revert(rec):
    keep = rec["keep"]
    old = rec.get("old", [])
    for f in rec["new"]["files"]:
        # A live new file goes; a name still holding its old file (swap cut short) stays.
        if f not in keep and _exists(ROOT + f) and (f not in old or _exists(PREV + f)):
            os.remove(ROOT + f)
    for f in old:
        if _exists(PREV + f):
            _move(PREV + f, ROOT + f)
    bad = rec["new"]["version"]
    _save({"state": "valid", "cur": rec.get("cur"), "keep": keep, "rolled_back": bad})
    _wipe(PREV)
    _wipe(STAGE)
    old_version = rec["cur"]["version"] if rec.get("cur") else "(factory)"
    log.error("fota", "script set", bad, "rolled back; running", old_version)


# --- the application's side --------------------------------------------------------------------


def confirm():
    # The new script set works: keep it, drop the previous one. True when there was one pending.
    rec = _load()
    if rec["state"] != "pending":
        return False
    _save({"state": "valid", "cur": rec["new"], "keep": rec["keep"]})
    _wipe(PREV)
    log.info("fota", "script set", rec["new"]["version"], "confirmed")
    return True


def check_boot():
    # Call once at boot (after apply_at_boot): logs and clears a rollback note; returns the
    # status as it was.
    s = status()
    if s == "rolled_back":
        rec = _load()
        log.error("fota", "script update to", rec["rolled_back"], "was not confirmed: rolled back")
        del rec["rolled_back"]
        _save(rec)
    elif s == "pending":
        log.warn("fota", "running a new script set that is not confirmed yet")
    return s
