# The virtual board's ROMFS partition: romfs.img in the board directory, as big as the
# partition, erased bytes 0xFF. Firmware built with ROMFS (MICROPY_VFS_ROM) gives its `vfs`
# module a rom_ioctl(); the unix port's has none and a built-in module takes no new attribute,
# so bootrom puts a `Vfs` in sys.modules["vfs"]: the real module plus rom_ioctl over the file.
# That is what `mpremote romfs query` and `mpremote romfs deploy` (mpfota deploy --romfs) use.
import os
import vfs as _vfs

from micropython import const

_SECTOR = const(4096)  # erase granularity: rom_ioctl(6)
_MIN_WRITE = const(4)  # smallest write: rom_ioctl(3)'s answer
_ENODEV = const(19)
_EINVAL = const(22)

class Vfs:
    def __init__(self, directory, name):
        # The file is opened through a VfsPosix of the board directory: once littlefs is
        # mounted at /, host paths no longer reach the host.
        self._dir = os.VfsPosix(directory)
        self._name = "/" + name
        self._size = self._dir.stat(self._name)[6]
        self._mem = None  # the partition's bytes, read when rom_ioctl(2) asks for them

    def __getattr__(self, name):
        return getattr(_vfs, name)

    def _span(self, offset, n):
        if offset < 0 or n < 0 or offset + n > self._size:
            raise ValueError("outside the ROMFS partition")

    def _store(self, offset, data, nor=False):
        # nor: program as NOR flash does, clearing bits only (what was not erased first comes
        # out garbled); else the bytes as they are (an erase writes 0xFF).
        with self._dir.open(self._name, "r+b") as f:
            if nor:
                f.seek(offset)
                data = bytes(a & b for a, b in zip(f.read(len(data)), data))
            f.seek(offset)
            f.write(data)
        if self._mem is not None:
            self._mem[offset : offset + len(data)] = data

    def rom_ioctl(self, op, rom_id=0, *args):
        if op == 1:  # how many partitions
            return 1
        if rom_id != 0:
            return -_ENODEV
        if op == 2:  # the partition, as memory
            if self._mem is None:
                self._mem = bytearray(self._size)
                with self._dir.open(self._name, "rb") as f:
                    f.readinto(self._mem)
            return memoryview(self._mem)
        if op == 6:  # erase block size
            return _SECTOR
        if op == 3:  # prepare (erase) [offset,] length
            offset, n = args if len(args) == 2 else (0, args[0])
            n = (n + _SECTOR - 1) // _SECTOR * _SECTOR
            self._span(offset, n)
            if offset % _SECTOR:
                raise ValueError("erase must start on a sector")
            self._store(offset, b"\xff" * n)
            return _MIN_WRITE
        if op == 4:  # write
            offset, data = args
            self._span(offset, len(data))
            self._store(offset, data, True)
            return 0
        if op == 5:  # end of writing: the new image mounts at the next boot
            return 0
        return -_EINVAL
