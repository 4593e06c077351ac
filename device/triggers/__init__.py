# FOTA triggers: what starts libfota2.request() besides a timer (seed 001 §6.4.2 and §7.4).
#
#   triggers.tcp   a TCP server sends {"fota": "true", "url": "..."} (scenario 2)
#   triggers.mqtt  an MQTT downlink whose payload is "update" (umqtt.simple)
#   triggers.key   a key held for 3 s (LuatOS gpio.debounce(pin, 3000, 1))
#
# All of them go through request() below, which runs one FOTA at a time: while a request it
# started has not called back, another one is refused (the seed's `fota_running` flag, in
# customer_srv_fota.lua: "FOTA 正在运行，跳过本次请求").
# docs/scenarios.md has the protocols.
from mpfota import log

_running = False


def busy():
    # True while a request started here has not called back yet.
    return _running


def request(cb=None, opts=None, start=None):
    # libfota2.request(cb, opts) unless one is running: True when started, False when refused.
    # `start` replaces libfota2.request (an application with its own FOTA entry point).
    global _running
    if _running:
        log.warn("fota_task", "FOTA 正在运行，跳过本次请求")
        return False
    if start is None:
        import libfota2

        start = libfota2.request

    def done(ret):
        global _running
        _running = False  # before cb: cb may reboot, or start the next request itself
        if cb is not None:
            cb(ret)

    _running = True
    try:
        start(done, opts)
    except Exception:
        _running = False
        raise
    return True


class Connection:
    # The connection a network trigger keeps (tcp, mqtt): wait for the default adapter, open,
    # serve until it breaks, open again reconnect_ms later. A subclass sets `tag` (its log tag)
    # and `reconnect_ms` and writes _open() (the link, or None when it failed: logged),
    # _serve(link) (returns when the peer closed) and _close(link, bye) (bye: stop() asked).
    link = None  # the open link, or None while offline
    task = None
    connections = 0

    async def run(self):
        import lnet
        import lsys

        while True:
            while not lnet.adapter(lnet.dft()):
                log.warn(self.tag, "wait IP_READY", lnet.dft())
                await lsys.waitUntil("IP_READY", 1000)
            link = await self._open()
            if link is not None:
                self.link = link
                self.connections += 1
                try:
                    await self._serve(link)
                    log.warn(self.tag, "the server closed the connection")
                # OSError; the MQTT client's asserts and index errors on broken packets
                except Exception as exc:  # noqa: BLE001
                    log.warn(self.tag, "connection lost:", repr(exc))
                finally:
                    self.link = None
                    self._close(link, False)
            await lsys.wait(self.reconnect_ms)

    def start(self):
        import lsys

        self.task = lsys.taskInit(self.run)
        return self

    def stop(self):
        if self.task is not None:
            self.task.cancel()
            self.task = None
        link = self.link
        self.link = None
        if link is not None:
            self._close(link, True)


def device_id():
    # The id LuatOS demos use for client ids and topics: the IMEI, else the MAC, else the UID.
    import board

    for f in (board.imei, board.mac):
        try:
            v = f()
        except (AttributeError, OSError, ValueError):
            v = None
        if v:
            return v.replace(":", "") if isinstance(v, str) else v
    import binascii

    return binascii.hexlify(board.unique_id()).decode()
