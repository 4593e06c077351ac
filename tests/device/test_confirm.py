# Confirming a new image after a health check, or resetting (which rolls back) when it fails.
import vb


def _pending():
    vb.boot()
    import fota

    img = vb.image("2.0.0", 8000)
    assert fota.init(len=len(img))
    fota.run(img)
    assert fota.finish(True)
    vb.reboot()
    from mpfota import confirm

    assert confirm.status() == "pending"
    return confirm


async def test_healthy_image_is_confirmed(vboard, update_server):
    confirm = _pending()

    async def check():
        return await confirm.server_reachable(update_server["base"] + "/echo")

    assert await confirm.auto_confirm(check, 5000)
    assert confirm.status() == "valid"
    import vpartition

    assert vpartition.boot_record() == (1, "valid")


async def _resets(confirm, check, timeout_ms=5000):
    try:
        await confirm.auto_confirm(check, timeout_ms)
    except SystemExit as e:
        assert e.args[0] == 64, "board.reset() ends the boot with exit 64"
        return
    raise AssertionError("an unhealthy image must be reset")


async def test_unreachable_server_resets_and_rolls_back(vboard, update_server):
    confirm = _pending()

    async def check():
        return await confirm.server_reachable(update_server["refused"] + "/x")

    await _resets(confirm, check)
    assert confirm.status() == "pending"
    assert vb.reboot() == 0, "the reset boots the previous slot"
    assert confirm.check_boot() == "rolled_back"


async def test_failing_or_hanging_check_resets(vboard):
    confirm = _pending()

    async def raises():
        raise OSError(5)

    await _resets(confirm, raises)

    async def hangs():
        import asyncio

        await asyncio.sleep_ms(10000)
        return True

    await _resets(confirm, hangs, 200)


async def test_valid_image_needs_no_check(vboard):
    vb.boot()
    from mpfota import confirm

    async def never():
        raise AssertionError("no check when nothing is pending")

    assert await confirm.auto_confirm(never)
