"""The TCP command parser (device/triggers/tcp.py parse / fota_opts) is plain logic: it runs
under CPython too. Fuzzed here, and checked to decide the same way on the unix port."""

from __future__ import annotations

import json
import random
import sys

from mpdevice import run_code
from mpfota_host import paths

sys.path.insert(0, str(paths.DEVICE))
from triggers import tcp  # noqa: E402

EVENTS = {"fota", "ignored", "error"}
ERRORS = {"json", "type", "fota", "url", "version"}

SEEDS = [
    b'{"fota": "true", "url": "http://h/x.bin"}',
    b'{"fota": "true", "url": "###http://h/x.bin", "version": "001.000.001"}',
    b'{"fota": true, "url": "http://h/x.bin"}',
    b'{"fota": "false", "url": "http://h/x.bin"}',
    b'{"fota": "TRUE", "url": "http://h/x.bin"}',
    b'{"fota": 1, "url": "http://h/x.bin"}',
    b'{"fota": "true", "url": ""}',
    b'{"fota": "", "url": "http://h/"}',
    b'{"fota": false, "url": "http://h/"}',
    b'{"fota": null, "url": "http://h/"}',
    b'{"fota": "true", "url": "http://h/", "version": null}',
    b'{"fota": "true", "url": ["http://h/"]}',
    b'{"url": "http://h/"}',
    b'"fota"',
    b"[]",
    b"123",
    b"null",
    b"   ",
    b"",
    b"{",
    b'{"fota": "true", "url": "http://\xe4\xb8\xad/x"}',
    b"\xff",
]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:
            del b[min(i, len(b) - 1)]
        elif op == 1:
            b.insert(i, rng.choice(b'{}[]",:\\ 0aetrufl\x00\xff'))
        elif op == 2 and b:
            b[min(i, len(b) - 1)] = rng.randrange(256)
        else:
            b[i:i] = rng.choice([b'"fota"', b'"true"', b'"url"', b"null", b"true", b","])
    return bytes(b)


def _corpus(n: int = 400) -> list[bytes]:
    rng = random.Random(20250807)
    out = list(SEEDS)
    while len(out) < n:
        out.append(_mutate(rng, rng.choice(SEEDS)))
    return out


def _decision(r: dict | None):
    # What the device does with a message (the free-text detail and reason may differ).
    if r is None:
        return None
    if r["event"] == "fota":
        return ("fota", r["url"], r["version"])
    if r["event"] == "error":
        return ("error", r["error"])
    return (r["event"],)


def test_parse_always_decides():
    for raw in _corpus(3000):
        r = tcp.parse(raw)
        if r is None:
            assert not raw.strip(), raw
            continue
        assert r["event"] in EVENTS, (raw, r)
        if r["event"] == "fota":
            assert isinstance(r["url"], str) and r["url"].strip("#").strip(), (raw, r)
            assert r["version"] is None or isinstance(r["version"], str)
            opts = tcp.fota_opts({"timeout": 5000}, r)
            assert opts["url"].startswith("###") and opts["timeout"] == 5000
        elif r["event"] == "error":
            assert r["error"] in ERRORS and r["detail"], (raw, r)
        else:
            assert r["reason"], (raw, r)


def test_fota_opts_copies_and_keeps_a_given_prefix():
    base = {"url": "unused", "version": "9"}
    o = tcp.fota_opts(base, {"url": "###http://h/a", "version": None})
    assert o == {"url": "###http://h/a", "version": "9"} and base["url"] == "unused"
    o = tcp.fota_opts(None, {"url": "http://h/a", "version": "001.000.002"})
    assert o == {"url": "###http://h/a", "version": "001.000.002"}


def test_parse_decides_the_same_on_the_unix_port():
    corpus = _corpus(400)
    code = (
        "import json, sys\n"
        "from triggers.tcp import parse\n"
        f"msgs = json.loads({json.dumps(json.dumps([c.hex() for c in corpus]))})\n"
        "import binascii\n"
        "out = []\n"
        "for h in msgs:\n"
        "    out.append(parse(binascii.unhexlify(h)))\n"
        "print(json.dumps(out))\n"
    )
    proc = run_code(code, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    device = json.loads(proc.stdout.splitlines()[-1])
    diffs = [(raw, _decision(tcp.parse(raw)), _decision(d))
             for raw, d in zip(corpus, device, strict=True)
             if _decision(tcp.parse(raw)) != _decision(d)]
    assert diffs == []


def _cpython_accepts(text: str) -> bool:
    def no_constant(name: str) -> None:
        raise ValueError(name)

    try:
        json.loads(text, parse_constant=no_constant)
    except (ValueError, RecursionError):
        return False
    return True


def test_json_check_matches_a_strict_parser():
    # The device's syntax check accepts exactly what CPython's strict json accepts (NaN and
    # Infinity refused), nested up to 16 levels.
    texts = [c.decode(errors="replace") for c in _corpus(3000)]
    texts += ["-0", "1e5", "1E+5", "-1.5e-3", "01", "1.", ".5", "-", "+1", "[1,]", "{,}",
              '"\\u00e9"', '"\\u00g9"', '"\\x"', '"a\tb"', "NaN", "[Infinity]", "[" * 16 +
              "]" * 16, "[" * 17 + "]" * 17, " \t\r\n{} \n", "{}\x0c", "\"\\ud800\""]
    for text in texts:
        want = _cpython_accepts(text) and not text.startswith("[" * 17)  # too deep
        assert (tcp.json_error(text) is None) == want, (text, tcp.json_error(text))
