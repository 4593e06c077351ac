# The one door to the spare slot (mpfota.slot): the same-image guard on every route, one read
# of the slot per verify, progress logged every 10 %, and a raw-image update that loads no
# script-set, package or delta code.
import vb

TIMEOUT = 90



def _spare_head():
    import board

    _, spare = board.ota_slots()
    head = bytearray(4096)
    spare.readblocks(0, head)
    return bytes(head)


def _running_image():
    # The bytes of the image the board runs (header + body), read from the running slot.
    import board

    running, _ = board.ota_slots()
    head = bytearray(64)
    running.readblocks(0, head)
    data = bytearray(64 + int.from_bytes(head[8:12], "little"))
    running.readblocks(0, data)
    return data


def _nothing_written(before):
    import vpartition

    assert vpartition.boot_record() is None, "nothing may be switched"
    assert _spare_head() == before, "nothing may be written into the spare slot"


async def test_download_of_the_running_image_stops_after_the_header(vboard, update_server):
    vb.boot()
    from mpfota import download
    from mpfota.errors import ALREADY_RUNNING, SAME

    before = _spare_head()
    lines = vb.capture_log()
    img = update_server["images"]["core-1.0.0"]
    try:
        await download.fetch(update_server["base"] + img["path"], md5=img["md5"])
    except Exception as e:
        assert (e.code, e.reason) == (ALREADY_RUNNING, SAME), e
    else:
        raise AssertionError("the running image must not be installed again")
    assert any("already running this image" in t for t in lines), lines
    _nothing_written(before)


async def test_same_version_with_another_body_is_installed(vboard, update_server):
    vb.boot()
    import board
    from mpfota import download

    img = update_server["images"]["core-1.0.0-rebuilt"]
    r = await download.fetch(update_server["base"] + img["path"], sha256=img["sha256"])
    assert r.size == img["size"]
    vb.reboot()
    assert board.core_version() == "1.0.0"
    assert board.ota_slots()[0].info()[4] == "ota_1", "the rebuilt image booted"


async def test_libfota2_gives_result_4_for_the_running_image(vboard, update_server):
    vb.boot()
    import libfota2
    import lsys

    lsys.PROJECT, lsys.VERSION, lsys.PRODUCT_KEY = "DEMO", "001.000.000", "pk"
    before = _spare_head()
    got = []
    img = update_server["images"]["core-1.0.0"]
    libfota2.request(got.append, {"url": "###" + update_server["base"] + img["path"]})
    await lsys.arun()
    assert got == [4]
    _nothing_written(before)


def test_fota_module_refuses_the_running_image(vboard):
    vb.boot()
    import fota

    before = _spare_head()
    img = _running_image()
    assert fota.init()
    fota.run(img)
    assert fota.finish(True) is False
    _nothing_written(before)


async def _install(kit, name):
    from mpfota import http, package

    resp = await http.request("GET", kit["base"] + kit["packages"][name]["path"],
                              bytearray(1024))
    try:
        return await package.install(resp, project=kit["project"], version="001.000.000")
    finally:
        await resp.aclose()


async def test_package_with_the_running_core_installs_only_its_scripts(vboard, package_kit):
    vb.boot()
    from mpfota import scripts

    for name in ("same-core-scripts", "same-core-delta-scripts"):
        scripts.discard()
        before = _spare_head()
        m = await _install(package_kit, name)
        assert m.to["core"] == "1.0.0", name
        _nothing_written(before)
        assert scripts.staged()["version"] == m.to["script"], name


def test_one_read_of_the_slot_per_verify(vboard):
    vb.boot()
    from mpfota import slot

    img = vb.image("2.0.0", 50000)
    s = slot.Slot()
    s.write(img)
    reads = slot.reads
    s.verify(len(img))
    assert slot.reads == reads + 1


def test_read_back_refuses_a_sector_that_changed_after_the_write(vboard):
    # The written bytes must be read back: damage one sector after it was programmed.
    vb.boot()
    from mpfota import slot
    from mpfota.errors import DIGEST, FotaError

    img = vb.image("2.0.0", 20000)
    s = slot.Slot()
    s.write(img)
    s.finish()
    s.spare.writeblocks(2, bytes(4096))
    try:
        s.verify(len(img))
    except FotaError as e:
        assert e.reason == DIGEST and "read-back" in e.msg, e
    else:
        raise AssertionError("a changed sector must be refused")
    try:
        s.switch()
    except FotaError as e:
        assert "unverified" in e.msg
    else:
        raise AssertionError("an unverified slot must never be switched to")


async def test_progress_every_10_percent_and_no_script_package_delta_code(vboard,
                                                                          update_server):
    import sys

    vb.boot()
    from mpfota import download

    lines = vb.capture_log()
    img = update_server["images"]["core-3.0.0"]
    await download.fetch(update_server["base"] + img["path"], md5=img["md5"])
    tenths = [int(t.split("received ")[1].split("%")[0]) for t in lines if "received" in t]
    # One line per tenth crossed (a read of 4 KiB may cross none or, near the end, skip one).
    assert tenths == sorted(set(tenths)) and tenths[-1] == 100 and len(tenths) >= 8, tenths
    assert all(t % 10 == 0 for t in tenths), tenths
    loaded = [m for m in ("mpfota.scripts", "mpfota.package", "mpfota.delta",
                          "mpfota.deltafmt") if m in sys.modules]
    assert not loaded, loaded


def test_unconfirmed_image_refuses_a_new_slot(vboard):
    vb.boot()
    from mpfota import slot
    from mpfota.errors import FotaError

    img = vb.image("2.0.0", 9000)
    s = slot.Slot()
    s.write(img)
    s.verify(len(img))
    s.switch("2.0.0")
    vb.reboot()
    assert slot.unconfirmed() == "image"
    try:
        slot.Slot()
    except FotaError as e:
        assert "not confirmed" in e.msg
    else:
        raise AssertionError("the only known-good slot must not be overwritten")


async def test_luat_update_gives_cb_false_for_the_running_image(vboard, update_server):
    vb.boot()
    import lsys
    import update

    lsys.PROJECT, lsys.VERSION, lsys.PRODUCT_KEY = "LUAT_DEMO", "1.0.1", "PK9"
    before = _spare_head()
    lines = vb.capture_log()
    got = []

    def cb(ok):
        got.append(ok)
        lsys.stop()

    lsys.timerStart(lsys.stop, 30000)
    update.request(cb, update_server["base"] + update_server["images"]["core-1.0.0"]["path"])
    await lsys.arun()
    assert got == [False]
    assert any("already running this image" in t for t in lines), lines
    _nothing_written(before)


async def test_aliyun_job_for_the_running_image_reports_the_version(vboard, update_server):
    vb.boot()
    import asyncio
    import json

    import aliyun_ota

    ota = aliyun_ota.AliyunOta("pk", "dn", "ds", progress_interval_ms=0, version="1.0.0")
    steps = []
    reported = []
    ota.report = lambda step, desc="", module=None: steps.append(step) or True
    ota.verRpt = lambda: reported.append(ota.version())
    ota.mqtt = object()
    before = _spare_head()
    img = update_server["images"]["core-1.0.0"]
    job = {"url": update_server["base"] + img["path"], "size": img["size"], "md5": img["md5"],
           "version": "1.0.1"}  # the job names another version; the image is the running one
    ota._handle(json.dumps({"data": job}))
    for _ in range(500):
        if reported or (steps and steps[-1] < 0):
            break
        await asyncio.sleep_ms(10)
    assert reported == ["1.0.0"], (reported, steps)
    assert all(0 < s < 100 for s in steps), steps  # progress only: neither failure nor success
    _nothing_written(before)
