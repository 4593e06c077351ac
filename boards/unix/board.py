# The board interface (docs/architecture.md) for the virtual board on the unix port.
# Reboots and deep sleep end this process with an exit code; the host runner boots again.
import os
from micropython import const

import vpartition
from vpartition import Partition

NAME = "unix"

EXIT_UNBOOTABLE = const(3)
EXIT_RESET = const(64)
EXIT_SOFT_RESET = const(65)
EXIT_DEEPSLEEP = const(66)
EXIT_POWER_CUT = const(67)

# Set by bootrom: where deepsleep() leaves the wake time for the runner (host files are not
# reachable once the board's own filesystem is mounted at /).
wake_file = None


def ota_slots():
    running = Partition(Partition.RUNNING)
    return running, running.get_next_update()


def check_image(part, length, buf=None):
    # The bootloader's check of the image in `part` within its first `length` bytes (reads it).
    return vpartition.image_ok(vpartition.board(), part.slot, length, buf)


def image_check():
    # The same check, fed the slot's bytes in order by the one read the engine does anyway.
    return _ImageCheck()


class _ImageCheck:
    def __init__(self):
        import hashlib

        self.head = bytearray(vpartition.IMAGE_HEADER)
        self.body = None  # body length once the header is complete and sound
        self.digest = hashlib.sha256()

    def update(self, pos, mv):
        hsize = vpartition.IMAGE_HEADER
        if pos < hsize:
            k = min(hsize - pos, len(mv))
            self.head[pos:pos + k] = mv[:k]
            if pos + k == hsize:
                self.body = _body_length(self.head)
        if self.body is None:
            return
        start = max(pos, hsize)
        end = min(pos + len(mv), hsize + self.body)
        if end > start:
            self.digest.update(mv[start - pos:end - pos])

    def ok(self, length):
        return (self.body is not None and vpartition.IMAGE_HEADER + self.body <= length
                and self.digest.digest() == self.head[32:64])


def _body_length(head):
    # The body length an image header announces, or None when it is not an image header.
    if head[:4] != vpartition.IMAGE_MAGIC or len(head) < vpartition.IMAGE_HEADER:
        return None
    hsize = int.from_bytes(head[4:8], "little")
    if hsize != vpartition.IMAGE_HEADER or vpartition.header_version(head) is None:
        return None
    return int.from_bytes(head[8:12], "little")


def image_id(head):
    # The identity of the image starting with `head` (its first bytes): (version, SHA-256 of
    # the body), or None when they are not an image header.
    if _body_length(head) is None:
        return None
    return vpartition.header_version(head), bytes(head[32:64])


def image_id_running():
    head = bytearray(vpartition.IMAGE_HEADER)
    Partition(Partition.RUNNING).readblocks(0, head)
    return image_id(head)


def core_version():
    b = vpartition.board()
    return vpartition.image_header(b, b.running)[1]


def image_version(part):
    # The core version the image in `part` names in its header, or None when it names none.
    h = vpartition.image_header(vpartition.board(), part.slot)
    return h[1] if h else None


def reset():
    raise SystemExit(EXIT_RESET)


def soft_reset():
    raise SystemExit(EXIT_SOFT_RESET)


def deepsleep(ms=0):
    if wake_file is not None:
        wake_file.write('{"ms": %d}' % ms)
        wake_file.flush()
    raise SystemExit(EXIT_DEEPSLEEP)


def reset_cause():
    return os.getenv("MPFOTA_RESET_CAUSE") or "power_on"


def _identity(key):
    return vpartition.board().cfg.get(key)


def unique_id():
    return bytes.fromhex(_identity("uid"))


def mac():
    return _identity("mac")


def imei():
    return _identity("imei")


def network_up():
    # True when an adapter of the simulated network is up (see vnet).
    import vnet

    return vnet.default() is not None


def bsp():
    # The board support package name, as LuatOS rtos.bsp() ("Air780EHV", "ESP32", ...).
    return vpartition.board().cfg.get("bsp", "UNIX")


# Network adapters for lnet (docs/lsys.md): the simulated adapters of vnet, with priorities.


def net_adapters():
    # vnet's adapters (.name, .priority, .is_up()), highest priority first.
    import vnet

    return vnet.adapters()


def net_set_priority_order(names):
    # As LuatOS libnetif.set_priority_order: names first, in order; ValueError for an unknown one.
    import vnet

    vnet.set_priority_order(names)


def net_ip(name):
    # The address of adapter `name` while it is up (sockets use the loopback), else None.
    import vnet

    return "127.0.0.1" if vnet.get(name).is_up() else None


def key(name, pull="up"):
    # A key on a simulated pin (the host sets its level in DIR/pins/<name>; see vpin).
    import vpin

    return vpin.key(name, pull)
