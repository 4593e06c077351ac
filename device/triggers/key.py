# A key that starts a FOTA when held (seed 001 §7.4):
#
#   LuatOS                                          mpfota
#   gpio.debounce(0, 3000, 1)                       from triggers import key
#   gpio.setup(0, function()                        key.watch(0, fota_cb, ota_opts)
#       libfota2.request(fota_cb, ota_opts)
#   end, gpio.PULLUP)
#
# watch() polls the pin every POLL_MS (the virtual board's pins have no interrupts, and a 3 s
# hold does not need them) and applies LuatOS's delay debounce (gpio.debounce mode 1): after an
# edge, the event fires once when the level has not changed for `ms`. A shorter press does
# nothing. The default edge is the press of a key wired to ground with the pull-up (FALLING);
# LuatOS's gpio.setup without an irq mode also reports the release (BOTH), which would start a
# second check 3 s after letting go, so it is not the default here.
# The pin comes from board.key(name) (boards/esp32/keys.py, boards/unix/vpin.py).
try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython, for the pure Debounce logic
    import time

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b


DEBOUNCE_MS = 3000
POLL_MS = 20

FALLING = 1  # the level goes to 0 (a key to ground, with the pull-up, is pressed)
RISING = 2  # the level goes to 1
BOTH = 3


class Debounce:
    # LuatOS delay-mode debounce over level samples: feed(level, now_ms) returns True once per
    # edge whose new level then holds for `ms` (0: at the edge itself).
    def __init__(self, ms, edge=FALLING, level=1):
        if edge not in (FALLING, RISING, BOTH):
            raise ValueError("edge %r: FALLING, RISING or BOTH" % (edge,))
        self.ms = ms
        self.edge = edge
        self.level = level
        self.since = None  # ticks of the pending edge, None when nothing is pending

    def _wanted(self, level):
        return bool(self.edge & (RISING if level else FALLING))

    def feed(self, level, now):
        level = 1 if level else 0
        if level != self.level:
            self.level = level
            self.since = now if self._wanted(level) else None
            if self.since is not None and self.ms <= 0:
                self.since = None
                return True
            return False
        if self.since is not None and ticks_diff(now, self.since) >= self.ms:
            self.since = None
            return True
        return False


def pin(name, pull="up"):
    # The key input `name` on this board (a machine.Pin or look-alike with value()).
    import board

    return board.key(name, pull)


class Key:
    # A watched key: stop() ends the watch; `presses` counts the events that fired.
    def __init__(self, name, action, ms, edge, pull, poll_ms):
        self.name = name
        self.action = action
        self.pin = pin(name, pull)
        self.debounce = Debounce(ms, edge, self.pin.value())
        self.poll_ms = poll_ms
        self.presses = 0
        self.task = None

    async def run(self):
        import asyncio

        from mpfota import log

        while True:
            await asyncio.sleep_ms(self.poll_ms)
            try:
                level = self.pin.value()
            except OSError as exc:
                log.warn("key", self.name, "cannot read the pin:", exc)
                continue
            if self.debounce.feed(level, ticks_ms()):
                self.presses += 1
                log.info("key", self.name, "held", self.debounce.ms, "ms")
                self.action()

    def stop(self):
        if self.task is not None:
            self.task.cancel()
            self.task = None


def watch(name, cb=None, opts=None, ms=DEBOUNCE_MS, edge=FALLING, pull="up", poll_ms=POLL_MS,
          action=None):
    # Start watching key `name`: when it is held `ms` (LuatOS gpio.debounce(name, ms, 1)),
    # triggers.request(cb, opts) starts a libfota2 check (refused while one runs), or action().
    import lsys

    import triggers

    if action is None:

        def action():
            triggers.request(cb, opts)

    k = Key(name, action, ms, edge, pull, poll_ms)
    k.task = lsys.taskInit(k.run)
    return k
