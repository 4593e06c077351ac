# The engine on the ESP32 board module (boards/esp32 against tests/fakes/esp32): an ESP-IDF app
# image is downloaded, checked as ESP-IDF does, switched, confirmed or rolled back.
import esp32  # noqa: F401  (first: the fake teaches the bootloader ESP32 images)
import vb

BOARD = "esp32"
TIMEOUT = 60


async def test_update_confirm_and_rollback(esp32_board, update_server):
    vb.boot()
    import board
    import vpartition
    from mpfota import confirm, download

    assert board.NAME == "esp32"
    img = update_server["images"]["esp32-2.0.0"]
    r = await download.fetch(update_server["base"] + img["path"], md5=img["md5"])
    assert r.status == 200
    assert vpartition.boot_record() == (1, "new")
    assert vb.reboot() == 1
    assert confirm.status() == "pending"
    assert vb.reboot() == 0, "not confirmed: the bootloader rolls back"
    assert confirm.check_boot() == "rolled_back"


async def test_a_version_that_is_not_text_is_read_as_text(esp32_board, update_server):
    # ESP-IDF boots an image whatever bytes its version field holds: installed, and its
    # version reads with "?" for them (reading it used to raise UnicodeError).
    vb.boot()
    import board
    from mpfota import download

    img = update_server["images"]["esp32-version-not-text"]
    r = await download.fetch(update_server["base"] + img["path"], md5=img["md5"])
    assert r.status == 200
    assert board.image_version(board.ota_slots()[1]) == "2.0.??"
    assert vb.reboot() == 1
    assert board.core_version() == "2.0.??"


async def test_unix_image_is_refused_on_esp32(esp32_board, update_server):
    vb.boot()
    import vpartition
    from mpfota import download

    img = update_server["images"]["core-2.0.0"]
    try:
        await download.fetch(update_server["base"] + img["path"])
    except Exception as e:
        assert e.code == -9 and "bootable" in str(e)
    else:
        raise AssertionError("an image for another board must be refused")
    assert vpartition.boot_record() is None


async def test_one_read_of_the_slot_and_the_running_app_refused(esp32_board, update_server):
    vb.boot()
    import board
    import vpartition
    from mpfota import download, slot
    from mpfota.errors import ALREADY_RUNNING, FotaError

    # The app the board runs, byte for byte, through the door: refused before the first write.
    running, spare = board.ota_slots()
    app = bytearray(board.app_image_length(running, running.info()[3]))
    running.readblocks(0, app)
    blank = bytearray(4096)
    spare.readblocks(0, blank)
    try:
        slot.Slot().write(app)
    except FotaError as e:
        assert e.code == ALREADY_RUNNING, e
    else:
        raise AssertionError("the running app must not be written again")
    after = bytearray(4096)
    spare.readblocks(0, after)
    assert after == blank and vpartition.boot_record() is None
    # A new app that carries its SHA-256 and ends where the download ends: set_boot() reads
    # and checks every byte of it, so the door does not read the slot a second time.
    img = update_server["images"]["esp32-2.0.0"]
    reads = slot.reads
    await download.fetch(update_server["base"] + img["path"], md5=img["md5"])
    assert slot.reads == reads
    assert vpartition.boot_record() == (1, "new")


def test_damage_inside_the_image_is_refused_by_set_boot(esp32_board, esp32_images):
    # With no read-back of its own, the door leaves a sector the flash got wrong inside the
    # image to set_boot()'s SHA-256: refused at the switch, nothing switched, no record left.
    with open(esp32_images + "/good.bin", "rb") as f:  # before the board's filesystem is at /
        app = f.read()
    with open(esp32_images + "/nohash.bin", "rb") as f:
        nohash = f.read()
    vb.boot()
    import vpartition
    from mpfota import journal, slot
    from mpfota.errors import IMAGE, FotaError

    # An image without its SHA-256 has only a one-byte checksum for set_boot(): read back.
    s = slot.Slot()
    s.write(nohash)
    reads = slot.reads
    s.verify(len(nohash))
    assert slot.reads == reads + 1, "an image without its SHA-256 must be read back"
    s = slot.Slot()
    s.write(app)
    reads = slot.reads
    s.verify(len(app))
    assert slot.reads == reads, "an image set_boot() checks whole is not read back"
    s.spare.writeblocks(1, bytes(4096))  # the flash lost a sector of the body
    try:
        s.switch("2.0.0")
    except FotaError as e:
        assert e.reason == IMAGE and "set_boot" in e.msg, e
    else:
        raise AssertionError("a damaged image must not become the boot slot")
    assert vpartition.boot_record() is None
    assert journal.get("core") is None


def test_read_back_is_the_guard_of_what_the_header_check_does_not_read(esp32_board,
                                                                       esp32_images):
    # Bytes after the image are not covered by set_boot()'s check, so such a download is read
    # back whole: a sector that changed after it was written, inside the body or after the
    # image, is the read-back's to refuse, with its reason.
    with open(esp32_images + "/good.bin", "rb") as f:  # before the board's filesystem is at /
        app = f.read()
    vb.boot()
    import vpartition
    from mpfota import slot
    from mpfota.errors import DIGEST, FotaError

    tail = bytes(range(256)) * 32  # 8 KiB after the image: no image check covers it
    for sector in (2, (len(app) + 4095) // 4096):
        s = slot.Slot()
        s.write(app + tail)
        s.finish()
        s.spare.writeblocks(sector, bytes(4096))
        try:
            s.verify(len(app) + len(tail))
        except FotaError as e:
            assert e.reason == DIGEST and "read-back" in e.msg, e
        else:
            raise AssertionError("sector %d changed after the write must be refused" % sector)
    assert vpartition.boot_record() is None
