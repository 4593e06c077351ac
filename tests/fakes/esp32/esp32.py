# Fake of MicroPython's esp32 module for the unix port: Partition only, on the virtual board.
#
# esp32.Partition is boards/unix/vpartition.Partition (the simulated NOR flash, the otadata
# boot record, the rollback states), with what differs on an ESP32:
# - slots hold ESP-IDF app images: set_boot() and the bootloader check them with the board's
#   ESP32 image check (board.app_image_length) and the chip id (an ESP32), not the unix
#   board's MPFI header;
# - set_boot() of an invalid image raises OSError(-0x1503) (ESP_ERR_OTA_VALIDATE_FAILED),
#   and get_next_update() without OTA slots raises OSError(ENOENT), as MicroPython does;
# - Partition(Partition.BOOT) skips an ABORTED/INVALID newest boot record, as
#   esp_ota_get_boot_partition() does (it names the app that boots next);
# - sim_partition_table("factory") (or MPFOTA_ESP32_TABLE=factory) simulates a partition
#   table with a factory app and no OTA slots.
import os

import vpartition
from micropython import const

_ENOENT = const(2)
_ERR_VALIDATE_FAILED = const(-0x1503)  # MicroPython raises OSError(-esp_err)
_ERR_NOT_FOUND = const(-0x105)
_SUBTYPE_FACTORY = const(0x00)
SIM_CHIP_ID = 0  # the simulated chip: an ESP32 (esp_chip_id_t ESP_CHIP_ID_ESP32)

_table = None  # "ota" or "factory"; None: MPFOTA_ESP32_TABLE, else "ota"


def sim_partition_table(kind):
    # "ota": otadata + ota_0 + ota_1 (the default); "factory": one factory app, no OTA slots.
    global _table
    if kind not in ("ota", "factory"):
        raise ValueError(kind)
    _table = kind


def _factory():
    return (_table or os.getenv("MPFOTA_ESP32_TABLE") or "ota") == "factory"


class _SlotReader:
    # Reads one slot straight from the flash; used while the bootloader runs, when
    # Partition() cannot be built yet (it asks the board, which would boot again).
    def __init__(self, b, slot):
        self._b = b
        self._off, self._size = b.slots[slot]

    def readblocks(self, block, buf, offset=0):
        self._b.flash.read(self._off + block * 4096 + offset, buf)

    def info(self):
        return (0, 0, self._off, self._size, "", False)


# ESP-IDF checks an image in memory of its own, never in MicroPython's heap: the fake's
# working buffer is taken once, with the board, so an update's heap figures do not pay for it.
_IDF_BUF = bytearray(4096)


def _esp32_image_ok(b, slot, length=None, buf=None):
    # esp_image_verify(): the app image format, and the chip the image was built for.
    import board

    part = _SlotReader(b, slot)
    if not board.app_image_length(part, part._size if length is None else length,
                                  buf or _IDF_BUF):
        return False
    chip = bytearray(2)
    part.readblocks(0, chip, 12)
    return int.from_bytes(chip, "little") == SIM_CHIP_ID


# The virtual board's bootloader and set_boot() look their image check up here at call time.
vpartition.image_ok = _esp32_image_ok


class Partition(vpartition.Partition):
    def __init__(self, id, block_size=4096):
        self._factory = _factory()
        if isinstance(id, int):
            if id not in (Partition.BOOT, Partition.RUNNING):
                raise ValueError()
        elif id not in (("factory",) if self._factory else ("ota_0", "ota_1")):
            raise OSError(_ENOENT)  # MicroPython: no partition with that label
        if self._factory:
            id = "ota_0"  # the factory app lives where slot 0 is
        elif id == Partition.BOOT:
            rec = vpartition.boot_record()
            if rec is not None and rec[1] in ("aborted", "invalid"):
                id = "ota_%d" % (1 - rec[0])
        super().__init__(id, block_size)

    @staticmethod
    def find(type=0, subtype=0xFF, label=None, block_size=4096):
        if _factory():
            ok = type == Partition.TYPE_APP and subtype in (0xFF, _SUBTYPE_FACTORY)
            return [Partition("factory", block_size)] if ok and label in (None, "factory") else []
        return [Partition(p.info()[4], block_size)
                for p in vpartition.Partition.find(type, subtype, label, block_size)
                if subtype in (0xFF, p.info()[1])]

    def info(self):
        if self._factory:
            return (Partition.TYPE_APP, _SUBTYPE_FACTORY, self._off, self._size, "factory", False)
        return super().info()

    def __repr__(self):
        t, s, a, n, label, _ = self.info()
        return "<Partition type=%d, subtype=%d, address=%d, size=%d, label=%s, encrypted=0>" % (
            t, s, a, n, label)

    def set_boot(self):
        if self._factory:
            raise OSError(_ERR_NOT_FOUND)  # no otadata partition
        # esp_ota_set_boot_partition() runs esp_image_verify() first.
        if not _esp32_image_ok(self._b, self.slot):
            raise OSError(_ERR_VALIDATE_FAILED)
        super().set_boot()

    def get_next_update(self):
        if self._factory:
            raise OSError(_ENOENT)
        return Partition("ota_%d" % (1 - self.slot), self.block_size)
