# lnet: LuatOS network readiness (socket.adapter(socket.dft()), libnetif priorities, IP_READY /
# IP_LOSE) on the board interface (device/lnet.py, docs/lsys.md). The unix board's adapters are
# vnet's; the ESP32 board's are checked against the network fakes (tests/fakes/esp32).
import os
import time

import lsys as sys

TIMEOUT = 60


class Clock:
    def __init__(self):
        self.now = 1000

    def __call__(self):
        return self.now


ADAPTERS = [{"name": "4G", "up_after_ms": None, "priority": 1},
            {"name": "ETH", "up_after_ms": 100, "priority": 2},
            {"name": "WIFI", "up_after_ms": 200, "priority": 3}]


def _fake_net(flag_dir=None):
    import vnet

    clock = Clock()
    vnet.configure(ADAPTERS, flag_dir, clock=clock)
    return vnet, clock


def test_dft_and_adapter_follow_state_and_priorities():
    import lnet as socket

    vnet, clock = _fake_net()
    assert [a.name for a in socket.adapters()] == ["4G", "ETH", "WIFI"]
    assert socket.dft() == "4G"  # nothing up: the highest-priority adapter, as an id
    assert socket.adapter() is False and socket.adapter("ETH") is False
    assert socket.ip("ETH") is None
    clock.now += 100
    assert socket.dft() == "ETH" and socket.adapter() is True
    assert socket.adapter(socket.LWIP_GP) is False and socket.adapter(socket.LWIP_ETH) is True
    assert socket.ip("ETH") == "127.0.0.1"
    socket.set_priority_order(["WIFI", "ETH"])
    assert [a.name for a in socket.adapters()] == ["WIFI", "ETH", "4G"]
    assert socket.dft() == "ETH"  # WIFI not up yet
    clock.now += 100
    assert socket.dft() == "WIFI"
    vnet.up("4G")
    assert socket.dft() == "WIFI"  # up, but lower in the order
    socket.set_priority_order(("4G",))
    assert socket.dft() == "4G" and socket.LWIP_STA == "WIFI"
    assert socket.adapter("5G") is False
    try:
        socket.set_priority_order(["ETH", "5G"])
    except ValueError as exc:
        assert "5G" in str(exc)
    else:
        raise AssertionError("an unknown adapter name must be refused")


def test_poll_publishes_ip_ready_and_ip_lose_on_changes(tmp_path):
    import lnet as socket

    sys.NET_WATCH = False
    flags = tmp_path + "/net"
    os.mkdir(flags)
    vnet, clock = _fake_net(flags)
    events = []
    sys.subscribe("IP_READY", lambda ip, name: events.append(("IP_READY", ip, name)))
    sys.subscribe("IP_LOSE", lambda name: events.append(("IP_LOSE", name)))

    def step(advance=0):
        clock.now += advance
        socket.poll()
        sys.run()  # dispatches what poll() published

    step()
    assert events == []
    step(150)
    assert events == [("IP_READY", "127.0.0.1", "ETH")]
    step()
    assert len(events) == 1  # no change, no message
    with open(flags + "/ETH.down", "w"):
        pass  # the host pulls the cable
    step(100)
    assert events[1:] == [("IP_LOSE", "ETH"), ("IP_READY", "127.0.0.1", "WIFI")]
    os.remove(flags + "/ETH.down")
    vnet.up("4G")
    vnet.down("WIFI")
    step()
    assert events[3:] == [("IP_READY", "127.0.0.1", "4G"), ("IP_READY", "127.0.0.1", "ETH"),
                          ("IP_LOSE", "WIFI")]  # in priority order
    socket.stop()  # forgets what it saw: every up adapter is reported again
    step()
    assert [e[2] for e in events[6:]] == ["4G", "ETH"]


def test_task_init_starts_the_watcher(vboard):
    # Default board adapters (board.json): ETH is up first, 100 ms after boot.
    import vb

    vb.boot()
    import lnet as socket

    out = []

    async def task():
        out.append(await sys.waitUntil("IP_READY", 5000))
        host = os.VfsPosix(vboard)
        host.mkdir("/net")
        with host.open("/net/ETH.down", "w"):
            pass
        out.append(await sys.waitUntil("IP_LOSE", 5000))

    assert not socket.running()
    sys.taskInit(task)
    assert socket.running()
    sys.run()
    assert out == [(True, "127.0.0.1", "ETH"), (True, "ETH")], out
    socket.stop()
    assert not socket.running()


def test_seed_wait_loop_with_priority_changes_and_late_adapters(vboard):
    # The loop of seed 001 section 6.4.1, exactly, on the virtual board: every adapter starts
    # held down by the host (DIR/net/<NAME>.down); while the loop waits, the priority order
    # changes, WIFI comes up and is pulled again at once, ETH comes up late (the loop ends on
    # it), then 4G comes up and, having the first priority, becomes the default.
    import vb

    flags = vboard + "/net"
    os.mkdir(flags)
    for name in ("4G", "ETH", "WIFI"):
        with open(flags + "/" + name + ".down", "w"):
            pass
    vb.boot()  # from here / is the board's littlefs; the host's files go through VfsPosix
    host = os.VfsPosix(flags)
    import lnet as socket

    socket.set_priority_order(["ETH", "WIFI", "4G"])
    turns = []  # socket.dft() at each turn of the loop
    events = []
    result = []

    async def fota_task_func():
        while not socket.adapter(socket.dft()):
            sys.log.warn("fota_task_func", "wait IP_READY", socket.dft())
            turns.append(socket.dft())
            await sys.waitUntil("IP_READY", 1000)
        sys.log.info("fota_task_func", "recv IP_READY", socket.dft())
        result.append(socket.dft())

    def on_ready(ip, name):
        events.append(("IP_READY", ip, name))
        if name == "WIFI":
            with host.open("/WIFI.down", "w"):
                pass  # gone again before the waiting task looks

    def on_lose(name):
        events.append(("IP_LOSE", name))

    async def host_side():
        await sys.wait(1300)
        socket.set_priority_order(["4G", "WIFI", "ETH"])  # while the loop waits
        await sys.wait(1000)
        host.remove("/WIFI.down")
        await sys.wait(500)
        host.remove("/ETH.down")
        ok, ip, name = await sys.waitUntil("IP_READY", 5000)
        assert (ok, name) == (True, "ETH")
        await sys.wait(300)
        host.remove("/4G.down")
        ok, ip, name = await sys.waitUntil("IP_READY", 5000)
        assert (ok, name) == (True, "4G")
        result.append(socket.dft())
        sys.timerStop(guard)

    guard = sys.timerStart(sys.stop, 20000)
    sys.subscribe("IP_READY", on_ready)
    sys.subscribe("IP_LOSE", on_lose)
    t0 = time.ticks_ms()
    sys.taskInit(fota_task_func)
    sys.taskInit(host_side)
    sys.run()
    took = time.ticks_diff(time.ticks_ms(), t0)
    print("turns", turns, "events", events, "result", result, "ms", took)
    assert result == ["ETH", "4G"], (result, turns, events)
    # Turns: ETH first (its priority), then 4G after the change; one turn was woken by WIFI's
    # IP_READY (WIFI was down again when the loop looked), the others by the 1 s timeout.
    assert turns[0] == "ETH" and "4G" in turns, turns
    assert turns == sorted(turns, key=lambda n: n != "ETH"), turns
    assert len(turns) >= 3, turns
    names = [(e[0], e[-1]) for e in events]
    assert names == [("IP_READY", "WIFI"), ("IP_LOSE", "WIFI"), ("IP_READY", "ETH"),
                     ("IP_READY", "4G")], events
    assert all(e[1] == "127.0.0.1" for e in events if e[0] == "IP_READY")


def test_esp32_board_adapters(esp32_board):
    # boards/esp32 against the ESP32 fakes (as BOARD = "esp32" tests run): WLAN STA is "WIFI",
    # a LAN the app created is "ETH"; Ethernet first by default.
    import sys as usys

    here = __file__.rsplit("/", 1)[0]
    repo = here.rsplit("/", 2)[0]
    usys.path[:0] = [repo + "/boards/esp32", repo + "/tests/fakes/esp32"]
    import board
    import network

    assert board.NAME == "esp32"
    import lnet as socket

    assert [a.name for a in board.net_adapters()] == ["WIFI"]  # no LAN object yet
    assert socket.dft() == "WIFI" and not socket.adapter()
    network.sim_wifi(delay_ms=0)
    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    sta.connect("shop", "secret")
    assert socket.adapter() and socket.ip("WIFI") == "192.168.4.2"
    network.sim_lan(link=False)
    lan = network.LAN(mdc=23, mdio=18, phy_type=network.PHY_LAN8720)
    lan.active(True)
    assert [a.name for a in socket.adapters()] == ["ETH", "WIFI"]
    assert socket.dft() == "WIFI"  # ETH comes first but its cable is out
    assert socket.ip("ETH") is None
    network.sim_lan(link=True)
    assert socket.dft() == "ETH"
    socket.set_priority_order(["WIFI"])
    assert [a.name for a in socket.adapters()] == ["WIFI", "ETH"]
    assert socket.dft() == "WIFI"
    try:
        socket.set_priority_order(["4G"])
    except ValueError as exc:
        assert "4G" in str(exc)
    else:
        raise AssertionError("the ESP32 board has no 4G adapter")
    sta.active(False)
    assert socket.dft() == "ETH"
    sys.NET_WATCH = False
    events = []
    sys.subscribe("IP_READY", lambda ip, name: events.append((ip, name)))
    socket.poll()
    sys.run()
    assert events == [("192.168.4.2", "ETH")]
