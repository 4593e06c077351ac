# The board interface (docs/architecture.md) for ESP32 boards running MicroPython.
#
# Slots are ESP-IDF OTA app partitions (esp32.Partition); a slot is bootable when it holds an
# ESP-IDF app image (check_image). Boot confirmation and rollback are ESP-IDF's: MicroPython's
# esp32 builds enable CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE. See docs/esp32.md.
import machine
from micropython import const
from esp32 import Partition

NAME = "esp32"

_SECTOR = const(4096)
_HEADER = const(24)  # esp_image_header_t
_SEGMENT = const(8)  # esp_image_segment_header_t
_MAGIC = const(0xE9)
_MAX_SEGMENTS = const(16)
_CHECKSUM_SEED = const(0xEF)
_HASH = const(32)
_XOR_WIDTH = const(256)
_DESC = const(32)  # esp_app_desc_t sits at the start of the first segment's data
_DESC_MAGIC = b"\x32\x54\xcd\xab"  # 0xABCD5432, little-endian
_ENOENT = const(2)


def ota_slots():
    running = Partition(Partition.RUNNING)
    try:
        spare = running.get_next_update()
    except OSError:  # no OTA app partition at all (ENOENT)
        spare = None
    # With a single OTA slot, ESP-IDF names the running partition as the next one.
    if spare is None or spare.info()[2] == running.info()[2]:
        raise OSError(
            _ENOENT,
            "no spare OTA slot (running from %r): flash a MicroPython firmware whose partition "
            "table has otadata, ota_0 and ota_1, e.g. the ESP32_GENERIC OTA variant "
            "(partitions-4MiB-ota.csv)" % running.info()[4],
        )
    return running, spare


def _read(part, addr, mv):
    part.readblocks(addr // _SECTOR, mv, addr % _SECTOR)


def _xor_bytes(x, n):
    # XOR of the n little-endian bytes of the integer x (XOR the halves until one is left).
    while n > 1:
        h = (n + 1) // 2
        x = (x >> (h * 8)) ^ (x & ((1 << (h * 8)) - 1))
        n = h
    return x


def app_image_length(part, length, buf=None):
    # Length of the ESP-IDF app image at the start of `part` when it lies within the first
    # `length` bytes and its checksum and appended SHA-256 (when present) match; 0 otherwise.
    # The layout (esp_image_format.c): 24-byte header, segments (8-byte header + data, a
    # multiple of 4), zero padding with the checksum in the last byte of a 16-byte block
    # (0xEF XOR every data byte), then the SHA-256 of all of that when hash_appended is set.
    import hashlib

    length = min(length, part.info()[3])
    if buf is None or len(buf) < _HASH:
        buf = bytearray(_SECTOR)
    mv = memoryview(buf)
    if length < _HEADER:
        return 0
    head = mv[:_HEADER]
    _read(part, 0, head)
    count = head[1]
    if head[0] != _MAGIC or not 1 <= count <= _MAX_SEGMENTS:
        return 0
    hashed = head[23]
    digest = hashlib.sha256(head)
    xor = width = 0  # the data XORed as integers (bytes at the same offset in a chunk)
    pos = _HEADER
    for _ in range(count):
        if pos + _SEGMENT > length:
            return 0
        seg = mv[:_SEGMENT]
        _read(part, pos, seg)
        digest.update(seg)
        end = pos + _SEGMENT + int.from_bytes(seg[4:], "little")
        pos += _SEGMENT
        if (end - pos) & 3 or end > length:
            return 0
        while pos < end:
            k = min(len(mv), end - pos)
            chunk = mv[:k]
            _read(part, pos, chunk)
            digest.update(chunk)
            # XORed as integers of at most _XOR_WIDTH bytes: a whole sector as one integer
            # would need several 4 KiB blocks of heap at once (ESP-IDF's check needs none).
            for i in range(0, k, _XOR_WIDTH):
                xor ^= int.from_bytes(chunk[i:i + _XOR_WIDTH], "little")
            pos += k
            width = max(width, min(k, _XOR_WIDTH))
    end = (pos + 16) & ~15
    if end > length:
        return 0
    tail = mv[: end - pos]
    _read(part, pos, tail)
    if tail[-1] != _CHECKSUM_SEED ^ _xor_bytes(xor, width):
        return 0
    if hashed:
        digest.update(tail)
        if end + _HASH > length:
            return 0
        want = mv[:_HASH]
        _read(part, end, want)
        if digest.digest() != bytes(want):
            return 0
        end += _HASH
    return end


def check_image(part, length, buf=None):
    # The whole check of the image in `part` (reads it): format, checksum, SHA-256, chip.
    if not app_image_length(part, length, buf):
        return False
    c = _HeaderCheck()
    new = bytearray(_HEADER)
    _read(part, 0, new)
    c.update(0, new)
    return c.ok(length)


def image_version(part):
    # The version in the app description (esp_app_desc_t.version) of the image in `part`, or
    # None when it has none: MicroPython's own builds leave it empty
    # (CONFIG_APP_EXCLUDE_PROJECT_VER_VAR).
    d = bytearray(48)
    part.readblocks(0, d, _DESC)
    if d[:4] == _DESC_MAGIC:
        v = bytes(d[16:]).split(b"\0")[0]
        if v:
            return _text(v)
    return None


def _text(raw):
    # The descriptor's version as text. ESP-IDF boots an image whatever bytes the field holds
    # (it is set from the build's PROJECT_VER): bytes that are not UTF-8 read as "?".
    try:
        return raw.decode()
    except UnicodeError:
        return "".join(chr(c) if 0x20 <= c < 0x7F else "?" for c in raw)


def image_check():
    # What the image header tells; the segments, checksum and SHA-256 are left to set_boot()
    # (esp_ota_set_boot_partition verifies the whole image itself), so the slot is not read a
    # second time for them.
    return _HeaderCheck()


class _HeaderCheck:
    def __init__(self):
        self.head = None

    def update(self, pos, mv):
        # Fed by the engine's read-back of the slot, when it does one.
        if pos == 0 and len(mv) >= _HEADER:
            self.head = bytes(mv[:_HEADER])

    def switch_verifies(self, part, length):
        # True when set_boot() will read and check every one of the `length` bytes in `part`
        # itself: an app image with its SHA-256 appended that ends exactly there. The engine
        # then does no read-back of its own (nor does ESP-IDF's esp_https_ota): a byte the
        # flash got wrong fails that SHA-256, and nothing is switched. Reads the image header
        # and the segment headers only.
        head = bytearray(_HEADER)
        _read(part, 0, head)
        self.head = bytes(head)
        if head[0] != _MAGIC or not head[23] or not 1 <= head[1] <= _MAX_SEGMENTS:
            return False
        seg = bytearray(_SEGMENT)
        pos = _HEADER
        for _ in range(head[1]):
            if pos + _SEGMENT > length:
                return False
            _read(part, pos, seg)
            pos += _SEGMENT + int.from_bytes(seg[4:], "little")
        return ((pos + 16) & ~15) + _HASH == length

    def ok(self, length):
        h = self.head
        if h is None or h[0] != _MAGIC or not 1 <= h[1] <= _MAX_SEGMENTS:
            return False
        # The bootloader refuses an image built for another chip: compare with the running app.
        cur = bytearray(_HEADER)
        Partition(Partition.RUNNING).readblocks(0, cur)
        return cur[0] != _MAGIC or h[12:14] == cur[12:14]


_DESC_VERSION = const(_HEADER + _SEGMENT + 16)  # esp_app_desc_t.version in the image
_DESC_ELF_SHA = const(_HEADER + _SEGMENT + 144)  # esp_app_desc_t.app_elf_sha256


def image_id(head):
    # The identity of the app image starting with `head`: (descriptor version, ELF SHA-256
    # from the descriptor), or None when there is no descriptor or no ELF hash in it. (The
    # appended SHA-256 sits at the end of the image: the descriptor's hash is known before
    # anything is written.)
    end = _DESC_ELF_SHA + _HASH
    if len(head) < end or head[0] != _MAGIC or bytes(head[_DESC:_DESC + 4]) != _DESC_MAGIC:
        return None
    elf = bytes(head[_DESC_ELF_SHA:end])
    if elf == bytes(_HASH):
        return None
    return _text(bytes(head[_DESC_VERSION:_DESC_VERSION + 32]).split(b"\0")[0]), elf


def image_id_running():
    head = bytearray(_DESC_ELF_SHA + _HASH)
    Partition(Partition.RUNNING).readblocks(0, head)
    return image_id(head)


def core_version():
    # The running app's image_version(), else the MicroPython release.
    v = image_version(Partition(Partition.RUNNING))
    if v:
        return v
    import os

    try:
        return os.uname().release
    except AttributeError:
        import sys

        return "%d.%d.%d" % sys.implementation.version[:3]


def reset():
    machine.reset()


def soft_reset():
    machine.soft_reset()


def deepsleep(ms=0):
    # The ESP32 bootloader of MicroPython builds skips app selection on a deep-sleep wake
    # (CONFIG_BOOTLOADER_SKIP_VALIDATE_IN_DEEP_SLEEP): after set_boot() only a reset switches
    # to the new app, so a pending switch turns the sleep into a reset.
    try:
        switch = Partition(Partition.BOOT).info()[2] != Partition(Partition.RUNNING).info()[2]
    except OSError:  # no otadata (a factory-only table): nothing can be pending
        switch = False
    if switch:
        machine.reset()
    machine.deepsleep(ms)


def reset_cause():
    c = machine.reset_cause()
    if c == machine.PWRON_RESET:
        return "power_on"
    if c == machine.DEEPSLEEP_RESET:
        return "deepsleep"
    if c == machine.SOFT_RESET:
        return "soft"
    if c == machine.WDT_RESET:
        return "watchdog"
    if c == getattr(machine, "BROWNOUT_RESET", None):
        return "power_cut"
    return "hard"


def unique_id():
    return machine.unique_id()


def mac():
    import network

    return ":".join("%02x" % b for b in network.WLAN(network.STA_IF).config("mac"))


def imei():
    return None


def network_up():
    # True when the Wi-Fi station or an Ethernet interface the app created is connected.
    import network

    if hasattr(network, "WLAN") and network.WLAN(network.STA_IF).isconnected():
        return True
    if hasattr(network, "LAN"):
        try:
            return network.LAN().isconnected()  # the existing LAN object, once one was made
        except (TypeError, ValueError, OSError):  # no Ethernet configured
            pass
    return False


def bsp():
    # The board support package name, as LuatOS rtos.bsp(): the chip ("ESP32", "ESP32S3", ...).
    import os

    machine = os.uname().machine  # e.g. "Generic ESP32S3 module with ESP32S3"
    return machine.rsplit(" ", 1)[-1].upper() if " with " in machine else "ESP32"


# Network adapters for lnet (docs/lsys.md): "ETH" (network.LAN, once the app created it) and
# "WIFI" (the WLAN station), each up while connected. Lower priority number wins; Ethernet
# first until net_set_priority_order() says otherwise.


class NetAdapter:
    def __init__(self, name, priority):
        self.name = name
        self.priority = priority

    def nic(self):
        # The interface object, or None when there is none (no LAN created, no Wi-Fi).
        import network

        if self.name == "WIFI":
            return network.WLAN(network.STA_IF) if hasattr(network, "WLAN") else None
        return _net_lan()

    def is_up(self):
        nic = self.nic()
        return nic is not None and bool(nic.isconnected())

    def __repr__(self):
        return "<NetAdapter %s priority=%d>" % (self.name, self.priority)


_net_list = [NetAdapter("ETH", 1), NetAdapter("WIFI", 2)]
_net_lan_obj = None


def _net_lan():
    # The LAN object the app made (network.LAN() without arguments refuses before that).
    global _net_lan_obj
    if _net_lan_obj is None:
        import network

        if hasattr(network, "LAN"):
            try:
                _net_lan_obj = network.LAN()
            except (TypeError, ValueError, OSError):
                pass
    return _net_lan_obj


def _net_find(name):
    for a in _net_list:
        if a.name == name:
            return a
    raise ValueError("no network adapter %r" % (name,))


def net_adapters():
    # The adapters that exist now, highest priority first.
    out = [a for a in _net_list if a.nic() is not None]
    out.sort(key=lambda a: a.priority)
    return out


def net_set_priority_order(names):
    # As LuatOS libnetif.set_priority_order: names first, in order; ValueError for an unknown one.
    for name in names:
        _net_find(name)
    rest = sorted([a for a in _net_list if a.name not in names], key=lambda a: a.priority)
    for i, name in enumerate(names):
        _net_find(name).priority = i + 1
    for i, a in enumerate(rest):
        a.priority = len(names) + i + 1


def net_ip(name):
    # The adapter's IP address while it is connected, else None.
    a = _net_find(name)
    nic = a.nic()
    if nic is None or not nic.isconnected():
        return None
    return nic.ifconfig()[0]


def key(name, pull="up"):
    # A key on a GPIO (name: a pin number, or "BOOT" for GPIO0), with the pull-up.
    import keys

    return keys.key(name, pull)
