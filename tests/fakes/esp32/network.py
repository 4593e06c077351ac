# Fake of MicroPython's network module (esp32 port) for the unix port: WLAN and a minimal LAN.
#
# WLAN objects of one interface share their state, like the ESP32's. connect() needs
# active(True) first ("Wifi Not Started" otherwise) and the station is connected
# `delay_ms` after connect() (default 100, MPFOTA_WIFI_DELAY_MS, or sim_wifi()). With
# sim_wifi(ssid=..., key=...) a wrong network or key never connects and status() says why.
# LAN() needs mdc=, mdio= and phy_type= the first time and returns the same object later;
# its link comes up `delay_ms` after active(True) when sim_lan(link=True) (the default).
import os
import time

import machine
from micropython import const

STA_IF = const(0)
AP_IF = const(1)

STAT_IDLE = const(1000)
STAT_CONNECTING = const(1001)
STAT_GOT_IP = const(1010)
STAT_NO_AP_FOUND = const(201)
STAT_WRONG_PASSWORD = const(202)

PHY_LAN8720 = const(1)
PHY_IP101 = const(2)

_sim = {"delay_ms": int(os.getenv("MPFOTA_WIFI_DELAY_MS") or 100), "ssid": None, "key": None,
        "lan_link": True, "lan_delay_ms": 0}
_wlan = [{"active": False, "since": None, "status": STAT_IDLE, "ssid": "", "config": {}}
         for _ in range(2)]
_lan = None
_IP = ("192.168.4.2", "255.255.255.0", "192.168.4.1", "192.168.4.1")
_NO_IP = ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")


def sim_wifi(delay_ms=None, ssid=None, key=None):
    # The access point: how long a connection takes, and its name and key (None: any).
    if delay_ms is not None:
        _sim["delay_ms"] = delay_ms
    _sim["ssid"] = ssid
    _sim["key"] = key


def sim_lan(link=True, delay_ms=0):
    _sim["lan_link"] = link
    _sim["lan_delay_ms"] = delay_ms


def _elapsed(since, delay):
    return since is not None and time.ticks_diff(time.ticks_ms(), since) >= delay


class WLAN:
    def __init__(self, interface=STA_IF):
        if interface not in (STA_IF, AP_IF):
            raise ValueError("invalid WLAN interface identifier")
        self._if = interface
        self._s = _wlan[interface]

    def active(self, *flag):
        if not flag:
            return self._s["active"]
        self._s["active"] = bool(flag[0])
        if not flag[0]:
            self.disconnect()
        return None

    def connect(self, ssid=None, key=None, *, bssid=None):
        s = self._s
        if not s["active"]:
            raise OSError("Wifi Not Started")
        ssid = ssid or s["config"].get("ssid", "")
        s["ssid"] = ssid
        s["since"] = time.ticks_ms()
        if _sim["ssid"] is not None and ssid != _sim["ssid"]:
            s["status"] = STAT_NO_AP_FOUND
        elif _sim["key"] is not None and key != _sim["key"]:
            s["status"] = STAT_WRONG_PASSWORD
        else:
            s["status"] = STAT_CONNECTING

    def disconnect(self):
        self._s["since"] = None
        self._s["status"] = STAT_IDLE

    def status(self, *param):
        if param:
            if param[0] == "rssi":
                if not self.isconnected():
                    raise OSError("STA is not connected")
                return -58
            raise ValueError("unknown status param")
        s = self._s
        if s["status"] == STAT_CONNECTING and _elapsed(s["since"], _sim["delay_ms"]):
            s["status"] = STAT_GOT_IP
        return s["status"]

    def isconnected(self):
        return self._s["active"] and self.status() == STAT_GOT_IP

    def config(self, *args, **kw):
        if kw:
            self._s["config"].update(kw)
            return None
        if len(args) != 1:
            raise TypeError("must query one param")
        key = args[0]
        if key == "mac":
            mac = bytearray(machine.base_mac())
            mac[5] = (mac[5] + self._if) & 0xFF  # the soft-AP MAC is the base MAC + 1
            return bytes(mac)
        if key in ("ssid", "essid"):
            return self._s["ssid"] or self._s["config"].get("ssid", "")
        if key in self._s["config"]:
            return self._s["config"][key]
        raise ValueError("unknown config param")

    def ifconfig(self, *cfg):
        if cfg:
            self._s["config"]["ifconfig"] = tuple(cfg[0])
            return None
        if not self.isconnected():
            return _NO_IP
        return self._s["config"].get("ifconfig", _IP)


class _LAN:
    def __init__(self):
        self._active = False
        self._since = None

    def active(self, *flag):
        if not flag:
            return self._active
        self._active = bool(flag[0])
        self._since = time.ticks_ms() if flag[0] else None
        return None

    def isconnected(self):
        return self._active and _sim["lan_link"] and _elapsed(self._since, _sim["lan_delay_ms"])

    def status(self):
        return STAT_GOT_IP if self.isconnected() else STAT_IDLE

    def config(self, key):
        if key != "mac":
            raise ValueError("unknown config param")
        mac = bytearray(machine.base_mac())
        mac[5] = (mac[5] + 3) & 0xFF  # Ethernet MAC: base MAC + 3 on an ESP32
        return bytes(mac)

    def ifconfig(self):
        return _IP if self.isconnected() else _NO_IP


def LAN(*args, **kw):
    global _lan
    if _lan is None:
        for name in ("mdc", "mdio", "phy_type"):
            if name not in kw:
                raise TypeError("'%s' argument required" % name)
        _lan = _LAN()
    return _lan
