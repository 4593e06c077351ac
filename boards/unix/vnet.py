# The virtual board's simulated network: adapters that come up after a delay, go down and up,
# and have priorities, as the seeds' multi-adapter setups (netdrv_multiple with
# libnetif.set_priority_order) do.
#
# Adapters (board.json "adapters"; these are the defaults):
#   "4G"    cellular modem    LuatOS socket.LWIP_GP    up 300 ms after boot, priority 1
#   "ETH"   Ethernet (CH390H) LuatOS socket.LWIP_ETH   up 100 ms after boot, priority 2
#   "WIFI"  Wi-Fi station     LuatOS socket.LWIP_STA   up 200 ms after boot, priority 3
# A lower priority number wins: default() is the up adapter with the lowest number, like
# socket.dft() after set_priority_order. "up_after_ms": null means the adapter stays down until
# the app calls up(name).
#
# "Boot" is the moment this module is first imported (time.ticks_ms()). The app takes an adapter
# down or up with down(name) / up(name); the host takes it down by creating the file
# DIR/net/<name>.down in the board directory (checked at every query), so a test can pull the
# cable while the board runs. Sockets themselves use the host's loopback whatever the adapter.
import os
import time

_BOOT = time.ticks_ms()

DEFAULT_ADAPTERS = (
    {"name": "4G", "up_after_ms": 300, "priority": 1},
    {"name": "ETH", "up_after_ms": 100, "priority": 2},
    {"name": "WIFI", "up_after_ms": 200, "priority": 3},
)


class Adapter:
    def __init__(self, net, name, up_after_ms, priority):
        self._net = net
        self.name = name
        self.up_after_ms = up_after_ms
        self.priority = priority
        self._forced = None  # None: follow the boot delay; True / False: app's up() / down()

    def host_down(self):
        # True while the host holds the adapter down (DIR/net/<name>.down exists).
        flags = self._net.flags
        if flags is None:
            return False
        try:
            flags.stat("/" + self.name + ".down")
            return True
        except OSError:
            return False

    def is_up(self):
        if self._forced is False or self.host_down():
            return False
        if self._forced:
            return True
        return self.ready_in_ms() == 0

    def ready_in_ms(self):
        # Milliseconds until the boot delay has passed (0: passed; None: never on its own).
        if self.up_after_ms is None:
            return None
        left = self.up_after_ms - time.ticks_diff(self._net.clock(), self._net.boot)
        return left if left > 0 else 0

    def __repr__(self):
        return "<Adapter %s priority=%d %s>" % (
            self.name, self.priority, "up" if self.is_up() else "down")


class Net:
    # All adapters of one board. clock() returns ms ticks (time.ticks_ms by default).
    def __init__(self, adapters=None, flag_dir=None, clock=None, boot=None):
        self.clock = clock or time.ticks_ms
        self.boot = self.clock() if boot is None else boot
        self.flags = os.VfsPosix(flag_dir) if flag_dir else None
        self._list = []
        for cfg in adapters if adapters is not None else DEFAULT_ADAPTERS:
            name = cfg["name"]
            if self.find(name) is not None:
                raise ValueError("adapter %r is listed twice" % name)
            self._list.append(Adapter(self, name, cfg.get("up_after_ms", 0),
                                      cfg.get("priority", len(self._list) + 1)))

    def find(self, name):
        for a in self._list:
            if a.name == name:
                return a
        return None

    def get(self, name):
        a = self.find(name)
        if a is None:
            raise ValueError("no network adapter %r" % (name,))
        return a

    def adapters(self):
        # All adapters, highest priority first.
        return sorted(self._list, key=lambda a: a.priority)

    def default(self):
        # The highest-priority adapter that is up, or None.
        for a in self.adapters():
            if a.is_up():
                return a
        return None

    def down(self, name):
        self.get(name)._forced = False

    def up(self, name):
        self.get(name)._forced = True

    def set_priority_order(self, names):
        # names first, in this order; adapters not named keep their relative order after them.
        for name in names:
            self.get(name)
        rest = [a for a in self.adapters() if a.name not in names]
        for i, name in enumerate(names):
            self.get(name).priority = i + 1
        for i, a in enumerate(rest):
            a.priority = len(names) + i + 1


_net = None


def _board_config():
    # (adapters, flag dir) from the board directory; host files are reached through a VfsPosix
    # object, which works whether or not the board's littlefs is mounted at /.
    path = os.getenv("MPFOTA_FLASH")
    if not path:
        return None, None
    adapters = None
    try:
        import json

        with os.VfsPosix(path).open("/board.json", "r") as f:
            adapters = json.load(f).get("adapters")
    except (OSError, ValueError):
        pass
    return adapters, path + "/net"


def net():
    # The board's network (created from board.json on first use; "boot" is this module's import).
    global _net
    if _net is None:
        adapters, flags = _board_config()
        _net = Net(adapters, flags, boot=_BOOT)
    return _net


def configure(adapters=None, flag_dir=None, clock=None, boot=None):
    # Replace the board's network (tests, or a board module with its own configuration).
    global _net
    _net = Net(adapters, flag_dir, clock, boot)
    return _net


def adapters():
    return net().adapters()


def get(name):
    return net().get(name)


def default():
    return net().default()


def down(name):
    net().down(name)


def up(name):
    net().up(name)


def set_priority_order(names):
    net().set_priority_order(names)
