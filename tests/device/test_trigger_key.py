# The GPIO key trigger (device/triggers/key.py) on the virtual board's simulated pins
# (boards/unix/vpin.py): a press shorter than the debounce time does nothing, a hold starts
# libfota2.request() once. Pin levels are set through the board directory's pins/<name> files,
# the way the host sets them.
import vb

TIMEOUT = 60


def _pins_dir(vboard):
    import os

    return os.VfsPosix(vboard + "/pins")


def test_vpin_reads_the_host_file_and_its_idle_level(vboard):
    vb.boot()
    import vpin

    k = vpin.key(0)  # pull-up: released (no file) reads 1
    assert k.value() == 1
    assert vpin.key("K2", pull="down").value() == 0
    d = _pins_dir(vboard)
    with d.open("/0", "w") as f:
        f.write("0\n")
    assert k.value() == 0
    with d.open("/0", "w") as f:
        f.write(" 1 ")
    assert k() == 1
    # Anything else reads as the idle level (and is logged once).
    with d.open("/0", "w") as f:
        f.write("pressed")
    assert k.value() == 1
    d.remove("/0")
    assert k.value() == 1
    # An output drives the file the host reads.
    led = vpin.Pin("LED", vpin.Pin.OUT, value=1)
    with d.open("/LED", "r") as f:
        assert f.read() == "1"
    led.off()
    with d.open("/LED", "r") as f:
        assert f.read() == "0"
    assert led.value() == 0
    for bad in ("../flash.bin", "a/b", "", "x" * 33):
        try:
            vpin.Pin(bad)
        except ValueError:
            pass
        else:
            raise AssertionError("pin name %r accepted" % bad)
    try:
        k.value(0)
    except OSError:
        pass
    else:
        raise AssertionError("an input was driven")


def test_debounce_delay_mode_logic():
    from triggers.key import BOTH, FALLING, RISING, Debounce

    d = Debounce(3000, FALLING, 1)
    assert not d.feed(1, 0)
    assert not d.feed(0, 100)  # pressed
    assert not d.feed(0, 3099)
    assert not d.feed(1, 3000 + 50)  # released after 2.95 s: nothing
    assert not d.feed(1, 9000)
    assert not d.feed(0, 10000)  # pressed again
    assert not d.feed(0, 12999)
    assert d.feed(0, 13000)  # held 3 s: once
    assert not d.feed(0, 20000)  # still held: not again
    assert not d.feed(1, 21000)  # release: FALLING only
    assert not d.feed(1, 30000)
    # A bouncing contact restarts the wait at each edge.
    d = Debounce(100, FALLING, 1)
    t = 0
    for level in (0, 1, 0, 1, 0):
        assert not d.feed(level, t)
        t += 60
    assert not d.feed(0, t + 39)
    assert d.feed(0, t + 40)
    # Both edges (LuatOS gpio.BOTH), rising only, and no debounce at all.
    d = Debounce(50, BOTH, 1)
    assert not d.feed(0, 0) and d.feed(0, 50) and not d.feed(1, 60) and d.feed(1, 110)
    d = Debounce(50, RISING, 1)
    assert not d.feed(0, 0) and not d.feed(0, 100) and not d.feed(1, 110) and d.feed(1, 160)
    d = Debounce(0, FALLING, 1)
    assert d.feed(0, 5) and not d.feed(0, 6)
    try:
        Debounce(10, 7)
    except ValueError:
        pass
    else:
        raise AssertionError("bad edge accepted")


async def _hold(name, ms):
    import asyncio

    import vpin

    vpin.set_level(name, 0)
    await asyncio.sleep_ms(ms)
    vpin.set_level(name, 1)


async def test_short_press_does_nothing_long_hold_acts_once(vboard):
    vb.boot()
    import asyncio

    from triggers import key

    fired = []
    k = key.watch("KEY", ms=400, action=lambda: fired.append(1))
    await asyncio.sleep_ms(100)
    await _hold("KEY", 150)  # shorter than 400 ms
    await asyncio.sleep_ms(500)
    assert fired == []
    await _hold("KEY", 200)
    await asyncio.sleep_ms(500)
    assert fired == []
    await _hold("KEY", 700)  # held past 400 ms: once, while still held
    assert fired == [1]
    await asyncio.sleep_ms(500)  # the release is not an event
    assert fired == [1] and k.presses == 1
    k.stop()


async def test_three_second_hold_starts_the_update(vboard, update_server):
    # The seed's key upgrade: gpio.debounce(0, 3000, 1) + gpio.setup(0, request, gpio.PULLUP),
    # with the default 3 s and a real libfota2 download into the spare slot.
    vb.boot()
    import asyncio

    import triggers
    import vpartition
    from triggers import key

    img = update_server["images"]["core-2.0.0"]
    opts = {"url": "###" + update_server["base"] + img["path"]}
    results = []
    k = key.watch(0, lambda ret: results.append(ret), opts)
    assert k.debounce.ms == 3000
    await asyncio.sleep_ms(100)
    await _hold(0, 2500)  # 2.5 s: not long enough
    await asyncio.sleep_ms(300)
    assert results == [] and not triggers.busy() and k.presses == 0
    assert vpartition.boot_record() is None  # nothing written: otadata still blank
    await _hold(0, 3300)  # held 3 s: the check starts (still held at that moment)
    assert k.presses == 1
    for _ in range(100):
        if results:
            break
        await asyncio.sleep_ms(100)
    assert results == [0], results
    assert vpartition.boot_record() == (1, "new")  # downloaded, verified, switched
    k.stop()
