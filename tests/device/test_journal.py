# The one journal (mpfota.journal): CRC and sequence number; a record that exists but does not
# verify, or that contradicts the folders, never causes anything to be deleted; a later good
# update recovers. And what confirm reports around a switch (issue 14 item 9).
import vb

V1 = {"main.py": "main 1", "app/a.py": "a 1"}
V2 = {"main.py": "main 2", "app/a.py": "a 2", "app/b.py": "b 2"}
V3 = {"main.py": "main 3", "app/a.py": "a 3"}
PATH = "/.mpfota/journal"




def _tree(top="/"):
    # {path: content} of every file (the journal itself excluded).
    import os

    out = {}
    for e in os.ilistdir(top):
        p = top.rstrip("/") + "/" + e[0]
        if p.startswith("/.rom") or p.startswith(PATH):
            continue
        if e[1] == 0x4000:
            out.update(_tree(p))
        else:
            with open(p, "rb") as f:
                out[p] = f.read()
    return out


def _raw():
    with open(PATH, "rb") as f:
        return f.read()


def _put(raw):
    with open(PATH, "wb") as f:
        f.write(raw)


def _damaged(raw):
    # The ways a record is found damaged: cut short, one bit flipped, empty.
    flipped = bytearray(raw)
    flipped[len(raw) - 3] ^= 0x10
    return {"truncated": raw[: len(raw) // 2], "bit-flipped": bytes(flipped), "empty": b""}


def _nothing_moved(raw_now, replacements):
    # Boot with each replacement of the journal: nothing moved or deleted, "damaged" reported.
    import mpfota.bootapply
    from mpfota import journal

    before = _tree()
    for name, bad in replacements.items():
        _put(bad)
        assert mpfota.bootapply.run() == "damaged", name
        assert _tree() == before, name + ": a damaged journal must not move or delete files"
        assert _raw() == bad, name + ": the boot must not rewrite what it cannot read"
        if name in ("truncated", "bit-flipped", "empty"):
            assert journal.damaged(), name
    _put(raw_now)


def test_record_has_crc_and_sequence(vboard):
    vb.boot()
    from mpfota import journal

    journal.put("min", 3)
    first = journal.seq()
    journal.put("dl", {"key": "k", "offset": 0})
    assert journal.seq() == first + 1
    assert journal.load() == {"min": 3, "dl": {"key": "k", "offset": 0}}
    raw = _raw()
    assert raw[:4] == b"MPFJ" and int.from_bytes(raw[4:8], "little") == journal.seq()
    for name, bad in _damaged(raw).items():
        _put(bad)
        assert journal.load() == {} and journal.damaged(), name


def test_damaged_journal_in_each_state_deletes_nothing_and_an_update_recovers(vboard):
    vb.boot()
    from mpfota import confirm, journal, scripts

    vb.stage_scripts("v1", V1)
    assert scripts.apply_at_boot() == "pending"
    confirm.confirm()
    vb.stage_scripts("v2", V2)
    staged = _raw()
    _nothing_moved(staged, _damaged(staged))
    assert scripts.apply_at_boot() == "pending"  # the sound record still works afterwards
    pending = _raw()
    # Damaged, or replaced by the sound record of another state (the staged one).
    _nothing_moved(pending, dict(_damaged(pending), older=staged))
    _put(staged)
    assert scripts.apply_at_boot() == "damaged", "a staged record without a staged set"
    # A damaged record replaced by any other write keeps its scar: still nothing moved.
    _put(_damaged(pending)["truncated"])
    journal.put("dl", {"key": "x", "offset": 0})
    assert journal.scar()
    before = _tree()
    assert scripts.apply_at_boot() == "damaged"
    assert _tree() == before
    assert _tree()["/.mpfota/prev/main.py"] == b"main 1", "the previous set is kept"
    assert _tree()["/main.py"] == b"main 2", "the live set boots as it is"
    # A later good update recovers: a sound record again, the new set swapped in and confirmed.
    vb.stage_scripts("v3", V3)
    assert journal.scar() is None and journal.damaged() is None
    assert scripts.apply_at_boot() == "pending"
    confirm.confirm()
    assert scripts.status() == "valid" and scripts.installed()["version"] == "v3"
    for p, text in V3.items():
        assert _tree()["/" + p] == text.encode()


async def test_status_between_switch_and_reset_is_not_a_rollback(vboard, update_server):
    vb.boot()
    from mpfota import confirm, download, journal

    img = update_server["images"]["core-2.0.0"]
    await download.fetch(update_server["base"] + img["path"], md5=img["md5"])
    assert confirm.status() == "valid", "switched, not reset yet: nothing was rolled back"
    assert confirm.check_boot() == "valid"
    assert journal.get("core")["slot"] == "ota_1", "check_boot keeps a switch awaiting reset"
    vb.reboot()
    assert confirm.status() == "pending"
    vb.reboot()  # not confirmed: the bootloader rolls back
    assert confirm.status() == "rolled_back"
    assert confirm.check_boot() == "rolled_back"
    assert journal.get("core") is None and confirm.status() == "valid"


def test_scripts_only_update_is_not_called_a_new_image(vboard):
    vb.boot()
    import mpfota.bootapply
    from mpfota import confirm

    vb.stage_scripts("v1", V1)
    vb.reboot()
    assert mpfota.bootapply.run() == "pending"
    lines = vb.capture_log()
    assert confirm.check_boot() == "pending"
    assert any("new script set" in t for t in lines), lines
    assert not any("new image" in t for t in lines), lines


def test_raw_image_boot_does_not_load_the_script_code(vboard):
    import sys

    vb.boot()
    assert "mpfota.scripts" not in sys.modules, "no script set installed: nothing to apply"


async def test_damaged_journal_while_an_image_is_pending_blocks_updates_until_confirmed(
        vboard, update_server):
    vb.boot()
    from mpfota import confirm, download, journal, slot
    from mpfota.errors import FotaError

    img = update_server["images"]["core-2.0.0"]
    await download.fetch(update_server["base"] + img["path"], md5=img["md5"])
    vb.reboot()
    assert confirm.status() == "pending"
    for name, bad in _damaged(_raw()).items():
        _put(bad)
        # The record naming the pending slot is gone: the image is still not proven good.
        assert confirm.status() == "pending", name
        try:
            slot.Slot()
        except FotaError as e:
            assert "journal does not verify" in e.msg, e
        else:
            raise AssertionError(name + ": the only known-good slot must not be overwritten")
    confirm.confirm()
    assert journal.damaged() is None and confirm.status() == "valid"
    assert slot.Slot().label == "ota_0", "after the confirmation an update may start"
