# The LuatOS `fota` API on the spare slot: stream, verify, switch; every bad case switches nothing.
import vb


def _run_chunks(fota, data, chunk=1000):
    result = None
    for pos in range(0, len(data), chunk):
        result = fota.run(data[pos:pos + chunk])
        if not result[0] or result[1]:
            break
    return result


def test_stream_verify_switch(vboard):
    vb.boot()
    import fota
    import vpartition

    img = vb.image("2.0.0", 50000)
    assert fota.init(len=len(img), md5=vb.md5hex(img))
    assert fota.wait()
    ok, done, status = _run_chunks(fota, img)
    assert (ok, done, status) == (True, True, 0)
    assert fota.isDone() == (True, True)
    assert vpartition.boot_record() is None, "nothing may switch before finish(True)"
    assert fota.finish(True)
    assert vpartition.boot_record() == (1, "new")
    assert vb.reboot() == 1
    import board

    assert board.core_version() == "2.0.0"


def test_stream_without_length_ends_at_finish(vboard):
    vb.boot()
    import fota
    import vpartition

    img = vb.image("2.0.1", 9000)
    assert fota.init()
    ok, done, _ = _run_chunks(fota, img, 4096)
    assert ok and not done
    assert fota.finish(True)
    assert vpartition.boot_record() == (1, "new")


def test_wrong_md5_switches_nothing(vboard):
    vb.boot()
    import fota
    import vpartition

    img = vb.image("2.0.0", 20000)
    assert fota.init(len=len(img), md5="0" * 32)
    ok, done, _ = _run_chunks(fota, img)
    assert not ok and done
    assert fota.isDone() == (False, True)
    assert not fota.finish(True)
    assert vpartition.boot_record() is None


def test_wrong_sha256_switches_nothing(vboard):
    vb.boot()
    import fota
    import vpartition

    img = vb.image("2.0.0", 20000)
    assert fota.init(len=len(img), sha256="ab" * 32)
    _run_chunks(fota, img)
    assert not fota.finish(True)
    assert vpartition.boot_record() is None


def test_truncated_stream_switches_nothing(vboard):
    vb.boot()
    import fota
    import vpartition

    img = vb.image("2.0.0", 20000)
    assert fota.init(len=len(img))
    ok, done, _ = _run_chunks(fota, img[:15000])
    assert ok and not done
    assert not fota.finish(True)
    assert vpartition.boot_record() is None


def test_not_an_image_is_refused(vboard):
    vb.boot()
    import fota
    import vpartition

    junk = bytes(range(256)) * 40
    assert fota.init(len=len(junk))
    ok, done, _ = _run_chunks(fota, junk)
    assert not ok and done
    assert not fota.finish(True)
    assert vpartition.boot_record() is None


def test_larger_than_slot_is_refused(vboard):
    vb.boot()
    import fota

    slot = 256 * 1024
    assert fota.init()
    chunk = bytes(4096)
    result = None
    for _ in range(slot // 4096 + 1):
        result = fota.run(chunk)
        if not result[0]:
            break
    assert result == (False, True, -1)
    assert not fota.finish(True)


def test_read_back_mismatch_is_refused(vboard):
    vb.boot()
    import fota
    import vpartition

    img = vb.image("2.0.0", 12000)
    assert fota.init()
    fota.run(img)
    # Damage the slot after it was written (as a failing flash would) before verification.
    import board

    running, spare = board.ota_slots()
    spare.ioctl(6, 1)
    assert not fota.finish(True)
    assert vpartition.boot_record() is None


def test_finish_false_aborts(vboard):
    vb.boot()
    import fota
    import vpartition

    img = vb.image("2.0.0", 8000)
    assert fota.init(len=len(img))
    assert fota.run(img)[:2] == (True, True)
    assert fota.finish(False) is False
    assert vpartition.boot_record() is None


def test_file(vboard):
    vb.boot()
    import fota
    import vpartition

    assert fota.file("/missing.bin") == (False, False, 0)
    with open("/update.bin", "wb") as f:
        f.write(vb.image("3.0.0", 30000))
    assert fota.file("/update.bin") == (True, True, 0)
    assert vpartition.boot_record() == (1, "new")


def test_no_update_while_unconfirmed(vboard):
    vb.boot()
    import fota
    from mpfota import confirm

    img = vb.image("2.0.0", 8000)
    assert fota.init(len=len(img))
    fota.run(img)
    assert fota.finish(True)
    vb.reboot()
    assert confirm.status() == "pending"
    assert not fota.init(), "an update must not overwrite the only known-good slot"
    confirm.confirm()
    assert confirm.status() == "valid"
    assert fota.init()
    fota.finish(False)


def test_unconfirmed_reboot_rolls_back(vboard):
    vb.boot()
    import board
    import fota
    from mpfota import confirm

    img = vb.image("2.0.0", 8000)
    fota.init(len=len(img))
    fota.run(img)
    assert fota.finish(True)
    assert vb.reboot() == 1
    assert board.core_version() == "2.0.0"
    assert vb.reboot() == 0, "a second boot without confirmation rolls back"
    assert board.core_version() == "1.0.0"
    assert confirm.check_boot() == "rolled_back"
    assert confirm.status() == "valid"


def test_confirmed_image_stays(vboard):
    vb.boot()
    import board
    import fota
    from mpfota import confirm

    img = vb.image("2.0.0", 8000)
    fota.init(len=len(img))
    fota.run(img)
    fota.finish(True)
    vb.reboot()
    confirm.confirm()
    assert vb.reboot() == 1
    assert vb.reboot() == 1
    assert board.core_version() == "2.0.0"
    assert confirm.status() == "valid"
