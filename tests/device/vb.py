# Device-side helpers for tests on the virtual board.
import hashlib
import struct


def boot():
    # One boot of the board named by MPFOTA_FLASH: bootloader, filesystem at /.
    import bootrom

    b = bootrom.boot()
    assert b is not None, "board did not boot"
    return b


def reboot():
    # What the next power-on does to the boot record, in this same process.
    import vpartition

    return vpartition.bootloader()


def image(version, size, seed=1):
    # A core image for the unix board (the layout mpfota_host.image writes).
    body = bytearray(size)
    for i in range(size):
        body[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xFF
    head = b"MPFI" + struct.pack("<II", 64, size) + version.encode() + b"\0" * (20 - len(version))
    return head + hashlib.sha256(body).digest() + body


def md5hex(data):
    import binascii

    return binascii.hexlify(hashlib.md5(data).digest()).decode()


def capture_log(raw=False):
    # The lines logged through mpfota.log from now on, as text ("I/fota a b"), or with `raw`
    # as (mark, tag, args) tuples; they are still printed.
    from mpfota import log

    lines = []
    emit = log._emit

    def rec(mark, tag, args):
        lines.append((mark, tag, args) if raw else
                     " ".join([mark + "/" + tag] + [str(a) for a in args]))
        emit(mark, tag, args)

    log._emit = rec
    return lines


def stage_scripts(version, files, keep=()):
    # Stage the script set `files` ({path: text}) as a package would, for the next boot.
    from mpfota import scripts

    st = scripts.Stager()
    st.begin()
    for p in sorted(files):
        st.open(p)
        st.write(files[p].encode())
        st.close()
    scripts.commit(st.files, version, "DEMO", "DEMO_LuatOS-SoC_UNIX_1", keep=keep)


class Rng:
    # A small deterministic generator (xorshift32): the same cases on every run.
    def __init__(self, seed):
        self.s = seed

    def next(self, n):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return s % n
