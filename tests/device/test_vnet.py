# The virtual board's network (boards/unix/vnet.py), driven by a fake clock.
import os

import vnet


class Clock:
    def __init__(self):
        self.now = 1000

    def __call__(self):
        return self.now


def _names(adapters):
    return [a.name for a in adapters]


def _net(adapters=None, flag_dir=None):
    clock = Clock()
    return vnet.Net(adapters, flag_dir, clock=clock), clock


def test_defaults_come_up_after_their_delays_and_the_best_one_wins():
    net, clock = _net()
    assert _names(net.adapters()) == ["4G", "ETH", "WIFI"]
    assert net.default() is None
    clock.now += 99
    assert net.default() is None
    clock.now += 1
    assert net.default().name == "ETH"
    clock.now += 100
    assert net.get("WIFI").is_up()
    assert net.default().name == "ETH"  # WIFI is up too, ETH has the better priority
    assert not net.get("4G").is_up()
    assert net.get("4G").ready_in_ms() == 100
    clock.now += 100
    assert net.default().name == "4G"


def test_app_takes_adapters_down_and_up():
    net, clock = _net()
    net.up("WIFI")  # forced up before its delay
    assert net.default().name == "WIFI"
    clock.now += 1000
    assert net.default().name == "4G"
    net.down("4G")
    assert not net.get("4G").is_up()
    assert net.default().name == "ETH"
    net.down("ETH")
    net.down("WIFI")
    assert net.default() is None
    net.up("4G")
    assert net.default().name == "4G"


def test_host_flag_file_holds_an_adapter_down(tmp_path):
    flags = tmp_path + "/net"
    net, clock = _net(flag_dir=flags)
    clock.now += 1000
    assert net.default().name == "4G"  # no net/ folder yet: nothing held down
    os.mkdir(flags)
    with open(flags + "/4G.down", "w"):
        pass
    assert not net.get("4G").is_up()
    assert net.default().name == "ETH"
    net.up("4G")  # the host's cable pull wins over the app
    assert not net.get("4G").is_up()
    os.remove(flags + "/4G.down")
    assert net.default().name == "4G"


def test_set_priority_order_renumbers_named_first_then_the_rest():
    net, clock = _net()
    clock.now += 1000
    net.set_priority_order(["WIFI", "ETH"])
    assert _names(net.adapters()) == ["WIFI", "ETH", "4G"]
    assert [a.priority for a in net.adapters()] == [1, 2, 3]
    assert net.default().name == "WIFI"
    net.set_priority_order(["4G"])
    assert _names(net.adapters()) == ["4G", "WIFI", "ETH"]


def test_configured_adapters_and_one_that_never_comes_up_alone():
    net, clock = _net([{"name": "LTE", "up_after_ms": None, "priority": 1},
                       {"name": "LAN", "up_after_ms": 0, "priority": 5}])
    clock.now += 10 ** 6
    assert net.default().name == "LAN"
    assert net.get("LTE").ready_in_ms() is None
    net.up("LTE")
    assert net.default().name == "LTE"


def test_bad_names_are_refused():
    net, _ = _net()
    for call in (net.down, net.up, net.get):
        try:
            call("5G")
        except ValueError as exc:
            assert "5G" in str(exc)
        else:
            raise AssertionError("no error for an unknown adapter")
    try:
        net.set_priority_order(["ETH", "5G"])
    except ValueError:
        pass
    else:
        raise AssertionError("set_priority_order accepted an unknown adapter")
    assert _names(net.adapters()) == ["4G", "ETH", "WIFI"]  # unchanged after the refusal
    try:
        vnet.Net([{"name": "A"}, {"name": "A"}])
    except ValueError:
        pass
    else:
        raise AssertionError("duplicate adapter names accepted")


def test_module_functions_use_one_board_network():
    clock = Clock()
    vnet.configure(clock=clock)
    assert vnet.default() is None
    clock.now += 150
    assert vnet.default().name == "ETH"
    vnet.down("ETH")
    assert vnet.default() is None
    vnet.set_priority_order(["WIFI"])
    clock.now += 100
    assert vnet.default().name == "WIFI"
    assert vnet.get("WIFI") is vnet.adapters()[0]
