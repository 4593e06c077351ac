# Simulated GPIO pins of the virtual board: a machine.Pin look-alike whose input level the host
# sets through a file, as vnet's adapters are held down through DIR/net/<name>.down.
#
#   DIR/pins/<name>    "0" or "1" (surrounding whitespace ignored): the level the pin reads.
#                      No file: the pin reads its idle level (1 with PULL_UP, else 0).
#
# DIR is the board directory (MPFOTA_FLASH). The host presses a key wired to ground (pull-up,
# active low) by writing "0" and releases it by writing "1" or removing the file. A pin in OUT
# mode writes its level to the same file, so the host can read what the board drives.
# A file with anything else in it reads as the idle level, and the cause is logged once per
# distinct content. Pins have no interrupts here: readers poll value() (triggers.key does).
import os

_dir = None  # VfsPosix of DIR/pins (host files stay reachable after littlefs is mounted at /)
_bad = {}  # pin name -> the malformed content last logged


def _pins():
    global _dir
    if _dir is None:
        path = os.getenv("MPFOTA_FLASH")
        if not path:
            return None
        try:
            top = os.VfsPosix(path)
            try:
                top.stat("/pins")
            except OSError:
                top.mkdir("/pins")
            _dir = os.VfsPosix(path + "/pins")
        except OSError:
            return None
    return _dir


def _check_name(name):
    s = str(name)
    if not s or len(s) > 32:
        raise ValueError("pin name %r: 1 to 32 characters" % (name,))
    for c in s:
        if not (c.isalpha() or c.isdigit() or c in "_-"):
            raise ValueError("pin name %r: letters, digits, '_' and '-' only" % (name,))
    return s


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, id, mode=IN, pull=None, value=None):
        self.name = _check_name(id)
        self.init(mode, pull, value)

    def init(self, mode=IN, pull=None, value=None):
        if mode not in (Pin.IN, Pin.OUT):
            raise ValueError("pin mode %r: Pin.IN or Pin.OUT" % (mode,))
        if pull not in (None, Pin.PULL_UP, Pin.PULL_DOWN):
            raise ValueError("pin pull %r: None, Pin.PULL_UP or Pin.PULL_DOWN" % (pull,))
        self.mode = mode
        self.pull = pull
        self._out = 0
        if value is not None and mode == Pin.OUT:
            self.value(value)

    def idle(self):
        # The level of a pin nobody drives.
        return 1 if self.pull == Pin.PULL_UP else 0

    def value(self, v=None):
        if v is None:
            return self._read()
        if self.mode != Pin.OUT:
            raise OSError("pin %s is an input" % self.name)
        self._out = 1 if v else 0
        d = _pins()
        if d is not None:
            with d.open("/" + self.name, "w") as f:
                f.write("1" if self._out else "0")
        return None

    __call__ = value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def _read(self):
        d = _pins()
        if d is None:
            return self._out if self.mode == Pin.OUT else self.idle()
        try:
            with d.open("/" + self.name, "r") as f:
                text = f.read(8)
        except OSError:  # no file: nobody drives the pin
            return self._out if self.mode == Pin.OUT else self.idle()
        s = text.strip()
        if s == "0" or s == "1":
            _bad.pop(self.name, None)
            return int(s)
        if _bad.get(self.name) != text:
            _bad[self.name] = text
            from mpfota import log

            log.warn("vpin", "pin", self.name, "file holds %r, not 0 or 1: reading idle level"
                     % text)
        return self.idle()

    def __repr__(self):
        return "Pin(%s, mode=%s, pull=%s)" % (self.name, self.mode, self.pull)


def key(name, pull="up"):
    # A key input on pin `name`: pull="up" (wired to ground, pressed = 0, the usual) or "down".
    return Pin(name, Pin.IN, Pin.PULL_UP if pull == "up" else Pin.PULL_DOWN)


def set_level(name, level):
    # Drive the pin from the device side as the host would (tests without a host process).
    d = _pins()
    if d is None:
        raise OSError("no board directory (MPFOTA_FLASH) for pin files")
    n = _check_name(name)
    if level is None:
        try:
            d.remove("/" + n)
        except OSError:
            pass
        return
    with d.open("/" + n, "w") as f:
        f.write("1" if level else "0")
