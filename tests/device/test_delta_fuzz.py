# Damaged patches against the real applier (MicroPython's deflate, the board's flash): random
# byte changes, sealed again with valid CRCs so that they reach the DEFLATE decoder and the
# apply loop. Each one must end in FotaError(-9) or in a verified image; nothing else.
import vb

TIMEOUT = 120
CASES = 120



def _reseal(buf):
    import binascii
    import struct

    from mpfota.deltafmt import BODY_CRC_AT, HEADER_SIZE

    mv = memoryview(buf)
    struct.pack_into("<I", buf, BODY_CRC_AT, binascii.crc32(mv[HEADER_SIZE:]) & 0xFFFFFFFF)
    struct.pack_into("<I", buf, HEADER_SIZE - 4,
                     binascii.crc32(mv[:HEADER_SIZE - 4]) & 0xFFFFFFFF)


def test_resealed_mutations_refused_or_verified(delta_small, delta_small_board):
    with open(delta_small["patch"], "rb") as f:
        good = f.read()
    vb.boot()
    import os

    import vpartition
    from mpfota import delta
    from mpfota.deltafmt import HEADER_SIZE
    from mpfota.errors import FotaError
    from mpfota.slot import Slot

    os.mkdir("/.mpfota")
    rng = vb.Rng(0x1234567)
    upd = Slot()
    outcomes = {}
    for case in range(CASES):
        buf = bytearray(good)
        for _ in range(1 + rng.next(3)):
            # Mostly the streams; sometimes the stream table of the header.
            if rng.next(4):
                at = HEADER_SIZE + rng.next(len(buf) - HEADER_SIZE)
            else:
                at = 88 + rng.next(HEADER_SIZE - 92)
            buf[at] ^= 1 << rng.next(8)
        _reseal(buf)
        with open("/.mpfota/patch.bin", "wb") as f:
            f.write(buf)
        try:
            delta.apply(slot=upd, switch=False)
            result = "applied"
            assert upd.verified
        except FotaError as e:
            # -10: the mutation rebuilt the running image's header (refused, nothing written).
            assert e.code in (-9, -10), e
            result = e.msg.replace("delta: ", "").split(" ")[0]
        outcomes[result] = outcomes.get(result, 0) + 1
        upd.verified = False
    print("outcomes", outcomes)
    assert vpartition.boot_record() is None
    assert sum(outcomes.values()) == CASES
    assert len(outcomes) >= 3, outcomes  # the mutations reach several different checks
