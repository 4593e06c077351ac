# The script-set journal on its own: a crash after every single file operation of a swap, a
# rollback or a confirmation (renames, removes and journal writes), then the next boot's apply,
# always leaves the whole old set or the whole new set, and the user's files. (The power-cut
# sweep in tests/host/test_sweep_scripts.py cuts the real flash; this covers the logic fast.)
import vb

TIMEOUT = 120

V1 = {"main.py": "main 1", "app/a.py": "a 1", "old.py": "old 1", "cfg.json": "default 1"}
V2 = {"main.py": "main 2", "app/a.py": "a 2", "app/new.py": "new 2", "lib/deep/x.py": "x 2",
      "cfg.json": "default 2"}
KEEP = ["cfg.json"]
USER = {"cfg.json": "user edit", "data/u.txt": "user data"}


class _Crash(BaseException):
    pass


class _CrashingOS:
    # os, but the `after`-th rename/remove raises _Crash (as a power cut would stop there).
    def __init__(self, real, after):
        self.real = real
        self.left = after
        self.count = 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def _tick(self):
        if self.left is not None and self.count >= self.left:
            raise _Crash()
        self.count += 1

    def rename(self, a, b):
        self._tick()
        self.real.rename(a, b)

    def remove(self, p):
        self._tick()
        self.real.remove(p)

    def rmdir(self, p):
        self._tick()
        self.real.rmdir(p)


def _crashing(after, fn):
    # Run fn() with every file operation of mpfota.scripts and mpfota.journal counted; crash
    # after `after` of them (None: never). Returns the number of operations done.
    import os

    from mpfota import journal, scripts

    fake = _CrashingOS(os, after)
    scripts.os = fake
    journal.os = fake
    try:
        fn()
    except _Crash:
        pass
    finally:
        scripts.os = os
        journal.os = os
    return fake.count


def _write(path, text):
    from mpfota import scripts

    scripts._makedirs("/" + path)
    with open("/" + path, "w") as f:
        f.write(text)


def _read(path):
    try:
        with open("/" + path) as f:
            return f.read()
    except OSError:
        return None



def _fresh():
    # v1 installed and confirmed, the user's files, v2 staged.
    from mpfota import journal, scripts

    for p in ("/app", "/lib", "/data", "/.mpfota"):
        scripts._wipe(p)
    for p in ("/main.py", "/old.py", "/cfg.json"):
        try:
            import os

            os.remove(p)
        except OSError:
            pass
    journal.put("scripts", None)
    vb.stage_scripts("v1", V1, keep=KEEP)
    assert scripts.apply_at_boot() == "pending"
    assert scripts.confirm()
    for p, text in USER.items():
        _write(p, text)
    vb.stage_scripts("v2", V2, keep=KEEP)


def _which():
    # "v1" or "v2" when the live files are exactly that set (keep files aside), else a report.
    for name, files, other in (("v1", V1, V2), ("v2", V2, V1)):
        same = all(_read(p) == t for p, t in files.items() if p not in KEEP)
        gone = all(_read(p) is None for p in other if p not in files)
        if same and gone:
            return name
    return "mix: " + repr({p: _read(p) for p in sorted(set(V1) | set(V2))})


def _user_ok():
    for p, text in USER.items():
        assert _read(p) == text, "user file %s changed: %r" % (p, _read(p))


def test_clean_swap_then_confirm(vboard):
    vb.boot()
    from mpfota import scripts

    _fresh()
    assert _which() == "v1"
    assert scripts.apply_at_boot() == "pending"
    assert _which() == "v2"
    _user_ok()
    assert scripts.confirm()
    assert _which() == "v2" and _read("old.py") is None
    assert scripts.installed()["files"] == sorted(V2)


def test_crash_at_every_step_of_the_swap(vboard):
    vb.boot()
    from mpfota import scripts

    _fresh()
    total = _crashing(None, scripts.apply_at_boot)
    assert total > 10, total
    seen = {}
    for k in range(total + 1):
        _fresh()
        _crashing(k, scripts.apply_at_boot)
        scripts.apply_at_boot()  # the next boot
        got = _which()
        assert got in ("v1", "v2"), "crash after operation %d: %s" % (k, got)
        _user_ok()
        seen[got] = seen.get(got, 0) + 1
        if got == "v2":
            assert scripts.status() == "pending"
            assert scripts.confirm() and _which() == "v2"
    print("swap operations:", total, "outcomes:", seen)
    assert seen.get("v2", 0) > total // 2, "most crashes must still end on the new set"


def test_crash_at_every_step_of_the_rollback(vboard):
    vb.boot()
    from mpfota import scripts

    _fresh()
    scripts.apply_at_boot()
    total = _crashing(None, scripts.apply_at_boot)  # pending at boot: roll back
    assert _which() == "v1"
    for k in range(total + 1):
        _fresh()
        scripts.apply_at_boot()
        _crashing(k, scripts.apply_at_boot)
        scripts.apply_at_boot()
        got = _which()
        assert got == "v1", "crash after operation %d of the rollback: %s" % (k, got)
        _user_ok()
        assert scripts.status() == "rolled_back"


def test_crash_at_every_step_of_the_confirmation(vboard):
    vb.boot()
    from mpfota import scripts

    _fresh()
    scripts.apply_at_boot()
    total = _crashing(None, scripts.confirm)
    for k in range(total + 1):
        _fresh()
        scripts.apply_at_boot()
        _crashing(k, scripts.confirm)
        scripts.apply_at_boot()
        got = _which()
        assert got in ("v1", "v2"), "crash after operation %d of confirm: %s" % (k, got)
        _user_ok()
        if got == "v2":
            assert scripts.status() == "valid"


def test_swap_blocked_by_a_user_file_keeps_the_old_set(vboard):
    # The new set needs a folder /lib/deep where the user has since put a file: the boot-time
    # swap discards the staged set before moving anything.
    vb.boot()
    from mpfota import scripts

    _fresh()
    _write("lib/deep", "a user file where the new set needs a folder")
    assert scripts.apply_at_boot() == "valid"
    assert scripts.staged() is None
    assert _which() == "v1"
    assert _read("lib/deep") == "a user file where the new set needs a folder"
    _user_ok()


def test_keep_files_never_touched_by_swap_or_rollback(vboard):
    vb.boot()
    from mpfota import scripts

    _fresh()
    scripts.apply_at_boot()
    assert _read("cfg.json") == "user edit"
    scripts.apply_at_boot()  # unconfirmed: rolled back
    assert _read("cfg.json") == "user edit"
    assert scripts.check_boot() == "rolled_back"
    assert scripts.check_boot() == "valid", "the rollback note is reported once"


def test_a_new_stage_replaces_an_older_one(vboard):
    vb.boot()
    from mpfota import scripts

    _fresh()
    vb.stage_scripts("v3", {"main.py": "main 3"}, keep=KEEP)
    assert scripts.staged()["version"] == "v3"
    scripts.apply_at_boot()
    assert _read("main.py") == "main 3"
    assert _read("app/new.py") is None


def test_leftovers_of_an_interrupted_install_are_cleaned_at_boot(vboard):
    vb.boot()
    from mpfota import scripts

    _fresh()
    st = scripts.Stager()
    st.begin()  # drops the staged v2: a new install starts...
    st.open("main.py")
    st.write(b"half")  # ...and the power goes before commit()
    assert scripts.status() == "valid"
    assert scripts.apply_at_boot() == "valid"
    assert _read(".mpfota/stage/main.py") is None
    assert _which() == "v1"
