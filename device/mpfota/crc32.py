# CRC-32 (the one of zlib and binascii.crc32) four bytes a step, in viper: "slicing by 4",
# a 4 KiB table. MicroPython's binascii.crc32 looks up a 16-entry table twice per byte; this
# is ~2.5 times faster on the unix port. The door (mpfota.slot) uses it for the resume CRC of
# long downloads, where that CRC is most of the engine's own work (docs/engine.md, "Memory").
#
#   f = crc32.fast()          # a function like binascii.crc32, holding its table
#   f = crc32.fast(bytearray(4096))   # the table in a buffer the caller took
#   crc = f(data, crc)
#
# Ports without viper fail to import this module, as does an .mpy built for another
# architecture (ValueError); the caller then keeps binascii.crc32.
# Bytes are read one at a time, so any byte order and any alignment of `data` work.
import micropython


@micropython.viper
def _fill(t: ptr32):
    # t[0:256]: the byte table of the reflected polynomial; t[256k + i]: that table applied k
    # more times (the contribution of byte i seen k bytes earlier).
    # The polynomial built at run time: as one constant it would be an object on a 32-bit port.
    poly = (uint(0xEDB8) << 16) | uint(0x8320)
    i = 0
    while i < 256:
        c = uint(i)
        k = 0
        while k < 8:
            if c & 1:
                c = (c >> 1) ^ poly
            else:
                c = c >> 1
            k += 1
        t[i] = c
        i += 1
    while i < 1024:  # i goes on from 256
        c = uint(t[i - 256])
        t[i] = (c >> 8) ^ uint(t[c & 0xFF])
        i += 1


@micropython.viper
def _update(buf: ptr8, n: int, c: uint, t: ptr32) -> uint:
    # c: the register (the CRC inverted), 32 bits on any port.
    i = 0
    m = n - 3
    while i < m:
        c ^= uint(buf[i]) | (uint(buf[i + 1]) << 8) | (uint(buf[i + 2]) << 16) | (
            uint(buf[i + 3]) << 24)
        c = (uint(t[768 + (c & 0xFF)]) ^ uint(t[512 + ((c >> 8) & 0xFF)])
             ^ uint(t[256 + ((c >> 16) & 0xFF)]) ^ uint(t[c >> 24]))
        i += 4
    while i < n:
        c = uint(t[(c ^ uint(buf[i])) & 0xFF]) ^ (c >> 8)
        i += 1
    return c


def fast(t=None):
    # A function (data, crc=0) -> CRC-32 with its table in t (4 KiB, made when not given).
    if t is None:
        t = bytearray(4096)
    if len(t) != 4096:
        raise ValueError("the CRC table takes 4096 bytes")
    _fill(t)

    def crc32(data, crc=0):
        # The inversions in Python: 0xFFFFFFFF in viper would be an object on a 32-bit port.
        return _update(data, len(data), crc ^ 0xFFFFFFFF, t) ^ 0xFFFFFFFF

    return crc32
