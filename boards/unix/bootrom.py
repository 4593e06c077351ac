# One boot of the virtual board: what the ROM bootloader and MicroPython's _boot.py do on a
# real board. Run by the host runner as `micropython boards/unix/bootrom.py` with:
#   MPFOTA_FLASH       the board directory (board.json, flash.bin)
#   MPFOTA_CUT_AFTER   cut the power after this many flash operations (0 or unset: never)
#   MPFOTA_APP         a host file installed as /main.py before it runs
#   MPFOTA_FROZEN      "0": device/ is not visible as frozen modules (deployed files only)
#   MPFOTA_REPL        "1": boot, then stay in the REPL (with `micropython -i`) instead of main.py
# A board directory may hold romfs.img, the board's ROMFS partition (`mpfota board init
# --romfs/--romfs-size`): its image is mounted at /rom and put first on sys.path, as
# MicroPython's _boot.py does, and `vfs.rom_ioctl` writes it (vrom.py).
# Exit codes are listed in docs/architecture.md.
import os
import sys
import json

def _absolute(p):
    return p if p.startswith("/") else os.getcwd() + "/" + p


_here = _absolute(__file__).rsplit("/", 1)[0]
_repo = _here.rsplit("/", 2)[0]


def _romfs_length(head):
    # Bytes of the ROMFS image that starts with `head` (its first 8 bytes), 0 when there is
    # none: the header d2 cd 31, the payload length as a varint (7 bits a byte, most
    # significant group first), then the payload.
    if head[:3] != b"\xd2\xcd\x31":
        return 0
    n = 0
    for i in range(3, len(head)):
        n = (n << 7) | (head[i] & 0x7F)
        if not head[i] & 0x80:
            return i + 1 + n
    return 0


def _mount_romfs(path):
    # The board's ROMFS partition, romfs.img, when it has one. A real board maps the image
    # from flash; this one reads it into one block of heap first thing at boot (the bench
    # subtracts that block). An erased partition is left unmounted, a damaged one reported:
    # the board boots from its filesystem as it would without one. Either way `vfs` gets the
    # partition's rom_ioctl (vrom.py) for mpremote romfs.
    try:
        size = os.stat(path)[6]
    except OSError:
        return False
    import vfs

    try:
        vfs.umount("/rom")  # mounted by an earlier boot in this process (device tests)
    except OSError:
        pass
    with open(path, "rb") as f:
        head = f.read(8)
        n = _romfs_length(head)
        rom = bytearray(n if n <= size else 0)
        f.seek(0)
        f.readinto(rom)
    mounted = False
    if rom:
        try:
            vfs.mount(vfs.VfsRom(rom), "/rom")
            mounted = True
        except OSError:
            pass
    if not mounted and head[:1] != b"\xff":
        print("bootrom: romfs.img holds no ROMFS image; not mounted")
    import vrom

    sys.modules["vfs"] = vrom.Vfs(*path.rsplit("/", 1))
    return mounted


def _mount_host_paths(romfs):
    # Every host folder on sys.path is mounted read-only under /.romN, as the board's "frozen"
    # modules, and sys.path is rewritten to match; /rom (the ROMFS) comes first, then /lib.
    path = ["/rom", "", "/lib"] if romfs else ["", "/lib"]
    n = 0
    for entry in sys.path:
        if entry and entry != ".frozen" and not entry.startswith("/."):
            point = "/.rom%d" % n
            os.mount(os.VfsPosix(_absolute(entry)), point)
            path.append(point)
            n += 1
        elif entry == ".frozen":
            path.append(entry)
    sys.path[:] = path


class _FsDevice:
    # littlefs2 block device on the filesystem region of the flash.
    def __init__(self, flash, off, size):
        self.flash = flash
        self.off = off
        self.size = size

    def readblocks(self, block, buf, offset=0):
        self.flash.read(self.off + block * 4096 + offset, buf)

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            self.flash.erase(self.off + block * 4096)
            offset = 0
        self.flash.program(self.off + block * 4096 + offset, buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.size // 4096
        if op == 5:
            return 4096
        if op == 6:
            self.flash.erase(self.off + arg * 4096)
        return 0


def _blank(flash, off):
    buf = bytearray(4096)
    for block in (0, 1):
        flash.read(off + block * 4096, buf)
        if buf != b"\xff" * 4096:
            return False
    return True


def _mount_fs(b, romfs):
    dev = _FsDevice(b.flash, b.fs[0], b.fs[1])
    try:
        fs = os.VfsLfs2(dev)
    except OSError:
        # Format only a blank region: a damaged filesystem is reported, never wiped.
        if not _blank(b.flash, b.fs[0]):
            print("bootrom: filesystem does not mount and is not blank; not formatting it")
            return False
        os.VfsLfs2.mkfs(dev)
        fs = os.VfsLfs2(dev)
    os.umount("/")
    os.mount(fs, "/")
    _mount_host_paths(romfs)
    os.chdir("/")
    return True


def boot(path=None, cut_after=0):
    # Bootloader, then the filesystem at / and the host modules as frozen ones. Returns the
    # open board, or None when nothing is bootable. Device tests call this directly.
    path = path or os.getenv("MPFOTA_FLASH")
    romfs = _mount_romfs(_absolute(path) + "/romfs.img")
    import vpartition

    if os.getenv("MPFOTA_FROZEN") != "0":
        sys.path.extend((_repo + "/device", _repo + "/deps"))
    b = vpartition.open_board(path, cut_after)
    if vpartition.bootloader() is None:
        print("bootrom: no bootable core image in either slot")
        return None
    if not _mount_fs(b, romfs):
        return None
    return b


def main():
    import simflash
    import board

    path = os.getenv("MPFOTA_FLASH")
    app = os.getenv("MPFOTA_APP")
    app_data = None
    if app:
        with open(app, "rb") as f:
            app_data = f.read()
    board.wake_file = open(path + "/wake.json", "w")
    stats = open(path + "/boot.json", "w")
    b = None
    code = 0
    try:
        b = boot(path, int(os.getenv("MPFOTA_CUT_AFTER") or "0"))
        if b is None:
            code = board.EXIT_UNBOOTABLE
        else:
            _apply_updates()
            if app_data is not None:
                with open("/main.py", "wb") as f:
                    f.write(app_data)
            if os.getenv("MPFOTA_REPL") == "1":
                return 0
            code = _run_main()
    except simflash.PowerCut:
        print("bootrom: power cut")
        code = board.EXIT_POWER_CUT
    import vpartition

    f = vpartition.board_or_none()
    stats.write(json.dumps({"ops": f.flash.ops if f else 0, "slot": f.running if f else None,
                            "state": f.boot_state if f else None, "exit": code}))
    stats.close()
    return code


def _apply_updates():
    # The boot-time apply of an update package's script set (mpfota.bootapply), before main.py:
    # what /boot.py does on a real board.
    try:
        import mpfota.bootapply
    except ImportError:  # deployed without mpfota
        return
    mpfota.bootapply.run()


def _run_main():
    import simflash

    try:
        os.stat("/main.py")
    except OSError:
        print("bootrom: no /main.py")
        return 0
    try:
        with open("/main.py") as f:
            src = f.read()
        exec(src, {"__name__": "__main__"})
    except SystemExit as e:
        return e.args[0] if e.args and isinstance(e.args[0], int) else 0
    except simflash.PowerCut:
        raise
    except Exception as e:
        sys.print_exception(e)
        return 1
    return 0


if __name__ == "__main__":
    _code = main()
    if _code:
        sys.exit(_code)
