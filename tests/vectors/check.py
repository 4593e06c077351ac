"""Check the vectors in this folder against device/libfota2.py and device/update.py.

Runs under CPython (`python tests/vectors/check.py`, exit 1 on a mismatch) and under
MicroPython (tests/device/test_libfota2.py imports it). The schema is in README.md.
"""

import json
import sys

FILES = (
    "boards",
    "version",
    "firmware_name",
    "device_query",
    "result_codes",
    "iot_codes",
    "libfota2_url",
    "update_url",
)


def load(directory):
    out = {}
    for name in FILES:
        with open(f"{directory}/{name}.json") as f:
            out[name] = json.load(f)
    return out


def _uid(hexstr):
    import binascii

    return binascii.unhexlify(hexstr) if hexstr else None


def device(board):
    """A boards.json entry as libfota2.prepare() takes it (uid as bytes)."""
    return {
        "core_version": board["core_version"],
        "bsp": board["bsp"],
        "imei": board["imei"],
        "mac": board["mac"],
        "unique_id": _uid(board["uid"]),
    }


def _same(fails, what, got, want):
    if got != want:
        fails.append(f"{what}: got {got!r}, want {want!r}")


def check_pure(v, fails):
    import libfota2 as lf

    for c in v["version"]:
        _same(
            fails,
            f"version {c['core_version']!r} {c['VERSION']!r}",
            lf.derive_version(c["core_version"], c["VERSION"]),
            c["expect"],
        )
    for c in v["firmware_name"]:
        _same(
            fails,
            f"firmware_name {c['bsp']!r}",
            lf.firmware_name(c["PROJECT"], c["bsp"]),
            c["expect"],
        )
    for c in v["device_query"]:
        _same(
            fails,
            f"device_query {c!r}",
            lf.device_query(c["imei"], c["mac"], _uid(c["uid"])),
            c["expect"],
        )
    for c in v["result_codes"]:
        got = lf.result_code(c.get("status"), c.get("size", 0), c.get("error"),
                             c.get("in_body", False))
        _same(fails, f"result_code {c!r}", got, c["expect"])
    for c in v["iot_codes"]:
        _same(fails, f"iot_code {c['body']!r}", lf.iot_code(c["body"]), c["expect"])


def run_url_case(c, boards):
    """(result, opts) after calling libfota2.prepare() c["calls"] times."""
    import libfota2 as lf

    dev = device(boards[c["board"]])
    opts = dict(c["opts"])
    result = None
    for _ in range(c.get("calls", 1)):
        try:
            lf.prepare(opts, c["globals"], dev)
            result = None
        except lf.ConfigError:
            result = lf.CONFIG_ERROR
    return result, opts


def check_url_case(c, result, opts, fails):
    exp = c["expect"]
    name = c["name"]
    _same(fails, name + " result", result, exp.get("result"))
    if "url" in exp:
        _same(fails, name + " url", opts.get("url"), exp["url"])
    for k, want in exp.get("opts", {}).items():
        _same(fails, name + " opts." + k, opts.get(k), want)


def check_urls(v, fails):
    for c in v["libfota2_url"]["cases"]:
        result, opts = run_url_case(c, v["boards"])
        check_url_case(c, result, opts, fails)


def check_update(v, fails):
    import update

    for c in v["update_url"]:
        try:
            got = update.build_url(
                c["url"], c["globals"], c["imei"], c["core_version"], c["bsp"], c["redir"]
            )
        except update.ConfigError:
            got = None
        _same(fails, "update " + c["name"], got, c["expect"])


def run_all(v):
    fails = []
    check_pure(v, fails)
    check_urls(v, fails)
    check_update(v, fails)
    return fails


def main():
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    sys.path.insert(0, here + "/../../device")
    fails = run_all(load(here))
    for f in fails:
        print("FAIL", f)
    print(f"{len(fails)} mismatches")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
