# Packages on the ESP32 board module (boards/esp32 against tests/fakes/esp32): an ESP-IDF app
# image in the core section goes through the same slot writer and image check; the script set
# follows it; a package for another board or with another board's image is refused.
import esp32  # noqa: F401  (first: the fake teaches the bootloader ESP32 images)
import vb

BOARD = "esp32"
TIMEOUT = 60
# (board.bsp() reads os.uname(), which the unix port lacks: the firmware name is given.)
IDENTITY = {"project": "DEMO", "version": "001.000.000",
            "firmware_name": "DEMO_LuatOS-SoC_ESP32_1"}


async def _install(kit, name):
    from mpfota import http, package

    resp = await http.request("GET", kit["base"] + kit["packages"][name]["path"], bytearray(1024))
    try:
        return await package.install(resp, **IDENTITY)
    finally:
        await resp.aclose()


async def _refused(kit, name, reason):
    import vpartition
    from mpfota import package, scripts

    try:
        await _install(kit, name)
    except package.PackageError as e:
        assert e.reason == reason, (name, e)
    else:
        raise AssertionError(name + " must be refused")
    assert vpartition.boot_record() is None
    assert scripts.staged() is None


async def test_core_and_scripts_on_esp32(esp32_board, package_kit):
    vb.boot()
    import board
    import mpfota.bootapply
    from mpfota import confirm, scripts

    assert board.NAME == "esp32"
    m = await _install(package_kit, "esp32-both")
    assert m.firmware_name == "DEMO_LuatOS-SoC_ESP32_1"
    assert vb.reboot() == 1
    assert mpfota.bootapply.run() == "pending"
    assert confirm.status() == "pending"
    with open("/main.py") as f:
        assert 'VERSION = "001.000.001"' in f.read()
    # Not confirmed: the bootloader rolls the core back, the scripts follow.
    assert vb.reboot() == 0
    assert mpfota.bootapply.run() == "rolled_back"
    assert scripts.installed() is None


async def test_unix_package_and_unix_image_refused_on_esp32(esp32_board, package_kit):
    vb.boot()
    await _refused(package_kit, "both", "firmware")
    await _refused(package_kit, "esp32-unix-core", "image")
