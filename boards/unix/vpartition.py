# The virtual board's flash map, an esp32.Partition look-alike on it, and its bootloader.
#
# The boot record ("otadata") follows ESP-IDF's app rollback: two sectors, each holding at most
# one entry {seq, state}. The newest valid entry (highest generation, good CRC) decides the slot:
# slot = (seq - 1) % 2. Every change writes a new entry into the sector that does NOT hold the
# newest one (erase, then program), so a power cut at any point leaves a valid newest entry.
import json
import struct
import binascii
import hashlib
from micropython import const

import simflash

SECTOR = simflash.SECTOR
IMAGE_HEADER = const(64)
IMAGE_MAGIC = b"MPFI"

# ESP-IDF esp_ota_img_states_t values.
NEW = const(0)
PENDING_VERIFY = const(1)
VALID = const(2)
INVALID = const(3)
ABORTED = const(4)
UNDEFINED = const(0xFFFFFFFF)
STATE_NAMES = {NEW: "new", PENDING_VERIFY: "pending", VALID: "valid", INVALID: "invalid",
               ABORTED: "aborted", UNDEFINED: "undefined"}

_OTAD = b"OTAD"
_ENTRY = "<4sIIII"  # magic, generation, seq, state, crc32 of the first 16 bytes
_ENTRY_SIZE = const(20)
_EINVAL = const(22)
_ENOENT = const(2)

_board = None  # the one open board of this process


class _Board:
    def __init__(self, path):
        with open(path + "/board.json") as f:
            self.cfg = json.load(f)
        self.path = path
        self.flash = None
        self.slots = [tuple(s) for s in self.cfg["slots"]]
        self.otadata = tuple(self.cfg["otadata"])
        self.fs = tuple(self.cfg["fs"])
        self.running = None  # slot index chosen by the bootloader
        self.boot_state = None


def open_board(path, cut_after=0):
    global _board
    b = _Board(path)
    b.flash = simflash.SimFlash(path + "/flash.bin", b.cfg["size"], cut_after)
    _board = b
    return b


def board_or_none():
    return _board


def board():
    if _board is None:
        import os

        path = os.getenv("MPFOTA_FLASH")
        if not path:
            raise OSError(_ENOENT, "no virtual board: MPFOTA_FLASH is not set")
        open_board(path)
    if _board.running is None:
        bootloader()
    return _board


# --- boot record -----------------------------------------------------------------------------

def _read_entries(b):
    buf = bytearray(_ENTRY_SIZE)
    out = []
    for i in range(2):
        b.flash.read(b.otadata[0] + i * SECTOR, buf)
        magic, gen, seq, state, crc = struct.unpack(_ENTRY, buf)
        if magic == _OTAD and crc == binascii.crc32(buf[:16]):
            out.append((gen, seq, state, i))
    return out


def _newest(b):
    entries = _read_entries(b)
    if not entries:
        return None
    return max(entries)


def _write_entry(b, seq, state):
    newest = _newest(b)
    gen = newest[0] + 1 if newest else 1
    sector = 1 - newest[3] if newest else 0
    head = struct.pack("<4sIII", _OTAD, gen, seq, state)
    addr = b.otadata[0] + sector * SECTOR
    b.flash.erase(addr)
    b.flash.program(addr, head + struct.pack("<I", binascii.crc32(head)))


def boot_record():
    # (slot, state name) of the newest boot record entry, or None when otadata is blank.
    b = board()
    e = _newest(b)
    if e is None:
        return None
    return (e[1] - 1) % 2, STATE_NAMES.get(e[2], "undefined")


def bootloader():
    # Choose the slot to boot, as the ESP-IDF bootloader with rollback enabled does.
    b = _board
    e = _newest(b)
    if e is None:
        slot, state = 0, VALID  # blank otadata: the first app slot, as ESP-IDF without factory
    else:
        gen, seq, state, _ = e
        slot = (seq - 1) % 2
        if state == NEW:
            _write_entry(b, seq, PENDING_VERIFY)
            state = PENDING_VERIFY
        elif state == PENDING_VERIFY:
            # Booted once without confirmation: roll back.
            _write_entry(b, seq, ABORTED)
            slot, state = 1 - slot, VALID
        elif state in (ABORTED, INVALID):
            slot, state = 1 - slot, VALID
    if not image_ok(b, slot):
        slot, state = 1 - slot, VALID
        if not image_ok(b, slot):
            b.running = None
            return None
    b.running = slot
    b.boot_state = state
    return slot


# --- images ----------------------------------------------------------------------------------

def image_header(b, slot, buf=None):
    # (body length, version) of the image in a slot, or None when there is no valid header.
    hdr = bytearray(IMAGE_HEADER)
    b.flash.read(b.slots[slot][0], hdr)
    if hdr[:4] != IMAGE_MAGIC:
        return None
    hsize, body = struct.unpack_from("<II", hdr, 4)
    version = header_version(hdr)
    if hsize != IMAGE_HEADER or hsize + body > b.slots[slot][1] or version is None:
        return None
    return body, version


def header_version(hdr):
    # The version field of an image header, or None when it is not printable ASCII: the host
    # tools make no other (mpfota_host.image), so such a header is not one of our images.
    raw = bytes(hdr[12:32]).rstrip(b"\x00")
    for c in raw:
        if not 0x20 <= c < 0x7F:
            return None
    return raw.decode() if raw else None


def image_ok(b, slot, length=None, buf=None):
    # True when the slot holds a complete image whose body matches its SHA-256.
    h = image_header(b, slot)
    if h is None:
        return False
    body = h[0]
    if length is not None and IMAGE_HEADER + body > length:
        return False
    off = b.slots[slot][0]
    want = bytearray(32)
    b.flash.read(off + 32, want)
    if buf is None:
        buf = bytearray(SECTOR)
    mv = memoryview(buf)
    digest = hashlib.sha256()
    pos = 0
    while pos < body:
        k = min(len(buf), body - pos)
        b.flash.read(off + IMAGE_HEADER + pos, mv[:k])
        digest.update(mv[:k])
        pos += k
    return digest.digest() == want


# --- esp32.Partition look-alike --------------------------------------------------------------

class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=4096):
        b = board()
        if id == Partition.RUNNING:
            self.slot = b.running
        elif id == Partition.BOOT:
            # As esp_ota_get_boot_partition(): an aborted or invalid entry does not count.
            e = _newest(b)
            self.slot = 0 if e is None else (e[1] - 1) % 2
            if e is not None and e[2] in (ABORTED, INVALID):
                self.slot = 1 - self.slot
        elif isinstance(id, str) and id in ("ota_0", "ota_1"):
            self.slot = int(id[-1])
        else:
            raise ValueError("no partition %r" % (id,))
        if block_size % SECTOR and SECTOR % block_size:
            raise ValueError("block_size must divide or be a multiple of 4096")
        self.block_size = block_size
        self._b = b
        self._off, self._size = b.slots[self.slot]

    @staticmethod
    def find(type=0, subtype=0xFF, label=None, block_size=4096):
        if type != Partition.TYPE_APP:
            return []
        labels = ("ota_0", "ota_1") if label is None else (label,)
        return [Partition(lab, block_size) for lab in labels if lab in ("ota_0", "ota_1")]

    def info(self):
        return (Partition.TYPE_APP, 0x10 + self.slot, self._off, self._size,
                "ota_%d" % self.slot, False)

    def __eq__(self, other):
        return isinstance(other, Partition) and other.slot == self.slot

    def __repr__(self):
        return "<Partition type=0, subtype=%d, address=%d, size=%d, label=ota_%d, encrypted=0>" % (
            0x10 + self.slot, self._off, self._size, self.slot)

    def _addr(self, block, offset, n):
        addr = block * self.block_size + offset
        if addr < 0 or addr + n > self._size:
            raise OSError(_EINVAL, "partition access out of range")
        return self._off + addr

    def readblocks(self, block, buf, offset=0):
        # The address check inline: the delta applier reads the base in thousands of small
        # pieces, and each Python call here costs what a C readblocks does in all.
        addr = block * self.block_size + offset
        if addr < 0 or addr + len(buf) > self._size:
            raise OSError(_EINVAL, "partition access out of range")
        self._b.flash.read(self._off + addr, buf)

    def writeblocks(self, block, buf, offset=None):
        # Without offset: erase the sectors the data covers, then program (esp32 semantics).
        if offset is None:
            addr = self._addr(block, 0, len(buf))
            end = addr + len(buf)
            erase_at = addr - (addr - self._off) % SECTOR
            while erase_at < end:
                self._b.flash.erase(erase_at)
                erase_at += SECTOR
        else:
            addr = self._addr(block, offset, len(buf))
        self._b.flash.program(addr, buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self._size // self.block_size
        if op == 5:
            return self.block_size
        if op == 6:
            addr = self._addr(arg, 0, self.block_size)
            for a in range(addr, addr + self.block_size, SECTOR):
                self._b.flash.erase(a)
            return 0
        return 0  # init, deinit, sync

    def set_boot(self):
        # ESP-IDF verifies the image before it accepts a boot partition.
        if not image_ok(self._b, self.slot):
            raise OSError(_EINVAL, "ota_%d does not hold a valid image" % self.slot)
        e = _newest(self._b)
        seq = e[1] + 1 if e else 1
        if (seq - 1) % 2 != self.slot:
            seq += 1
        _write_entry(self._b, seq, NEW)

    def get_next_update(self):
        return Partition("ota_%d" % (1 - self.slot), self.block_size)

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        b = board()
        e = _newest(b)
        if e is not None and e[2] == PENDING_VERIFY and (e[1] - 1) % 2 == b.running:
            _write_entry(b, e[1], VALID)
        b.boot_state = VALID
