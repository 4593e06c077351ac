# The read-back comparison of the written slot is the only guard for bytes the image check does
# not read: here, on the unix board, the bytes of a download after the image (the image check
# covers the header and the body its header announces). docs/reliability.md.
import vb

TAIL = 3 * 4096 + 900  # bytes after the image: a sector of them lies wholly past the image


def _tail():
    return bytes((i * 131 + 7) & 0xFF for i in range(TAIL))


def test_read_back_catches_damage_the_image_check_cannot_see(vboard):
    vb.boot()
    import board
    import vpartition
    from mpfota.errors import DIGEST, FOTA_ERROR, FotaError
    from mpfota.slot import Slot

    img = vb.image("2.0.0", 6000)  # header + body end at 6064: inside sector 1
    data = img + _tail()
    s = Slot()
    s.write(data)
    s.finish()
    b = vpartition.board()
    spare = 1 - b.running
    # A failing flash loses sector 2 after it was written: only bytes after the image change.
    s.spare.ioctl(6, 2)
    assert vpartition.image_ok(b, spare, len(data)), "the image check must still accept it"
    try:
        s.verify(len(data))
    except FotaError as e:
        assert (e.code, e.reason) == (FOTA_ERROR, DIGEST), (e.code, e.reason)
        assert "read-back" in e.msg, e.msg
    else:
        raise AssertionError("a slot that differs from what was written was accepted")
    try:
        s.switch("2.0.0")
    except FotaError as e:
        assert "unverified" in e.msg, e.msg
    else:
        raise AssertionError("switched to a slot that failed verification")
    assert vpartition.boot_record() is None
    assert board.core_version() != "2.0.0"
