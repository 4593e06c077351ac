# Device side of `mpfota bench --peer DIR`: one update of the ESP32 fakes' spare slot from a
# loopback URL, by mpfota or by the peer (glenn20's esp32-ota), or nothing (the board alone).
#   micropython peerbench.py mpfota|glenn20|board URL SHA256
# Both updates do the same work: HTTP GET, SHA-256 of the body, sector writes into the spare
# esp32.Partition, a read-back check, set_boot() (which checks the app image). Prints
# "elapsed_ms: N" once the boot record names the new slot.
import sys
import time

import bootrom
import esp32  # noqa: F401 - the ESP32 fakes, imported before the board boots

bootrom.boot()
mode, url, sha = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.ticks_ms()
if mode == "mpfota":
    import asyncio

    from mpfota import download

    asyncio.run(download.fetch(url, sha256=sha))
elif mode == "glenn20":
    import ota.update

    ota.update.from_file(url, sha=sha, verbose=False, reboot=False)
ms = time.ticks_diff(time.ticks_ms(), t0)
if mode != "board":
    import vpartition

    if vpartition.boot_record()[0] != 1:
        raise OSError("the boot record does not name the updated slot")
print("elapsed_ms:", ms)
