# Functions the host tests call through the runner to check how failures are reported.


def fails_with_assertion():
    x = 41
    assert x == 42, "x should be 42"


async def coroutine_sets_flag(path):
    import asyncio

    await asyncio.sleep_ms(1)
    with open(path, "w") as f:
        f.write("ran")
