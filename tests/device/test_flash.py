# The simulated NOR flash behaves like a real chip, and power cuts are exact.
import vb


def test_erase_sets_ff(vboard):
    b = vb.boot()
    f = b.flash
    addr = b.slots[1][0]
    f.program(addr, b"\x00\x01\x02")
    f.erase(addr)
    buf = bytearray(8)
    f.read(addr, buf)
    assert buf == b"\xff" * 8


def test_program_over_unerased_bytes_fails(vboard):
    b = vb.boot()
    f = b.flash
    addr = b.slots[1][0]
    f.program(addr, b"\xf0")
    try:
        f.program(addr, b"\x0f")
    except OSError as e:
        assert "unerased" in str(e)
    else:
        raise AssertionError("programming over unerased bytes must fail")
    buf = bytearray(1)
    f.read(addr, buf)
    assert buf[0] == 0xF0, "a refused program must not change the flash"


def test_erase_must_be_aligned(vboard):
    b = vb.boot()
    try:
        b.flash.erase(b.slots[1][0] + 1)
    except OSError:
        return
    raise AssertionError("unaligned erase must fail")


def test_partition_writeblocks_semantics(vboard):
    vb.boot()
    import board

    running, spare = board.ota_slots()
    spare.writeblocks(0, b"\x11" * 4096)  # erases, then programs
    spare.writeblocks(0, b"\x22" * 4096)  # erases again: allowed
    spare.ioctl(6, 1)
    spare.writeblocks(1, b"\x33", 10)  # offset form programs only
    try:
        spare.writeblocks(1, b"\x44", 10)
    except OSError:
        pass
    else:
        raise AssertionError("offset writeblocks over programmed bytes must fail")
    buf = bytearray(4096)
    spare.readblocks(0, buf)
    assert buf == b"\x22" * 4096


def cut_sequence(ops):
    # Flash operations used by the host power-cut test: program, program, erase, per sector, so
    # that every operation changes the flash.
    import os

    import vpartition

    b = vpartition.open_board(os.getenv("MPFOTA_FLASH"), int(os.getenv("CUT") or "0"))
    base = b.slots[1][0]
    for i in range(int(ops)):
        sector = base + (i // 3) * 4096
        if i % 3 == 2:
            b.flash.erase(sector)
        else:
            b.flash.program(sector + (i % 3) * 16, bytes([i]) * 16)
