# Damaged streamed patches against the real applier (MicroPython's deflate, the viper interpreter
# and its Python twin): random bit flips in the units, their unit CRCs sealed again so that they
# reach the decoder and the op loop, and random cuts. Each must end in PatchError or in exactly
# the announced image, the same way with both interpreters; nothing else (no other exception,
# no write outside the sector buffer).
import test_deltastream as common
import vb

TIMEOUT = 180
CASES = 80



def _reseal_units(buf):
    import binascii
    import struct

    from mpfota.deltastream import HEADER_SIZE, UNIT_SIZE

    at = HEADER_SIZE
    while at + UNIT_SIZE <= len(buf):
        packed = struct.unpack_from("<H", buf, at)[0]
        body = memoryview(buf)[at + UNIT_SIZE:at + UNIT_SIZE + packed]
        struct.pack_into("<I", buf, at + 10, binascii.crc32(body) & 0xFFFFFFFF)
        at += UNIT_SIZE + packed


def test_damaged_patches_are_refused_or_exact(delta_stream_pairs):
    from mpfota import deltastream
    from mpfota.deltastream import HEADER_SIZE, PatchError

    pair = delta_stream_pairs[0]
    with open(pair["patch"], "rb") as f:
        good = f.read()
    damaged = pair["patch"] + ".fuzz"
    rng = vb.Rng(0x2468ACE)
    viper = deltastream.work
    twin = common.python_twin()
    outcomes = {}
    try:
        for case in range(CASES):
            buf = bytearray(good)
            if rng.next(5):
                for _ in range(1 + rng.next(3)):
                    buf[HEADER_SIZE + rng.next(len(buf) - HEADER_SIZE)] ^= 1 << rng.next(8)
                _reseal_units(buf)
            else:
                buf = buf[:HEADER_SIZE + rng.next(len(buf) - HEADER_SIZE)]
            with open(damaged, "wb") as f:
                f.write(buf)
            results = []
            for kernel in (viper, twin):
                deltastream.work = kernel
                try:
                    got = common._apply_file(pair["old"], damaged)
                    results.append("exact" if got == pair["sha256"] else "WRONG")
                except PatchError as e:
                    results.append(str(e))
            # The viper interpreter and its Python twin end the same way, message and all.
            assert results[0] == results[1], (case, results)
            result = results[0].split(":")[0][:24]
            assert result != "WRONG", case
            outcomes[result] = outcomes.get(result, 0) + 1
    finally:
        deltastream.work = viper
    print("outcomes", outcomes)
    assert sum(outcomes.values()) == CASES and len(outcomes) >= 3
