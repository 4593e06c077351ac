# The LuatOS URL rules of libfota2 (libfota2.lua): the version sent, the firmware name, the
# device id, and the query they make. Kept apart from libfota2 because a ###URL (the server's
# URL as given) needs none of them; libfota2.<name> reaches every name here. Pure: runs under
# CPython too (tests/vectors/check.py).
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from libfota2 import ConfigError, _unset

_MAX_VERSION_LEN = const(64)


def _digits_end(s, i):
    n = len(s)
    while i < n and "0" <= s[i] <= "9":
        i += 1
    return i


def version_groups(s):
    """Lua string.match(s, "(%d+).(%d+).(%d+)"): (x, y, z) strings or None.

    Unanchored, greedy with backtracking, and each "." matches any character, as in Lua."""
    if not isinstance(s, str) or len(s) > _MAX_VERSION_LEN:
        return None
    n = len(s)
    for i in range(n):
        e1 = _digits_end(s, i)
        for j in range(e1, i, -1):  # x = s[i:j], s[j] is the first "."
            if j >= n:
                continue
            e2 = _digits_end(s, j + 1)
            for m in range(e2, j + 1, -1):  # y = s[j+1:m], s[m] is the second "."
                if m >= n:
                    continue
                e3 = _digits_end(s, m + 1)
                if e3 > m + 1:
                    return s[i:j], s[j + 1 : m], s[m + 1 : e3]
    return None


def core_digits(core_version):
    # rtos.version():sub(2): the board's core version without one leading "V" or "v".
    core = str(core_version)
    return core[1:] if core[:1] in ("V", "v") else core


def derive_version(core_version, version):
    """The version libfota2 sends: <core>.<x>.<z> from VERSION "x.y.z" (y is ignored).

    None when VERSION does not hold three digit groups."""
    g = version_groups(version)
    if g is None or core_version is None:
        return None
    return "%s.%s.%s" % (core_digits(core_version), g[0], g[2])


def bsp_name(bsp):
    # rtos.bsp() cut at the first "-" ("Air780EHV-1.8V" -> "Air780EHV").
    bsp = str(bsp)
    i = bsp.find("-")
    return bsp if i < 0 else bsp[:i]


def firmware_name(project, bsp):
    return "%s_LuatOS-SoC_%s" % (project, bsp_name(bsp))


def hex_upper(data):
    # LuatOS string.toHex: upper-case hex digits, no separators.
    import binascii

    return binascii.hexlify(bytes(data)).decode().upper()


def mac_hex(mac):
    # wlan.getMac() form: 12 upper-case hex digits ("02:ab:..." -> "02AB...").
    if isinstance(mac, (bytes, bytearray)):
        return hex_upper(mac)
    return "".join(c for c in str(mac) if c not in ":-. ").upper()


def device_query(imei, mac, uid):
    """The device-id parameter (LuatOS's rule before 2026-06): imei=, else mac=, else uid=.

    None when the board has none of the three (LuatOS would send "nil")."""
    if imei:
        return "imei=%s" % (imei,)
    if mac:
        return "mac=" + mac_hex(mac)
    if uid:
        return "uid=" + hex_upper(uid)
    return None


# LuatOS master's rule (libfota2.lua get_device_query, 2026-06): the id by module model.
_BY_MODEL = (
    (("Air780E", "Air8000", "Air700"), "imei"),
    (("Air8101",), "mac"),
    (("Air1601", "Air1602", "Air1780"), "uid"),
)


def model_name(model, bsp):
    # hmeta.model(); a board without model() is named by its bsp (cut at "-").
    return str(model) if model else bsp_name(bsp or "")


def model_device_query(model, imei, mac, uid):
    """The device-id parameter by module model (opts id_rule "model"): Air780E*, Air8000 and
    Air700 send imei=; Air8101 mac=; Air1601, Air1602 and Air1780 "mac=" + the unique id in
    hex. None for other models (LuatOS would send "nil") or when the board lacks that id."""
    for prefixes, source in _BY_MODEL:
        for p in prefixes:
            if model[:len(p)] == p:
                if source == "imei":
                    return "imei=%s" % (imei,) if imei else None
                if source == "mac":
                    return "mac=" + mac_hex(mac) if mac else None
                return "mac=" + hex_upper(uid) if uid else None
    return None


def _board_query(opts, dev):
    # The device id of the board, by opts' id_rule ("portable", the default, or "model").
    imei, mac, uid = dev.get("imei"), dev.get("mac"), dev.get("unique_id")
    rule = opts.get("id_rule") or "portable"
    if rule == "portable":
        query = device_query(imei, mac, uid)
        if query is None:
            raise ConfigError("no device id: the board has no IMEI, MAC or unique id")
        return query
    if rule != "model":
        raise ConfigError("opts.id_rule must be \"portable\" or \"model\", not %r" % (rule,))
    model = model_name(dev.get("model"), dev.get("bsp"))
    query = model_device_query(model, imei, mac, uid)
    if query is None:
        raise ConfigError("no device id for model %s under the model rule (LuatOS would send "
                          "\"nil\"): use id_rule \"portable\" or set opts.imei" % (model,))
    return query


def join_query(url, query):
    # url + query with the separator LuatOS leaves to the user: none after "?" or "&" (or an
    # empty url), "&" when the url already has a query, else "?".
    if not url or url[-1] in "?&":
        return url + query
    return url + ("&" if "?" in url else "?") + query


def build(opts, g, dev, url):
    """The IoT-platform URL for prepare(): fills in opts' project_key, version, firmware_name
    and url; returns the device-id query used ("" when opts.imei gave the id)."""
    query = ""
    if _unset(opts.get("project_key")):
        key = g.get("PRODUCT_KEY")
        if _unset(key):
            raise ConfigError("PRODUCT_KEY is not set: the IoT platform needs it "
                              "(a server URL with every parameter can be given as ###url)")
        opts["project_key"] = key
    if _unset(opts.get("version")):
        v = derive_version(dev.get("core_version"), g.get("VERSION"))
        if v is None:
            raise ConfigError("VERSION %r is not of the form xxx.yyy.zzz"
                              % (g.get("VERSION"),))
        opts["version"] = v
    if _unset(opts.get("firmware_name")):
        project = g.get("PROJECT")
        if _unset(project):
            raise ConfigError("PROJECT is not set: it names the firmware")
        opts["firmware_name"] = firmware_name(project, dev.get("bsp") or "")
    imei = opts.get("imei")
    if _unset(imei):
        query = _board_query(opts, dev)
        full = join_query(url, query)
    else:
        full = join_query(url, "imei=%s" % (imei,))
    opts["url"] = "%s&project_key=%s&firmware_name=%s&version=%s" % (
        full, opts["project_key"], opts["firmware_name"], opts["version"])
    return query
