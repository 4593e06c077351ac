# Update packages on the virtual board, the good paths: a script set staged and swapped in at the
# next boot, a core switched, both together, signatures with a provisioned key, resume inside a
# package after a dropped connection, and the confirmation/rollback of the script set.
import vb

TIMEOUT = 90
PROJECT = "DEMO"
V0 = "001.000.000"
MAIN0 = 'VERSION = "001.000.000"\nprint("factory main")\n'


def _setup():
    # The factory state: a main.py, the user's config and a secret in a folder of its own.
    import os

    vb.boot()
    with open("/main.py", "w") as f:
        f.write(MAIN0)
    with open("/config.json", "w") as f:
        f.write('{"user": "mine"}')
    os.mkdir("/data")
    with open("/data/secret.txt", "w") as f:
        f.write("s3cr3t")


def _read(path):
    with open(path) as f:
        return f.read()


def _exists(path):
    import os

    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _mkdir(path):
    import os

    try:
        os.mkdir(path)
    except OSError:
        pass


def _user_files_kept():
    assert _read("/config.json") == '{"user": "mine"}', "a keep file was overwritten"
    assert _read("/data/secret.txt") == "s3cr3t"


async def _install(kit, name, **kw):
    from mpfota import http, package

    args = {"project": PROJECT, "version": V0}
    args.update(kw)
    resp = await http.request("GET", kit["base"] + kit["packages"][name]["path"], bytearray(1024))
    try:
        return await package.install(resp, **args)
    finally:
        await resp.aclose()


def _next_boot():
    # What a reset does: the bootloader picks the slot, then the boot-time apply runs.
    import mpfota.bootapply

    vb.reboot()
    return mpfota.bootapply.run()


async def test_script_set_staged_then_swapped_at_boot_and_confirmed(vboard, package_kit):
    _setup()
    from mpfota import scripts

    m = await _install(package_kit, "scripts")
    assert m.to["script"] == "001.000.001"
    assert scripts.status() == "staged"
    assert _read("/main.py") == MAIN0, "the live set must not change before the boot"
    assert not _exists("/app/a.py")
    assert _next_boot() == "pending"
    assert 'VERSION = "001.000.001"' in _read("/main.py")
    assert _read("/app/a.py") == 'V = "001.000.001"\n'
    _user_files_kept()
    assert _exists("/.mpfota/prev/main.py"), "the previous set is kept until confirmed"
    assert scripts.installed()["version"] == "001.000.001"
    assert scripts.confirm()
    assert scripts.status() == "valid"
    assert not _exists("/.mpfota/prev/main.py")
    assert not _exists("/.mpfota/stage")
    # The next boot changes nothing.
    assert _next_boot() == "valid"
    assert 'VERSION = "001.000.001"' in _read("/main.py")


async def test_unconfirmed_script_set_rolls_back(vboard, package_kit):
    _setup()
    from mpfota import scripts

    await _install(package_kit, "scripts")
    assert _next_boot() == "pending"
    # The new main.py resets before it confirms (seed 001 §7.2): the next boot rolls back.
    assert _next_boot() == "rolled_back"
    assert _read("/main.py") == MAIN0
    assert not _exists("/app/a.py") and not _exists("/app/b.py")
    _user_files_kept()
    assert scripts.check_boot() == "rolled_back"
    assert scripts.status() == "valid"
    assert scripts.installed() is None, "the factory set has no record"


async def test_keep_file_default_installed_only_when_absent(vboard, package_kit):
    vb.boot()
    import os

    from mpfota import scripts

    await _install(package_kit, "scripts")
    _next_boot()
    assert _read("/config.json") == '{"default": "001.000.001"}'
    assert scripts.confirm()
    # The user edits the config; the next set ships another default: the user's stays.
    with open("/config.json", "w") as f:
        f.write("edited")
    await _install(package_kit, "scripts-next", version=None)
    _next_boot()
    assert _read("/config.json") == "edited"
    assert _read("/app/c.py") == 'V = "c"\n'
    assert scripts.confirm()
    assert scripts.installed()["version"] == "001.000.002"
    assert "config.json" in os.listdir("/")


async def test_next_set_replaces_old_files_and_rollback_restores_them(vboard, package_kit):
    _setup()
    from mpfota import scripts

    await _install(package_kit, "scripts")
    _next_boot()
    scripts.confirm()
    # A file of the running set that the next set does not have: gone after the swap, back
    # after a rollback.
    with open("/app/old_only.py", "w") as f:
        f.write("old")
    from mpfota import journal

    rec = journal.get("scripts")
    rec["cur"]["files"].append("app/old_only.py")
    journal.put("scripts", rec)
    await _install(package_kit, "scripts-next", version=None)
    assert _next_boot() == "pending"
    assert not _exists("/app/old_only.py")
    assert _exists("/app/c.py")
    assert _next_boot() == "rolled_back"
    assert _read("/app/old_only.py") == "old"
    assert not _exists("/app/c.py")
    assert _read("/app/a.py") == 'V = "001.000.001"\n'
    assert scripts.installed()["version"] == "001.000.001"
    _user_files_kept()


async def test_core_package_switches_the_slot(vboard, package_kit):
    _setup()
    import board
    import vpartition
    from mpfota import package, scripts

    m = await _install(package_kit, "core")
    assert m.to["core"] == "2.0.0"
    assert vpartition.boot_record() == (1, "new")
    assert package.min_counter() == 2, "the anti-rollback minimum is raised on install"
    assert scripts.status() == "valid"
    _next_boot()
    assert board.core_version() == "2.0.0"
    assert _read("/main.py") == MAIN0


async def test_core_and_scripts_together_then_confirmed(vboard, package_kit):
    _setup()
    import board
    from mpfota import confirm, scripts

    await _install(package_kit, "both")
    assert scripts.staged()["version"] == "001.000.001"
    assert _next_boot() == "pending"
    assert board.core_version() == "2.0.0"
    assert 'VERSION = "001.000.001"' in _read("/main.py")
    confirm.confirm()
    scripts.confirm()  # (once confirm.confirm() confirms the scripts too, this is a no-op)
    assert scripts.status() == "valid"
    _next_boot()
    assert board.core_version() == "2.0.0"
    assert 'VERSION = "001.000.001"' in _read("/main.py")


async def test_core_and_scripts_roll_back_together(vboard, package_kit):
    _setup()
    import board
    from mpfota import confirm

    await _install(package_kit, "both")
    _next_boot()
    assert board.core_version() == "2.0.0"
    # No confirmation: the bootloader rolls the core back and the scripts follow.
    assert _next_boot() == "rolled_back"
    assert board.core_version() == "1.0.0"
    assert confirm.check_boot() == "rolled_back"
    assert _read("/main.py") == MAIN0
    _user_files_kept()


async def test_staged_scripts_discarded_when_the_core_did_not_take(vboard, package_kit):
    _setup()
    import board
    import vpartition
    from mpfota import scripts

    await _install(package_kit, "both", switch=False)  # the core verified but not switched
    assert vpartition.boot_record() is None
    assert _next_boot() == "valid"
    assert board.core_version() == "1.0.0"
    assert _read("/main.py") == MAIN0, "scripts for core 2.0.0 must not run on core 1.0.0"
    assert scripts.staged() is None and not _exists("/.mpfota/stage")


async def test_signed_package_with_provisioned_pem_key(vboard, package_kit):
    _setup()
    import vpartition
    from mpfota import package

    _mkdir("/.mpfota")
    with open("/.mpfota/pubkey.pem", "w") as f:
        f.write(package_kit["pub_pem"])
    assert package.provisioned_key() is not None
    m = await _install(package_kit, "signed")
    assert m.to["core"] == "2.0.0"
    assert vpartition.boot_record() == (1, "new")


async def test_signed_package_with_provisioned_der_key_and_explicit_key(vboard, package_kit):
    _setup()
    import binascii

    from mpfota import scripts

    _mkdir("/.mpfota")
    with open("/.mpfota/pubkey.der", "wb") as f:
        f.write(binascii.unhexlify(package_kit["pub_der_hex"]))
    await _install(package_kit, "scripts-signed")
    assert scripts.status() == "staged"
    # An explicit key (PEM text) works the same way.
    await _install(package_kit, "scripts-signed", key=package_kit["pub_pem"])
    assert scripts.status() == "staged"


async def test_signed_package_without_a_key_installs(vboard, package_kit):
    _setup()
    from mpfota import scripts

    await _install(package_kit, "scripts-signed")
    assert scripts.status() == "staged"


async def test_install_from_a_file_with_progress(vboard, package_kit):
    entry = package_kit["packages"]["both"]
    with open(entry["file"], "rb") as f:
        data = f.read()
    _setup()
    import vpartition
    from mpfota import package

    with open("/update.pkg", "wb") as f:
        f.write(data)
    seen = []
    m = package.install_file("/update.pkg", project=PROJECT, version=V0,
                             progress=lambda done, total: seen.append((done, total)))
    assert m.size == len(data)
    assert seen[-1] == (len(data), len(data))
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:])), "progress only moves forward"
    assert vpartition.boot_record() == (1, "new")


class _Dropping:
    # An HTTP response that loses its connection after `limit` bytes.
    def __init__(self, resp, limit):
        self.resp = resp
        self.left = limit

    async def readinto(self, mv, n=None):
        from mpfota import http

        if self.left <= 0:
            raise http.HTTPError(http.ERR_CLOSE, "connection dropped (test)")
        n = min(len(mv) if n is None else n, self.left)
        n = await self.resp.readinto(mv, n)
        self.left -= n
        return n


async def _resume(kit, name, drop_at):
    from mpfota import http, package

    url = kit["base"] + kit["packages"][name]["path"]
    inst = package.Installer(project=PROJECT, version=V0)
    resp = await http.request("GET", url, bytearray(1024))
    try:
        await inst.feed(_Dropping(resp, drop_at))
        raise AssertionError("the connection should have dropped")
    except http.HTTPError:
        pass
    finally:
        await resp.aclose()
    offset = inst.resume_offset()
    resp = await http.request("GET", url, bytearray(1024), range_start=offset or None)
    try:
        assert resp.status == (206 if offset else 200)
        await inst.feed(resp, offset)
    finally:
        await resp.aclose()
    inst.commit()
    return inst, offset


async def test_resume_inside_the_core_section(vboard, package_kit):
    _setup()
    import board
    from mpfota import scripts

    core_at = 16 + 400  # somewhere after the manifest
    inst, offset = await _resume(package_kit, "both", 30000)
    start = inst.manifest.core.offset
    assert offset > start > core_at - 400, "resumes inside the core, not from 0"
    assert (offset - start) % 4096 == 0, "from the last written sector"
    assert scripts.status() == "staged"
    _next_boot()
    assert board.core_version() == "2.0.0"


async def test_resume_inside_the_scripts_section_restarts_the_section(vboard, package_kit):
    _setup()
    from mpfota import scripts

    size = package_kit["packages"]["both"]["size"]
    inst, offset = await _resume(package_kit, "both", size - 100)
    assert offset == inst.manifest.scripts.offset
    assert scripts.staged()["files"] == ["app/a.py", "app/b.py", "config.json", "main.py"]
    assert _next_boot() == "pending"
    assert 'VERSION = "001.000.001"' in _read("/main.py")


async def test_resume_before_the_sections_starts_again(vboard, package_kit):
    _setup()
    inst, offset = await _resume(package_kit, "scripts", 100)
    assert offset == 0


async def test_no_new_package_while_an_update_awaits_confirmation(vboard, package_kit):
    _setup()
    from mpfota import package

    await _install(package_kit, "scripts")
    _next_boot()
    try:
        await _install(package_kit, "scripts-next", version="001.000.001")
    except package.PackageError as e:
        assert e.reason == "pending", e
    else:
        raise AssertionError("a pending script set must block new packages")


async def test_identity_comes_from_the_installed_record(vboard, package_kit):
    _setup()
    from mpfota import package, scripts

    # Without PROJECT nor VERSION and no record, the device cannot tell: refused.
    try:
        await _install(package_kit, "scripts", project=None, version=None)
    except package.PackageError as e:
        assert e.reason == "identity", e
    else:
        raise AssertionError("an unknown identity must be refused")
    await _install(package_kit, "scripts")
    _next_boot()
    scripts.confirm()
    rec = scripts.installed()
    assert (rec["project"], rec["version"]) == ("DEMO", "001.000.001")
    assert rec["firmware_name"] == "DEMO_LuatOS-SoC_UNIX_1"
    await _install(package_kit, "scripts-next", project=None, version=None)
    assert scripts.staged()["version"] == "001.000.002"


async def test_counter_raised_by_an_install_blocks_older_packages(vboard, package_kit):
    _setup()
    from mpfota import package, scripts

    await _install(package_kit, "scripts-counter5")
    assert package.min_counter() == 5
    # Even a package that is otherwise fine is refused once the counter moved past it.
    try:
        await _install(package_kit, "scripts")
    except package.PackageError as e:
        assert e.reason == "rollback", e
    else:
        raise AssertionError("a lower counter must be refused")
    assert scripts.staged()["version"] == "001.000.001"


async def test_identity_from_the_lsys_globals(vboard, package_kit):
    _setup()
    import lsys
    from mpfota import scripts

    lsys.PROJECT = "DEMO"
    lsys.VERSION = "001.000.000"
    await _install(package_kit, "scripts", project=None, version=None)
    assert scripts.staged()["version"] == "001.000.001"
    lsys.VERSION = "001.000.001"  # the app says it already runs that: nothing to do
    from mpfota import package

    try:
        await _install(package_kit, "scripts", project=None, version=None)
    except package.PackageError as e:
        assert e.reason == "current", e
    else:
        raise AssertionError("lsys.VERSION must be used")


async def test_staged_set_discarded_when_the_user_made_a_folder_in_its_way(vboard, package_kit):
    # Staged while /logs did not exist; the app made a folder /logs before the reset. The
    # boot-time swap must not move the user's folder: it discards the staged set.
    _setup()
    import os

    from mpfota import scripts

    await _install(package_kit, "scripts-file-logs")
    assert scripts.staged() is not None
    os.mkdir("/logs")
    with open("/logs/today.txt", "w") as f:
        f.write("user log")
    assert _next_boot() == "valid"
    assert _read("/logs/today.txt") == "user log"
    assert _read("/main.py") == MAIN0
    assert scripts.staged() is None and not _exists("/.mpfota/stage")
    _user_files_kept()
