# Every bad package is refused with a defined reason, logged, and nothing is switched: the boot
# record stays, no script set is staged, the live scripts and the user's files are untouched,
# the anti-rollback minimum does not move. Refusals that the manifest alone can decide happen
# before anything is erased: the spare slot is still blank.
import vb

TIMEOUT = 60
MAIN0 = 'VERSION = "001.000.000"\n'


def _setup(kit, key=False, min_counter=0):
    vb.boot()
    import os

    from mpfota import journal

    with open("/main.py", "w") as f:
        f.write(MAIN0)
    with open("/config.json", "w") as f:
        f.write("user")
    if key or min_counter:
        os.mkdir("/.mpfota")
    if key:
        with open("/.mpfota/pubkey.pem", "w") as f:
            f.write(kit["pub_pem"])
    if min_counter:
        journal.put("min", min_counter)


def _spare_blank():
    import board

    _, spare = board.ota_slots()
    buf = bytearray(4096)
    spare.readblocks(0, buf)
    return buf == b"\xff" * 4096


async def _refused(kit, name, reason, erased=False, **kw):
    import os

    import vpartition
    from mpfota import http, package, scripts

    before = package.min_counter()
    args = {"project": "DEMO", "version": "001.000.000"}
    args.update(kw)
    resp = await http.request("GET", kit["base"] + kit["packages"][name]["path"], bytearray(1024))
    try:
        await package.install(resp, **args)
    except package.PackageError as e:
        assert e.reason == reason, "%s: expected %s, got %s (%s)" % (name, reason, e.reason, e.msg)
        assert e.code == -9
        msg = e.msg
    else:
        raise AssertionError("%s should have been refused" % name)
    finally:
        await resp.aclose()
    assert vpartition.boot_record() is None, "the boot slot must not be switched"
    if not erased:
        assert _spare_blank(), "refused before anything is erased: the spare slot stays blank"
    assert scripts.status() == "valid" and scripts.staged() is None
    try:
        os.stat("/.mpfota/stage")
        raise AssertionError("a refused package leaves no staged files")
    except OSError:
        pass
    with open("/main.py") as f:
        assert f.read() == MAIN0
    with open("/config.json") as f:
        assert f.read() == "user"
    assert package.min_counter() == before
    return msg


async def test_truncated_inside_the_core(vboard, package_kit):
    _setup(package_kit)
    await _refused(package_kit, "truncated-core", "truncated", erased=True)


async def test_truncated_inside_the_scripts(vboard, package_kit):
    _setup(package_kit)
    await _refused(package_kit, "truncated-scripts", "truncated", erased=True)


async def test_truncated_inside_the_manifest(vboard, package_kit):
    _setup(package_kit)
    await _refused(package_kit, "truncated-manifest", "truncated")


async def test_wrong_core_digest(vboard, package_kit):
    _setup(package_kit)
    msg = await _refused(package_kit, "digest-core", "digest", erased=True)
    assert "md5" in msg or "sha256" in msg


async def test_wrong_scripts_digest(vboard, package_kit):
    _setup(package_kit)
    await _refused(package_kit, "digest-scripts", "digest", erased=True)


async def test_corrupted_manifest_fails_its_crc(vboard, package_kit):
    _setup(package_kit)
    msg = await _refused(package_kit, "crc-manifest", "digest")
    assert "CRC" in msg


async def test_unsigned_package_refused_when_a_key_is_provisioned(vboard, package_kit):
    _setup(package_kit, key=True)
    msg = await _refused(package_kit, "unsigned", "signature")
    assert "not signed" in msg


async def test_signature_by_another_key(vboard, package_kit):
    _setup(package_kit, key=True)
    await _refused(package_kit, "signature-other-key", "signature")


async def test_tampered_manifest_under_a_valid_signature(vboard, package_kit):
    _setup(package_kit, key=True)
    await _refused(package_kit, "signature-tampered", "signature")


async def test_bad_signature_with_an_explicit_key(vboard, package_kit):
    _setup(package_kit)
    await _refused(package_kit, "signature-other-key", "signature", key=package_kit["pub_pem"])


async def test_wrong_layout_suffix(vboard, package_kit):
    _setup(package_kit)
    msg = await _refused(package_kit, "layout", "layout")
    assert "_2" in msg and "_1" in msg


async def test_wrong_firmware(vboard, package_kit):
    _setup(package_kit)
    await _refused(package_kit, "firmware", "firmware")


async def test_wrong_project(vboard, package_kit):
    _setup(package_kit)
    await _refused(package_kit, "project", "project")


async def test_script_downgrade(vboard, package_kit):
    _setup(package_kit)
    await _refused(package_kit, "downgrade-script", "downgrade")


async def test_same_script_version(vboard, package_kit):
    _setup(package_kit)
    await _refused(package_kit, "same-script", "current")


async def test_core_downgrade(vboard, package_kit):
    _setup(package_kit)
    await _refused(package_kit, "downgrade-core", "downgrade")


async def test_core_already_running(vboard, package_kit):
    _setup(package_kit)
    await _refused(package_kit, "current-core", "current")


async def test_cyclic_old_script_with_new_core(vboard, package_kit):
    _setup(package_kit)
    msg = await _refused(package_kit, "cyclic", "cyclic")
    assert "cyclic upgrade refused" in msg and "7.3" in msg


async def test_anti_rollback_counter(vboard, package_kit):
    _setup(package_kit, min_counter=4)
    msg = await _refused(package_kit, "rollback-counter", "rollback")
    assert "below" in msg


async def test_built_for_another_base_core(vboard, package_kit):
    _setup(package_kit)
    await _refused(package_kit, "base-core", "base")


async def test_manifest_too_large(vboard, package_kit):
    _setup(package_kit)
    msg = await _refused(package_kit, "manifest-too-large", "manifest_too_large")
    assert "manifest too large" in msg


async def test_script_entry_overflows_its_section(vboard, package_kit):
    _setup(package_kit)
    await _refused(package_kit, "overflow-entry", "overflow")


async def test_bytes_after_the_last_section(vboard, package_kit):
    _setup(package_kit)
    await _refused(package_kit, "overflow-trailing", "overflow")


async def test_core_larger_than_the_slot(vboard, package_kit):
    _setup(package_kit)
    await _refused(package_kit, "core-too-big", "space")


async def test_core_delta_that_is_not_a_patch(vboard, package_kit):
    _setup(package_kit)
    await _refused(package_kit, "core-delta-garbage", "image")


async def test_core_delta_for_another_base(vboard, package_kit):
    _setup(package_kit)
    msg = await _refused(package_kit, "core-delta-other-base", "base", erased=True)
    assert "base" in msg


async def test_streamed_core_delta_for_another_base(vboard, package_kit):
    # Refused on the patch header, before its first unit writes anything.
    _setup(package_kit)
    msg = await _refused(package_kit, "core-delta-streamed-other-base", "base", erased=True)
    assert "base" in msg


async def test_core_that_is_not_a_bootable_image(vboard, package_kit):
    _setup(package_kit)
    await _refused(package_kit, "not-bootable", "image", erased=True)


async def test_an_unusable_provisioned_key_refuses_everything(vboard, package_kit):
    _setup(package_kit)
    import os

    os.mkdir("/.mpfota")
    with open("/.mpfota/pubkey.pem", "w") as f:
        f.write("-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n")
    msg = await _refused(package_kit, "scripts-signed", "signature")
    assert "cannot be used" in msg


async def test_core_whose_image_header_names_another_version(vboard, package_kit):
    # The manifest says 2.0.0 (the rules accept it); the image's header says 3.0.0.
    _setup(package_kit)
    msg = await _refused(package_kit, "core-version-mismatch", "image", erased=True)
    assert "manifest names core 2.0.0" in msg and "header says 3.0.0" in msg, msg


async def test_core_delta_rebuilding_another_version(vboard, package_kit):
    _setup(package_kit)
    msg = await _refused(package_kit, "delta-version-mismatch", "image", erased=True)
    assert "header says 3.0.0" in msg, msg


def _user_things():
    import os

    with open("/notes.txt", "w") as f:
        f.write("my notes")
    os.mkdir("/data")
    with open("/data/user.txt", "w") as f:
        f.write("my data")


def _user_things_intact():
    with open("/notes.txt") as f:
        assert f.read() == "my notes"
    with open("/data/user.txt") as f:
        assert f.read() == "my data"


async def test_script_file_where_the_user_has_a_folder(vboard, package_kit):
    _setup(package_kit)
    _user_things()
    msg = await _refused(package_kit, "scripts-file-over-folder", "user_data")
    assert "/data is a folder" in msg, msg
    _user_things_intact()


async def test_script_below_a_user_file(vboard, package_kit):
    _setup(package_kit)
    _user_things()
    msg = await _refused(package_kit, "scripts-under-user-file", "user_data")
    assert "file /notes.txt" in msg, msg
    _user_things_intact()


async def test_script_over_a_user_file(vboard, package_kit):
    _setup(package_kit)
    _user_things()
    msg = await _refused(package_kit, "scripts-over-user-file", "user_data")
    assert "/notes.txt is a file on the board that no package installed" in msg, msg
    _user_things_intact()
