# Version and firmware-name rules of LuatOS remote upgrades (seed 001 §6.3, §7;
# docs/package-format.md).
#
# Pure logic: no board, no asyncio, no MicroPython-only module, so the same file runs under the
# unix port and CPython (host tools, property tests).
#
# Script VERSION is "A.B.C", three groups of 1 to 3 digits, each at most 999 ("001.000.001").
# B means nothing (history) but must be there. A new version A2.B2.C2 may replace A1.B1.C1 when
#   A2 == A1 and C2 > C1, or
#   A2 > A1 and C2 >= C1.
# Core versions ("V2012", "2.0.0") are compared by their numbers when both read as numbers.
# A firmware name may end with a partition-layout suffix ("..._Air780EHV_1"): a "_1" layout
# never takes a "_2" package.

MAX_PART = 999


def parse(version):
    # (A, B, C) for a well-formed script VERSION, else None.
    if not isinstance(version, str):
        return None
    parts = version.split(".")
    if len(parts) != 3:
        return None
    out = []
    for p in parts:
        if not 1 <= len(p) <= 3 or not _digits(p):
            return None
        out.append(int(p))
    return tuple(out)


def _digits(s):
    for ch in s:
        if ch < "0" or ch > "9":
            return False
    return True


def check(version):
    # None when `version` is a valid script VERSION, else the reason (for a log line).
    if parse(version) is None:
        return "VERSION %r must be xxx.yyy.zzz (three groups of digits, each <= %d)" % (
            version, MAX_PART)
    return None


def is_upgrade(old, new):
    # True when script version `new` may replace `old` (the A/C rule; B is ignored).
    a = parse(old)
    b = parse(new)
    if a is None or b is None:
        return False
    if b[0] == a[0]:
        return b[2] > a[2]
    return b[0] > a[0] and b[2] >= a[2]


def core_key(version):
    # The numbers of a core version ("V2012" -> (2012,), "2.0.0" -> (2, 0, 0)), or None when it
    # is not an optional "V" followed by dot-separated digit groups.
    if not isinstance(version, str) or not version:
        return None
    v = version[1:] if version[0] in "Vv" else version
    if not v:
        return None
    out = []
    for p in v.split("."):
        if not p or len(p) > 9 or not _digits(p):
            return None
        out.append(int(p))
    return tuple(out)


def compare_core(a, b):
    # -1, 0 or 1 as core version a is older, equal or newer than b; None when they cannot be
    # compared (then only string equality is known: 0 when equal).
    if a == b:
        return 0
    ka = core_key(a)
    kb = core_key(b)
    if ka is None or kb is None:
        return None
    n = max(len(ka), len(kb))
    ka = ka + (0,) * (n - len(ka))
    kb = kb + (0,) * (n - len(kb))
    if ka == kb:
        return 0
    return -1 if ka < kb else 1


def split_layout(firmware_name):
    # (base, suffix): "X_LuatOS-SoC_Air780EHV_1" -> ("X_LuatOS-SoC_Air780EHV", "1");
    # a name without a trailing "_<1 or 2 digits>" has suffix None.
    i = firmware_name.rfind("_")
    if i > 0:
        tail = firmware_name[i + 1:]
        if 1 <= len(tail) <= 2 and _digits(tail):
            return firmware_name[:i], tail
    return firmware_name, None


def layout_compatible(device_name, package_name):
    # True when a package built for `package_name` fits the partition layout of `device_name`.
    return split_layout(device_name)[1] == split_layout(package_name)[1]


def firmware_name(project, bsp, layout=None):
    # The LuatOS firmware name PROJECT_LuatOS-SoC_BSP, with the layout suffix when given.
    name = "%s_LuatOS-SoC_%s" % (project, bsp)
    return name + "_" + str(layout) if layout is not None else name


def report_version(core, script):
    # The version libfota2 reports: core number, then A and C of VERSION ("V2012", "001.000.001"
    # -> "2012.001.001"); None when either part is malformed.
    k = core_key(core)
    s = script.split(".") if parse(script) else None
    if k is None or s is None:
        return None
    return ".".join(str(x) for x in k) + "." + s[0] + "." + s[2]
