# The mpfota side of tests/host/test_luatos_conformance.py, run by the unix port: libfota2's
# URL building on many cases in one process, and one request() on the virtual board against a
# real loopback server. Each prints one line "RESULT <json>" for the host to read.
import json


def _board(b):
    # The case's board as prepare() takes it (the unique id travels as hex).
    dev = dict(b)
    uid = dev.get("unique_id")
    dev["unique_id"] = bytes.fromhex(uid) if uid else None
    return dev


def prepare_cases(cases):
    # For each case, one line "CASE <json>": per call ["url", method, url] or ["ret", 5, cause].
    import libfota2

    for c in cases:
        opts = c["opts"]
        dev = _board(c["board"])
        calls = []
        for _ in range(c["calls"]):
            try:
                libfota2.prepare(opts, c["globals"], dev)
                calls.append(["url", opts["method"], opts["url"]])
            except libfota2.ConfigError as e:
                calls.append(["ret", 5, e.args[0]])
        print("CASE", json.dumps(calls))


async def request_once(opts, g):
    # libfota2.request() as an app calls it, on the booted virtual board: the callback codes.
    # (The board boots first: it remounts the module folders, so imports come after it.)
    import vb

    vb.boot()
    import libfota2
    import lsys

    lsys.PROJECT, lsys.VERSION, lsys.PRODUCT_KEY = g["PROJECT"], g["VERSION"], g["PRODUCT_KEY"]
    got = []
    libfota2.request(got.append, opts)
    await lsys.arun()
    print("RESULT", json.dumps(got))
