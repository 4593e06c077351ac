# The unconfirmed-update guard on a plain download (download.fetch of a raw image): while the
# running image is pending confirmation, the other slot holds the only known-good image, so a
# new download is refused before a byte of it is written. docs/reliability.md.
import vb

TIMEOUT = 90


def _slot_bytes(part, n=8192):
    buf = bytearray(n)
    part.readblocks(0, buf)
    return bytes(buf)


async def test_download_refused_while_the_running_image_is_pending(vboard, update_server):
    vb.boot()
    import board
    import vpartition
    from mpfota import confirm, download
    from mpfota.errors import FOTA_ERROR, FotaError

    two, three = update_server["images"]["core-2.0.0"], update_server["images"]["core-3.0.0"]
    r = await download.fetch(update_server["base"] + two["path"], md5=two["md5"])
    assert r.status == 200
    assert vb.reboot() == 1
    assert confirm.status() == "pending" and board.core_version() == "2.0.0"
    running, spare = board.ota_slots()
    known_good = _slot_bytes(spare)  # the old image: the only one known to boot
    record = vpartition.boot_record()
    try:
        await download.fetch(update_server["base"] + three["path"], md5=three["md5"])
    except FotaError as e:
        assert e.code == FOTA_ERROR, e.code
        assert "not confirmed" in e.msg, e.msg
    else:
        raise AssertionError("a download over the only known-good image was accepted")
    assert _slot_bytes(spare) == known_good, "the known-good slot was written"
    assert vpartition.boot_record() == record
    # Once the running image is confirmed, the same download goes through.
    confirm.confirm()
    r = await download.fetch(update_server["base"] + three["path"], md5=three["md5"])
    assert r.status == 200 and vpartition.boot_record() == (0, "new")
