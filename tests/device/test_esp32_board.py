# The ESP32 board interface (boards/esp32/board.py) on the unix port, against the fakes of
# esp32, machine and network in tests/fakes/esp32 (fixtures: tests/fixtures_esp32.py).
import board
import esp32
import machine
import network
import vpartition

BOARD = "esp32"
TIMEOUT = 60


def _image(images, name):
    with open("%s/%s.bin" % (images, name), "rb") as f:
        return f.read()


def _flash(part, data):
    # Write an image as an updater does: whole 4 KiB blocks (erase, then program).
    for i in range(0, len(data), 4096):
        block = data[i:i + 4096]
        if len(block) < 4096:
            block = block + b"\xff" * (4096 - len(block))
        part.writeblocks(i // 4096, block)


def _label(part):
    return part.info()[4]


def _exit_code(fn, *args):
    try:
        fn(*args)
    except SystemExit as e:
        return e.args[0]
    raise AssertionError("%s did not end the process" % fn.__name__)


def test_ota_slots_on_two_slot_board(esp32_board):
    running, spare = board.ota_slots()
    assert board.NAME == "esp32"
    assert board.Partition is esp32.Partition
    assert _label(running) == "ota_0" and _label(spare) == "ota_1"
    assert running.info()[1] == 0x10 and spare.info()[1] == 0x11
    assert spare.info()[3] == 128 * 1024
    assert [_label(p) for p in esp32.Partition.find(esp32.Partition.TYPE_APP)] == ["ota_0", "ota_1"]
    assert [_label(p) for p in esp32.Partition.find(label="ota_1")] == ["ota_1"]
    try:
        esp32.Partition("factory")
    except OSError as e:
        assert e.errno == 2
    else:
        raise AssertionError("this table has no factory partition")


def test_no_ota_slots_is_a_clear_error(esp32_board):
    esp32.sim_partition_table("factory")
    running = esp32.Partition(esp32.Partition.RUNNING)
    assert _label(running) == "factory"
    try:
        running.get_next_update()
    except OSError as e:
        assert e.errno == 2  # what MicroPython raises: ENOENT
    else:
        raise AssertionError("a factory-only table has no next update partition")
    try:
        board.ota_slots()
    except OSError as e:
        msg = str(e)
        assert e.errno == 2
        assert "factory" in msg and "ota_0" in msg and "OTA" in msg, msg
    else:
        raise AssertionError("ota_slots() must refuse a table without OTA slots")


def test_no_ota_slots_from_the_environment(esp32_factory_board):
    try:
        board.ota_slots()
    except OSError as e:
        assert "partitions-4MiB-ota.csv" in str(e)
    else:
        raise AssertionError("MPFOTA_ESP32_TABLE=factory must hide the OTA slots")
    assert [_label(p) for p in esp32.Partition.find()] == ["factory"]
    try:
        esp32.Partition(esp32.Partition.RUNNING).set_boot()
    except OSError:
        pass
    else:
        raise AssertionError("set_boot() needs an otadata partition")


def test_check_image_accepts_valid_images(esp32_board, esp32_images):
    _, spare = board.ota_slots()
    for name in ("good", "one_segment", "nohash", "noversion"):
        img = _image(esp32_images, name)
        _flash(spare, img)
        assert board.check_image(spare, len(img)), name
        assert board.check_image(spare, 128 * 1024), name  # room after the image is fine
        assert board.app_image_length(spare, len(img)) == len(img), name
        # Any buffer size gives the same answer (streamed in chunks of len(buf)).
        assert board.check_image(spare, len(img), bytearray(40)), name
        assert board.check_image(spare, len(img), bytearray(10000)), name


def test_check_image_refuses_damaged_images(esp32_board, esp32_images):
    _, spare = board.ota_slots()
    for name in ("bad_flipped", "bad_flipped_nohash", "bad_magic", "bad_segments",
                 "bad_truncated", "bad_hash", "bad_checksum", "bad_chip", "bad_mpfi"):
        img = _image(esp32_images, name)
        _flash(spare, img)
        assert not board.check_image(spare, len(img)), name
        assert not board.check_image(spare, 128 * 1024), name
    good = _image(esp32_images, "good")
    _flash(spare, good)
    assert not board.check_image(spare, len(good) - 1), "the image must fit the given length"
    assert not board.check_image(spare, 0)
    spare.ioctl(6, 0)  # erase the first block: no header
    assert not board.check_image(spare, len(good))


def test_set_boot_refuses_what_does_not_verify(esp32_board, esp32_images):
    running, spare = board.ota_slots()
    before = vpartition.boot_record()
    for name in ("bad_flipped", "bad_hash", "bad_chip", "bad_mpfi"):
        _flash(spare, _image(esp32_images, name))
        try:
            spare.set_boot()
        except OSError as e:
            assert e.errno == -0x1503, e  # ESP_ERR_OTA_VALIDATE_FAILED, as MicroPython raises
        else:
            raise AssertionError("set_boot() accepted %s" % name)
    assert vpartition.boot_record() == before
    assert _label(esp32.Partition(esp32.Partition.BOOT)) == "ota_0"


def test_update_confirmed_stays(esp32_board, esp32_images):
    assert board.core_version() == "1.0.0"
    running, spare = board.ota_slots()
    img = _image(esp32_images, "good")
    _flash(spare, img)
    assert board.check_image(spare, len(img))
    spare.set_boot()
    assert vpartition.boot_record() == (1, "new")
    assert _label(esp32.Partition(esp32.Partition.BOOT)) == "ota_1"
    assert vpartition.bootloader() == 1  # power on: the new app, pending verification
    assert vpartition.boot_record() == (1, "pending")
    assert _label(esp32.Partition(esp32.Partition.RUNNING)) == "ota_1"
    assert board.core_version() == "2.0.0"
    esp32.Partition.mark_app_valid_cancel_rollback()
    assert vpartition.boot_record() == (1, "valid")
    assert vpartition.bootloader() == 1
    assert board.core_version() == "2.0.0"
    running, spare = board.ota_slots()
    assert _label(running) == "ota_1" and _label(spare) == "ota_0"


def test_update_not_confirmed_rolls_back(esp32_board, esp32_images):
    _, spare = board.ota_slots()
    _flash(spare, _image(esp32_images, "one_segment"))
    spare.set_boot()
    assert vpartition.bootloader() == 1
    assert board.core_version() == "2.0.1"
    assert vpartition.bootloader() == 0  # booted once without confirmation: roll back
    assert vpartition.boot_record() == (1, "aborted")
    assert board.core_version() == "1.0.0"
    # esp_ota_get_boot_partition() skips an aborted record: the app that boots next.
    assert _label(esp32.Partition(esp32.Partition.BOOT)) == "ota_0"
    assert vpartition.bootloader() == 0


def test_bootloader_skips_a_slot_damaged_after_set_boot(esp32_board, esp32_images):
    _, spare = board.ota_slots()
    _flash(spare, _image(esp32_images, "good"))
    spare.set_boot()
    spare.ioctl(6, 2)  # the image loses a block before the next boot
    assert vpartition.bootloader() == 0
    assert board.core_version() == "1.0.0"


def test_core_version_falls_back_to_the_micropython_release(esp32_board, esp32_images):
    import sys

    _, spare = board.ota_slots()
    _flash(spare, _image(esp32_images, "noversion"))
    spare.set_boot()
    vpartition.bootloader()
    assert _label(esp32.Partition(esp32.Partition.RUNNING)) == "ota_1"
    assert board.core_version() == "%d.%d.%d" % sys.implementation.version[:3]


def test_reset_cause_mapping(esp32_board):
    assert board.reset_cause() == "power_on"  # MPFOTA_RESET_CAUSE unset: a power-on
    expect = {machine.PWRON_RESET: "power_on", machine.HARD_RESET: "hard",
              machine.WDT_RESET: "watchdog", machine.DEEPSLEEP_RESET: "deepsleep",
              machine.SOFT_RESET: "soft", 0: "hard"}
    for cause, name in expect.items():
        machine.sim_reset_cause(cause)
        assert board.reset_cause() == name, (cause, board.reset_cause())


def test_reset_and_sleep_end_the_boot(esp32_board, esp32_images):
    import json

    assert _exit_code(board.reset) == 64
    assert _exit_code(board.soft_reset) == 65
    assert _exit_code(board.deepsleep, 1500) == 66
    with open(esp32_board + "/wake.json") as f:
        assert json.load(f) == {"ms": 1500}
    # After set_boot() only a reset starts the new app: a deep-sleep wake would not.
    _, spare = board.ota_slots()
    _flash(spare, _image(esp32_images, "good"))
    spare.set_boot()
    assert _exit_code(board.deepsleep, 1500) == 64


def test_identity(esp32_board):
    import json

    with open(esp32_board + "/board.json") as f:
        cfg = json.load(f)
    mac = board.mac()
    assert mac == cfg["mac"]
    parts = mac.split(":")
    assert len(parts) == 6 and all(len(p) == 2 and p == p.lower() for p in parts), mac
    assert board.unique_id() == bytes(int(p, 16) for p in parts)
    assert board.imei() is None


def test_network_up_wifi(esp32_board):
    import time

    assert not board.network_up()
    network.sim_wifi(delay_ms=80, ssid="shop", key="secret")
    sta = network.WLAN(network.STA_IF)
    try:
        sta.connect("shop", "secret")
    except OSError:
        pass
    else:
        raise AssertionError("connect() before active(True) must fail")
    sta.active(True)
    sta.connect("shop", "wrong")
    time.sleep_ms(100)
    assert not board.network_up()
    assert sta.status() == network.STAT_WRONG_PASSWORD
    sta.connect("shop", "secret")
    assert not board.network_up(), "connected before the delay"
    assert sta.status() == network.STAT_CONNECTING
    time.sleep_ms(100)
    assert board.network_up()
    assert network.WLAN(network.STA_IF).ifconfig()[0] != "0.0.0.0"
    sta.active(False)
    assert not board.network_up()


def test_network_up_lan(esp32_board):
    network.sim_lan(link=False)
    assert not board.network_up()  # no LAN object yet: network.LAN() refuses, no Wi-Fi
    lan = network.LAN(mdc=23, mdio=18, phy_type=network.PHY_LAN8720)
    lan.active(True)
    assert not board.network_up()  # cable out
    network.sim_lan(link=True)
    assert board.network_up()
    assert network.LAN() is lan
