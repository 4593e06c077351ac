# Key inputs on the ESP32: a machine.Pin in input mode with its pull resistor, read by polling
# (triggers.key). The same accessor as boards/unix/vpin.key(), so device code need not know
# which board it runs on.
#
#   keys.key(0)        GPIO0 with the internal pull-up (pressed = 0): the BOOT button of most
#   keys.key("BOOT")   ESP32 development boards, wired to ground
import machine

# Names for pins that have a usual key on development boards.
NAMES = {"BOOT": 0}


def key(name, pull="up"):
    # machine.Pin for the key on GPIO `name` (a number, or a name in NAMES); pull "up" or "down".
    gpio = NAMES.get(name, name) if isinstance(name, str) else name
    try:
        gpio = int(gpio)
    except ValueError:
        raise ValueError("key %r: a GPIO number or one of %s" % (name, sorted(NAMES)))
    p = machine.Pin.PULL_UP if pull == "up" else machine.Pin.PULL_DOWN
    return machine.Pin(gpio, machine.Pin.IN, p)
