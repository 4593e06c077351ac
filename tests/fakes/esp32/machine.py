# Fake of MicroPython's machine module (esp32 port) for the unix port.
#
# reset(), soft_reset() and deepsleep() end the process with the exit codes of the virtual
# board (docs/architecture.md), so the runner can boot again. reset_cause() answers what the
# runner put in MPFOTA_RESET_CAUSE (or what a test set with sim_reset_cause()), as the esp32
# port's constants. unique_id() is the base MAC, as on an ESP32 (esp_efuse_mac_get_default).
import os

from micropython import const

PWRON_RESET = const(1)
HARD_RESET = const(2)
WDT_RESET = const(3)
DEEPSLEEP_RESET = const(4)
SOFT_RESET = const(5)

_EXIT_RESET = const(64)
_EXIT_SOFT_RESET = const(65)
_EXIT_DEEPSLEEP = const(66)

# The runner's cause names; an ESP32 cannot tell a power cut from a power-on.
_CAUSES = {"power_on": PWRON_RESET, "power_cut": PWRON_RESET, "hard": HARD_RESET,
           "watchdog": WDT_RESET, "deepsleep": DEEPSLEEP_RESET, "soft": SOFT_RESET}

_cause = None
wake_file = None  # where deepsleep() leaves the wake time; else MPFOTA_FLASH/wake.json
_DEFAULT_MAC = b"\x24\x0a\xc4\x00\x00\x01"


def sim_reset_cause(cause):
    global _cause
    _cause = cause


def reset_cause():
    if _cause is not None:
        return _cause
    return _CAUSES.get(os.getenv("MPFOTA_RESET_CAUSE") or "power_on", 0)


def reset():
    raise SystemExit(_EXIT_RESET)


def soft_reset():
    raise SystemExit(_EXIT_SOFT_RESET)


def deepsleep(ms=0):
    text = '{"ms": %d}' % ms
    if wake_file is not None:
        wake_file.write(text)
        wake_file.flush()
    elif os.getenv("MPFOTA_FLASH"):
        # The board's littlefs may be mounted at /: reach the host directory explicitly.
        with os.VfsPosix(os.getenv("MPFOTA_FLASH")).open("/wake.json", "w") as f:
            f.write(text)
    raise SystemExit(_EXIT_DEEPSLEEP)


def base_mac():
    # The board's MAC from board.json, as 6 bytes (the fake network module uses it too).
    path = os.getenv("MPFOTA_FLASH")
    if not path:
        return _DEFAULT_MAC
    import json

    with open(path + "/board.json") as f:
        text = json.load(f).get("mac")
    return bytes.fromhex(text.replace(":", "")) if text else _DEFAULT_MAC


def unique_id():
    return base_mac()


def idle():
    pass


class WDT:
    # A watchdog that never fires here; it only checks its arguments.
    def __init__(self, id=0, timeout=5000):
        if timeout < 1:
            raise ValueError("timeout")
        self.timeout = timeout

    def feed(self):
        pass
