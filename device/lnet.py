# lnet: network readiness as LuatOS has it, on the board interface (docs/lsys.md).
#
#     import lnet as socket                      # reads like the Lua demos:
#     while not socket.adapter(socket.dft()):    # socket.adapter(socket.dft())
#         await sys.waitUntil("IP_READY", 1000)
#
# - dft(): the default adapter, as socket.dft() after libnetif.set_priority_order: the
#   highest-priority adapter that is up, else the highest-priority one (an id even when down).
# - adapter(name): True when that adapter is up (socket.adapter(id)).
# - set_priority_order(names): libnetif.set_priority_order with adapter names.
# - start(): a watcher task that polls the adapters every POLL_MS and publishes, through lsys,
#   "IP_READY", ip, name when one comes up and "IP_LOSE", name when one goes down (LuatOS
#   publishes the same two messages with the adapter's id). lsys.taskInit() and lsys.run()
#   start it; without it, poll() does one round by hand.
# Adapter names: the board's (board.net_adapters()); LWIP_GP, LWIP_ETH and LWIP_STA below name
# the usual three as LuatOS's socket constants do.
import asyncio

import board
import lsys

LWIP_GP = "4G"
LWIP_ETH = "ETH"
LWIP_STA = "WIFI"

POLL_MS = 100

_task = None
_up = {}  # adapter name -> up at the last poll


def _priority(a):
    return a.priority


def adapters():
    # The board's adapters, highest priority first.
    return sorted(board.net_adapters(), key=_priority)


def _is_up(a):
    try:
        return bool(a.is_up())
    except OSError as exc:  # a driver error counts as down
        lsys.log.warn("lnet", "adapter", a.name, "state unknown:", exc)
        return False


def dft():
    # The default adapter's name (None when the board has no adapter).
    first = None
    for a in adapters():
        if first is None:
            first = a.name
        if _is_up(a):
            return a.name
    return first


def adapter(name=None):
    # True when adapter `name` (default: dft()) is up; False for an unknown name.
    if name is None:
        name = dft()
    for a in board.net_adapters():
        if a.name == name:
            return _is_up(a)
    return False


def set_priority_order(names):
    # Adapters in `names` first, in that order (ValueError for a name the board lacks).
    board.net_set_priority_order(list(names))


def ip(name):
    # The adapter's IP address while it is up, else None.
    f = getattr(board, "net_ip", None)
    return f(name) if f is not None else None


def poll():
    # One watcher round: publish IP_LOSE / IP_READY for every adapter whose state changed.
    for a in adapters():
        up = _is_up(a)
        if up == _up.get(a.name, False):
            continue
        _up[a.name] = up
        if up:
            lsys.publish("IP_READY", ip(a.name), a.name)
        else:
            lsys.publish("IP_LOSE", a.name)


async def _watch():
    while True:
        poll()
        await asyncio.sleep_ms(POLL_MS)


def start():
    # Start the watcher (once). Adapters found up at the first round get their IP_READY then.
    global _task
    lsys._check_loop()
    if _task is None:
        _task = asyncio.create_task(_watch())
    return _task


def stop():
    # Stop the watcher; the next start() reports every up adapter again.
    global _task
    if _task is not None:
        _task.cancel()
        _task = None
    _up.clear()


def forget():
    # The event loop was replaced (lsys): the watcher task is gone; start() makes a new one.
    global _task
    _task = None
    _up.clear()


def running():
    return _task is not None
