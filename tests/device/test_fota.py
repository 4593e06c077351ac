# The LuatOS `fota` module (device/fota.py) as luat_lib_fota.c defines it: argument meanings,
# return values and the file / isDone / finish sequence of LuatOS's fota_file demo, on the spare
# slot of the virtual board. Every bad case switches nothing.
import vb

SLOT = 256 * 1024  # the vboard fixture's slot size


def _run_chunks(fota, data, chunk=1000):
    result = None
    for pos in range(0, len(data), chunk):
        result = fota.run(data[pos:pos + chunk])
        if not result[0] or result[1]:
            break
    return result


def _poll_is_done(fota, tries=50):
    # LuatOS's polling loop (luat_lib_fota.c @usage): until not ok, or done.
    for _ in range(tries):
        ok, done = fota.isDone()
        if not ok or done:
            return ok, done
    raise AssertionError("isDone() still in progress after %d polls" % tries)


def _booted_version():
    import board

    vb.reboot()
    return board.core_version()


# ------------------------------------------------- LuatOS's fota_file demo, one to one

STARTUP_MS = 10  # the demo waits 10000 ms "for the system to settle"; shortened for the test


async def _file_upgrade_task(log, fota, sys, rtos):
    # fota_file_demo.lua's fileUpgradeTask, call for call (rtos.reboot -> board.reset).
    await sys.wait(STARTUP_MS)
    log.info("FOTA_FILE", "=== 开始文件系统升级 ===")
    log.info("FOTA_FILE", "初始化FOTA...")
    if not fota.init():
        log.error("FOTA_FILE", "FOTA初始化失败")
        return
    log.info("FOTA_FILE", "等待底层准备...")
    while not fota.wait():
        await sys.wait(100)
    log.info("FOTA_FILE", "底层准备就绪")
    filePath = "/update.bin"
    log.info("FOTA_FILE", "开始读取升级文件：", filePath)
    result, isDone, cache = fota.file(filePath)
    log.info("FOTA_FILE", "升级文件写入flash中的fota分区结果", result, isDone, cache)
    log.info("FOTA_FILE", "结束写入fota分区...")
    result, isDone = fota.isDone()
    log.info("FOTA_FILE", "写入fota分区状态", "结果:", result, "完成:", isDone)
    if result:
        if isDone:
            log.info("FOTA_FILE", "升级成功，准备重启设备")
            fota.finish(True)
            await sys.wait(2000)
            rtos.reset()
        else:
            log.error("FOTA_FILE", "升级失败")
            fota.finish(False)
    else:
        log.error("FOTA_FILE", "升级失败：检查写入状态失败")
        fota.finish(False)



class _Rtos:
    # board.reset() ends the process; here the reset is recorded and the next boot is
    # vb.reboot()'s.
    resets = 0

    def reset(self):
        self.resets += 1


async def _run_demo():
    # The demo as an app runs it: a task, the scheduler; returns (log lines, reset asked).
    import fota
    import lsys as sys

    lines = vb.capture_log()
    rtos = _Rtos()
    sys.taskInit(_file_upgrade_task, sys.log, fota, sys, rtos)
    await sys.arun()
    return lines, rtos.resets == 1


async def test_fota_file_demo_reports_success_and_boots_the_new_image(vboard):
    vb.boot()
    import vpartition

    with open("/update.bin", "wb") as f:
        f.write(vb.image("3.0.0", 30000))
    lines, reset = await _run_demo()
    assert "I/FOTA_FILE 升级文件写入flash中的fota分区结果 True True 0" in lines, lines
    assert "I/FOTA_FILE 写入fota分区状态 结果: True 完成: True" in lines, lines
    assert "I/FOTA_FILE 升级成功，准备重启设备" in lines, lines
    assert reset, "the demo reboots after a success"
    assert vpartition.boot_record() == (1, "new")
    assert _booted_version() == "3.0.0"


async def test_fota_file_demo_reports_a_bad_file_and_switches_nothing(vboard):
    vb.boot()
    import vpartition

    with open("/update.bin", "wb") as f:
        f.write(bytes(range(256)) * 40)
    lines, reset = await _run_demo()
    assert "I/FOTA_FILE 升级文件写入flash中的fota分区结果 False True -1" in lines, lines
    assert "E/FOTA_FILE 升级失败：检查写入状态失败" in lines, lines
    assert not reset
    assert vpartition.boot_record() is None
    assert _booted_version() == "1.0.0"


async def test_fota_file_demo_without_the_file(vboard):
    vb.boot()
    import vpartition

    lines, reset = await _run_demo()
    assert "I/FOTA_FILE 升级文件写入flash中的fota分区结果 False False 0" in lines, lines
    assert any(x.startswith("E/fota no such file for FOTA /update.bin") for x in lines), lines
    assert not reset
    assert vpartition.boot_record() is None


# ---------------------------------------------------------------- init's arguments


def test_documented_init_with_a_storage_capacity_larger_than_the_update(vboard):
    # fota.init(0, 0x00300000, spi_device): len is the storage capacity (3 MiB), not the size.
    vb.boot()
    import fota
    import vpartition

    img = vb.image("2.0.0", 50000)
    assert fota.init(0, 0x00300000, None) is True
    assert fota.wait() is True
    ok, done, r = _run_chunks(fota, img)
    assert (ok, done, r) == (True, False, 1), "no size given: the stream has not ended yet"
    assert vpartition.boot_record() is None, "nothing may switch before finish(True)"
    assert _poll_is_done(fota) == (True, True)
    assert fota.finish(True) is True
    assert vpartition.boot_record() == (1, "new")
    assert _booted_version() == "2.0.0"


def test_init_capacity_smaller_than_the_update_is_refused(vboard):
    vb.boot()
    import fota
    import vpartition

    img = vb.image("2.0.0", 20000)
    assert fota.init(None, 8192)
    ok, done, r = _run_chunks(fota, img, 4096)
    assert (ok, done, r) == (False, True, -1)
    assert fota.isDone() == (False, True)
    assert fota.finish(True) is False
    assert vpartition.boot_record() is None


def test_init_without_arguments_takes_the_whole_slot(vboard):
    vb.boot()
    import fota

    assert fota.init()
    chunk = bytes(4096)
    result = None
    for _ in range(SLOT // 4096 + 1):
        result = fota.run(chunk)
        if not result[0]:
            break
    assert result == (False, True, -1)
    assert fota.finish(True) is False


# ------------------------------------------------------------------ run() and isDone()


def test_run_with_size_reports_the_last_block(vboard):
    vb.boot()
    import fota
    import vpartition

    img = vb.image("2.0.0", 50000)
    assert fota.init(size=len(img), md5=vb.md5hex(img))
    first = fota.run(img[:1000])
    assert first == (True, False, 1)
    ok, done, r = _run_chunks(fota, img[1000:])
    assert (ok, done, r) == (True, True, 0)
    assert fota.isDone() == (True, True)
    assert vpartition.boot_record() is None
    assert fota.finish(True) is True
    assert vpartition.boot_record() == (1, "new")


def test_run_takes_offset_and_length(vboard):
    vb.boot()
    import fota

    img = vb.image("2.0.0", 9000)
    buf = bytearray(b"junk") + bytearray(img) + bytearray(b"tail")
    assert fota.init(size=len(img))
    assert fota.run(buf, 4, len(img)) == (True, True, 0)
    assert fota.finish(True)


def test_is_done_mid_stream_with_size_is_in_progress(vboard):
    vb.boot()
    import fota

    img = vb.image("2.0.0", 20000)
    assert fota.init(size=len(img))
    fota.run(img[:5000])
    assert fota.isDone() == (True, False)
    fota.run(img[5000:])
    assert fota.isDone() == (True, True)
    assert fota.finish(True)


def test_polling_is_done_ends_on_a_bad_image(vboard):
    vb.boot()
    import fota
    import vpartition

    junk = bytes(range(256)) * 40
    assert fota.init()
    _run_chunks(fota, junk)
    assert _poll_is_done(fota) == (False, True)
    assert fota.finish(True) is False
    assert vpartition.boot_record() is None


def test_run_outside_a_flow_is_an_error(vboard):
    vb.boot()
    import fota

    assert fota.run(b"abc") == (False, True, -1)
    assert fota.finish(True) is False


def test_wrong_md5_switches_nothing(vboard):
    vb.boot()
    import fota
    import vpartition

    img = vb.image("2.0.0", 20000)
    assert fota.init(size=len(img), md5="0" * 32)
    assert _run_chunks(fota, img) == (False, True, -1)
    assert fota.isDone() == (False, True)
    assert not fota.finish(True)
    assert vpartition.boot_record() is None


def test_wrong_sha256_switches_nothing(vboard):
    vb.boot()
    import fota
    import vpartition

    img = vb.image("2.0.0", 20000)
    assert fota.init(sha256="ab" * 32)
    _run_chunks(fota, img)
    assert not fota.finish(True)
    assert vpartition.boot_record() is None


def test_truncated_stream_switches_nothing(vboard):
    vb.boot()
    import fota
    import vpartition

    img = vb.image("2.0.0", 20000)
    assert fota.init()
    assert _run_chunks(fota, img[:15000])[:2] == (True, False)
    assert _poll_is_done(fota) == (False, True)
    assert not fota.finish(True)
    assert vpartition.boot_record() is None


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


def _running_image():
    # The bytes of the image the board runs (header: magic, header size, body size, ...).
    import struct

    import board

    running, _spare = board.ota_slots()
    bs = running.ioctl(5, 0)
    buf = bytearray(bs)
    running.readblocks(0, buf)
    hsize, body = struct.unpack_from("<II", buf, 4)
    out = bytearray(hsize + body)
    for pos in range(0, len(out), bs):
        running.readblocks(pos // bs, buf)
        k = min(bs, len(out) - pos)
        out[pos:pos + k] = buf[:k]
    return bytes(out)


def test_the_running_image_is_refused_with_nothing_written(vboard):
    # The door's same-image guard: fota.run() of the image the board runs fails at its first
    # sector; nothing is switched.
    vb.boot()
    import fota
    import vpartition

    img = _running_image()
    assert fota.init(size=len(img))
    assert _run_chunks(fota, img, 4096) == (False, True, -1)
    assert fota.isDone() == (False, True)
    assert fota.finish(True) is False
    assert vpartition.boot_record() is None


# -------------------------------------------------------------------------- finish()


def test_finish_false_abandons_and_returns_true(vboard):
    # luat_fota_end(0): ending the flow succeeded; nothing is switched.
    vb.boot()
    import fota
    import vpartition

    img = vb.image("2.0.0", 8000)
    assert fota.init(size=len(img))
    assert fota.run(img) == (True, True, 0)
    assert fota.finish(False) is True
    assert vpartition.boot_record() is None
    assert fota.finish(True) is False, "an abandoned flow cannot be switched afterwards"


def test_finish_false_after_the_switch_says_so(vboard):
    vb.boot()
    import fota
    import vpartition

    img = vb.image("2.0.0", 8000)
    assert fota.init()
    fota.run(img)
    assert fota.finish(True)
    assert fota.finish(False) is False
    assert vpartition.boot_record() == (1, "new")


# ----------------------------------------------------------------------------- file()


def test_file_ends_the_flow_then_is_done_and_finish_agree(vboard):
    vb.boot()
    import fota
    import vpartition

    assert fota.file("/missing.bin") == (False, False, 0)
    with open("/update.bin", "wb") as f:
        f.write(vb.image("3.0.0", 30000))
    assert fota.init()
    assert fota.file("/update.bin") == (True, True, 0)
    assert vpartition.boot_record() == (1, "new"), "file() switches, as done + end(1)"
    assert _poll_is_done(fota) == (True, True)
    assert fota.finish(True) is True
    assert _booted_version() == "3.0.0"


def test_file_without_init(vboard):
    vb.boot()
    import fota
    import vpartition

    with open("/update.bin", "wb") as f:
        f.write(vb.image("3.0.0", 30000))
    assert fota.file("/update.bin") == (True, True, 0)
    assert vpartition.boot_record() == (1, "new")


def test_file_larger_than_the_storage(vboard):
    vb.boot()
    import fota
    import vpartition

    with open("/update.bin", "wb") as f:
        f.write(vb.image("3.0.0", 30000))
    assert fota.init(0, 16384)
    assert fota.file("/update.bin") == (False, True, -1)
    assert vpartition.boot_record() is None


# ----------------------------------------------------------------- confirm / rollback


def test_no_update_while_unconfirmed(vboard):
    vb.boot()
    import fota
    from mpfota import confirm

    img = vb.image("2.0.0", 8000)
    assert fota.init()
    fota.run(img)
    assert fota.finish(True)
    vb.reboot()
    assert confirm.status() == "pending"
    assert not fota.init(), "an update must not overwrite the only known-good slot"
    assert fota.run(img) == (False, True, -1)
    confirm.confirm()
    assert confirm.status() == "valid"
    assert fota.init()
    assert fota.finish(False)


def test_unconfirmed_reboot_rolls_back(vboard):
    vb.boot()
    import board
    import fota
    from mpfota import confirm

    img = vb.image("2.0.0", 8000)
    fota.init()
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
    fota.init()
    fota.run(img)
    fota.finish(True)
    vb.reboot()
    confirm.confirm()
    assert vb.reboot() == 1
    assert vb.reboot() == 1
    assert board.core_version() == "2.0.0"
    assert confirm.status() == "valid"
