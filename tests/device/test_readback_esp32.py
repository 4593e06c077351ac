# The read-back comparison of the written slot on the ESP32 board module: ESP-IDF's image check
# (and set_boot()) covers the app image only, so bytes written after it are guarded by the
# read-back alone. docs/reliability.md.
import esp32  # noqa: F401  (first: the fake teaches the bootloader ESP32 images)
import vb

BOARD = "esp32"
TIMEOUT = 60


def test_read_back_catches_damage_after_the_image(esp32_board, esp32_images):
    with open(esp32_images + "/good.bin", "rb") as f:  # before the board's filesystem is at /
        img = f.read()
    vb.boot()
    import board
    import vpartition
    from mpfota.errors import DIGEST, FOTA_ERROR, FotaError
    from mpfota.slot import Slot

    start = (len(img) + 4095) // 4096 * 4096  # the first sector wholly after the image
    data = img + bytes((i * 131 + 7) & 0xFF for i in range(start + 4096 + 700 - len(img)))
    s = Slot()
    s.write(data)
    s.finish()
    # A failing flash loses a sector that holds only bytes after the image.
    s.spare.ioctl(6, start // 4096)
    assert board.check_image(s.spare, len(data)), "ESP-IDF's image check must still accept it"
    try:
        s.verify(len(data))
    except FotaError as e:
        assert (e.code, e.reason) == (FOTA_ERROR, DIGEST), (e.code, e.reason)
        assert "read-back" in e.msg, e.msg
    else:
        raise AssertionError("a slot that differs from what was written was accepted")
    assert not s.verified
    assert vpartition.boot_record() is None
    assert board.core_version() == "1.0.0"
