# Delta updates on the virtual board: the real firmware pair end to end, and every class of bad
# patch refused with FotaError(-9) and nothing switched (fixtures: tests/fixtures_delta.py).
import vb

TIMEOUT = 120


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _place(data):
    # After vb.boot(): the patch where the package code leaves it.
    import os

    try:
        os.mkdir("/.mpfota")
    except OSError:
        pass
    with open("/.mpfota/patch.bin", "wb") as f:
        f.write(data)


def _refused(delta_set, name):
    data = _read(delta_set["bad"][name])
    vb.boot()
    _place(data)
    import board
    import vpartition
    from mpfota import delta
    from mpfota.errors import FotaError

    try:
        delta.apply()
    except FotaError as e:
        assert e.code == -9, e
        assert delta_set["expect"][name] in e.msg, (name, e.msg)
    else:
        raise AssertionError("bad patch %s was applied" % name)
    assert vpartition.boot_record() is None, "nothing may be switched"
    assert board.core_version() == delta_set["old_version"]
    assert vb.reboot() == 0


def test_corpus_pair_end_to_end(delta_corpus, delta_corpus_board):
    data = _read(delta_corpus["patch"])
    vb.boot()
    _place(data)
    del data
    import board
    import vpartition
    from mpfota import confirm, delta

    assert board.core_version() == "1.9.4"
    seen = []
    h = delta.apply(version=delta_corpus["new_version"], progress=lambda d, t: seen.append(d))
    assert h.to_size == delta_corpus["size"]
    assert seen[-1] == h.to_size and seen == sorted(seen)
    assert vpartition.boot_record() == (1, "new")
    assert vb.reboot() == 1
    assert board.core_version() == "1.10"
    assert confirm.status() == "pending"
    # The slot now running holds exactly the new image.
    import binascii
    import hashlib

    running, _ = board.ota_slots()
    buf = bytearray(4096)
    digest = hashlib.sha256()
    left = delta_corpus["size"]
    block = 0
    while left:
        k = min(left, 4096)
        running.readblocks(block, buf)
        digest.update(memoryview(buf)[:k])
        left -= k
        block += 1
    assert binascii.hexlify(digest.digest()).decode() == delta_corpus["sha256"]


def test_small_pair_apply_without_switch_then_again(delta_small, delta_small_board):
    # Applying twice (as after a power cut) gives the same verified slot; switch=False leaves
    # the boot record alone.
    data = _read(delta_small["patch"])
    vb.boot()
    _place(data)
    import vpartition
    from mpfota import delta

    delta.apply(switch=False)
    assert vpartition.boot_record() is None
    from mpfota.slot import Slot

    slot = Slot()
    h = delta.apply(slot=slot)
    assert slot.verified and h.to_size == delta_small["size"]
    assert vpartition.boot_record() == (1, "new")
    assert vb.reboot() == 1
    import board

    assert board.core_version() == "2.0.0"


def test_missing_patch_file(delta_small_board):
    vb.boot()
    from mpfota import delta
    from mpfota.errors import FotaError

    try:
        delta.apply("/.mpfota/none.bin")
    except FotaError as e:
        assert e.code == -9 and "cannot read" in e.msg
    else:
        raise AssertionError("a missing patch was applied")


def test_refuses_bad_magic(delta_small, delta_small_board):
    _refused(delta_small, "magic")


def test_refuses_cut_header(delta_small, delta_small_board):
    _refused(delta_small, "header_cut")


def test_refuses_truncated_patch(delta_small, delta_small_board):
    _refused(delta_small, "truncated")


def test_refuses_body_crc(delta_small, delta_small_board):
    _refused(delta_small, "body_crc")


def test_refuses_header_crc(delta_small, delta_small_board):
    _refused(delta_small, "header_crc")


def test_refuses_bad_deflate_data(delta_small, delta_small_board):
    _refused(delta_small, "bad_deflate")


def test_refuses_bad_varint(delta_small, delta_small_board):
    _refused(delta_small, "bad_varint")


def test_refuses_runs_past_the_diff(delta_small, delta_small_board):
    _refused(delta_small, "runs_overflow")


def test_refuses_wrong_base(delta_small, delta_small_board):
    _refused(delta_small, "wrong_base")


def test_refuses_output_longer_than_announced(delta_small, delta_small_board):
    _refused(delta_small, "too_long")


def test_refuses_output_shorter_than_announced(delta_small, delta_small_board):
    _refused(delta_small, "too_short")


def test_refuses_seek_out_of_range(delta_small, delta_small_board):
    _refused(delta_small, "seek")


def test_refuses_wrong_result_digest(delta_small, delta_small_board):
    _refused(delta_small, "wrong_result")


def test_refuses_while_pending(delta_small, delta_small_board):
    # A pending (unconfirmed) image: the other slot is the only known-good one.
    data = _read(delta_small["patch"])
    vb.boot()
    _place(data)
    from mpfota import delta

    delta.apply()
    assert vb.reboot() == 1
    from mpfota.errors import FotaError

    try:
        delta.apply()
    except FotaError as e:
        assert "not confirmed" in e.msg
    else:
        raise AssertionError("applied over the only known-good slot")
