# The scenario apps on the ESP32 board module (boards/esp32 against tests/fakes/esp32): the same
# file joins Wi-Fi (WIFI_SSID, LuatOS netdrv_wifi), waits for lnet's "WIFI" adapter, checks,
# and sleeps with machine.deepsleep and a 4-hour wake timer.
import esp32  # noqa: F401  (first: the fake teaches the bootloader ESP32 images)
import vb

BOARD = "esp32"
TIMEOUT = 60


def _app(n, **settings):
    # boards/unix/apps/scenarioN.py with settings set (as mpfota_host.scenarios.render does).
    root = vb.__file__.rsplit("/", 3)[0]
    with open(root + "/boards/unix/apps/scenario%d.py" % n) as f:
        lines = f.read().split("\n")
    out = []
    for line in lines:
        name = line.split(" = ", 1)[0]
        if name in settings:
            line = "%s = %r" % (name, settings.pop(name))
        out.append(line)
    assert not settings, settings
    return "\n".join(out)


def test_scenario3_joins_wifi_checks_and_deep_sleeps(esp32_board, http_server):
    text = _app(3, FOTA_URL="###" + http_server["base"] + "/status/404", WIFI_SSID="lab",
                WIFI_PASSWORD="secret", FOTA_WAIT_MS=5000)
    vb.boot()
    import os

    import board
    import machine
    import network

    # Where the fake's deepsleep() leaves the wake time (the host directory, as bootrom does).
    machine.wake_file = os.VfsPosix(esp32_board).open("/wake.json", "w")

    assert board.NAME == "esp32"
    assert not network.WLAN(network.STA_IF).isconnected()
    try:
        exec(text, {"__name__": "__main__"})
    except SystemExit as e:
        code = e.args[0]
    else:
        raise AssertionError("the app did not go to sleep")
    assert code == 66, code  # machine.deepsleep
    assert network.WLAN(network.STA_IF).isconnected()
    import lnet

    assert lnet.dft() == "WIFI" and lnet.adapter()
    machine.wake_file.close()
    with os.VfsPosix(esp32_board).open("/wake.json", "r") as f:
        assert f.read() == '{"ms": 14400000}'
