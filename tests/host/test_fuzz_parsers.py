"""Fuzzing, under CPython with hypothesis, of every device parser that reads untrusted bytes or
text: each one returns a defined value or raises its own documented error, never anything else
(docs/security.md, docs/reliability.md).

Inputs (who controls them) -> parser (device/) -> its documented error:

- HTTP status line, headers, chunk sizes, ranges (any server or proxy) -> mpfota/httpparse.py
  -> ParseError; URLs and Location (servers, TCP commands, Aliyun jobs) -> split_url,
  resolve_location -> ParseError;
- versions and firmware names (manifests, servers) -> mpfota/version.py -> values only;
- libfota2 options and platform answers -> libfota2.prepare, iot_code, version rules
  -> ConfigError; the older update module's answers and URL -> update.answer_of, build_url,
  luat_core -> ConfigError;
- the TCP command line -> triggers/tcp.parse, json_error -> a reply dict;
- the Aliyun upgrade JSON -> aliyun_ota.parse_job -> BadJob;
- a delta patch header -> mpfota/deltafmt.parse_header -> PatchError;
- a package header, manifest, entry, path, and the target checks -> mpfota/package.py
  -> PackageError;
- a package signature and a key file -> mpfota/rsa.verify (False), load_public_key
  -> ValueError.

A bounded run is part of `make test` (derandomized, fixed example counts, a few seconds);
`make fuzz` sets MPFOTA_FUZZ_EXAMPLES (examples per target) and runs with random seeds.
Every crash found becomes a regression example below (`@example`) with its fix.
"""

from __future__ import annotations

import json
import os
import string
import sys

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mpfota_host import paths

if str(paths.DEVICE) not in sys.path:
    sys.path.insert(0, str(paths.DEVICE))

import aliyun_ota  # noqa: E402
import libfota2  # noqa: E402
import update  # noqa: E402
from mpfota import deltafmt, package, rsa, version  # noqa: E402
from mpfota import httpparse as hp  # noqa: E402
from mpfota.httpchunk import parse_chunk_size  # noqa: E402
from mpfota.httprange import parse_content_range  # noqa: E402
from mpfota.httpredirect import resolve_location  # noqa: E402
from triggers import tcp  # noqa: E402

FUZZ_ENV = "MPFOTA_FUZZ_EXAMPLES"


def fuzz(examples: int):
    """Hypothesis settings: `examples` derandomized in `make test`; MPFOTA_FUZZ_EXAMPLES with
    random seeds in `make fuzz`."""
    n = int(os.environ.get(FUZZ_ENV) or 0)
    return settings(max_examples=n or examples, deadline=None, derandomize=not n,
                    suppress_health_check=list(HealthCheck))


def raises_only(errors, fn, *args):
    """fn(*args), or None when it raised one of `errors` (anything else propagates)."""
    try:
        return fn(*args)
    except errors:
        return None


# --- inputs that look like what the parsers read, more often than noise does -----------------

def pieces(words: list, max_size: int = 12):
    return st.lists(st.sampled_from(words), max_size=max_size)


http_bytes = st.one_of(
    st.binary(max_size=100),
    pieces([b"HTTP/1.1 ", b"HTTP/1.0", b"200", b"206", b" OK", b"\r\n", b"\n", b"\r", b":",
            b" ", b"\t", b";", b"=", b"ext", b"0", b"1", b"ff", b"FFFFFFFFFFFFFFFF", b"-",
            b"Content-Length", b"Transfer-Encoding", b"chunked", b"\x00", b"\xff", b"\x7f",
            b"bytes ", b"*", b"/"], 16).map(b"".join),
)
url_text = st.one_of(
    st.text(max_size=80),
    pieces(["http", "https", "ftp", "://", "//", "/", "?", "#", "[", "]", ":", "::1", "@", ".",
            "..", "h", "127.0.0.1", "0", "80", "65535", "65536", "99999999999", " ", "%", "%2e",
            "\u00e9", "\x00", "\r\n", "###", "&", "="], 16).map("".join),
)
version_text = st.one_of(
    st.text(max_size=20),
    pieces(["0", "1", "9", "00", "001", "999", "1000", "01234567890", ".", "V", "v", "-", "_",
            " ", "a", "\u0661"], 8).map("".join),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=10,
)


def mutate(text: str, data) -> str:
    """A few random edits of `text` (delete, insert, replace) drawn from hypothesis `data`."""
    for _ in range(data.draw(st.integers(0, 3))):
        if not text:
            break
        i = data.draw(st.integers(0, len(text) - 1))
        op = data.draw(st.sampled_from("dir"))
        ch = data.draw(st.sampled_from(list('{}[]:,"\\ -.0e1tfnu') + ["\u00e9", "\x01"]))
        text = text[:i] + (ch if op != "d" else "") + text[i + (op != "i"):]
    return text


# --- HTTP --------------------------------------------------------------------------------------

@fuzz(400)
@given(http_bytes)
@example(b"HTTP/1.1 200 OK\r\n")
@example(b"0000000000000000000000001")
def test_http_byte_parsers(data):
    status = raises_only(hp.ParseError, hp.parse_status_line, data)
    assert status is None or 100 <= status <= 999
    header = raises_only(hp.ParseError, hp.parse_header, data)
    assert header is None or (isinstance(header[0], str) and header[0] in hp.KEPT)
    size = raises_only(hp.ParseError, parse_chunk_size, data)
    assert size is None or 0 <= size < 2**48


@fuzz(400)
@given(url_text)
def test_http_text_parsers(text):
    n = raises_only(hp.ParseError, hp.parse_content_length, text)
    assert n is None or 0 <= n < 10**15
    r = raises_only(hp.ParseError, parse_content_range, text)
    if r is not None and None not in r:
        assert 0 <= r[0] <= r[1] < r[2]
    ra = raises_only(hp.ParseError, hp.parse_retry_after, text)
    assert ra is None or isinstance(ra, (int, str))
    assert hp.is_chunked(text) in (True, False)


@fuzz(400)
@given(url_text, url_text)
def test_urls_split_and_resolve(base, loc):
    parts = raises_only(hp.ParseError, hp.split_url, base)
    if parts is not None:
        scheme, host, port, target = parts
        assert scheme in ("http", "https") and host and 0 < port < 65536
        assert target.startswith("/") and not any(c in target for c in " \r\n\x00")
    url = raises_only(hp.ParseError, resolve_location, base, loc)
    if url is not None:
        assert hp.split_url(url)[3].startswith("/")


# --- versions and names ------------------------------------------------------------------------

@fuzz(400)
@given(version_text, version_text)
def test_versions(a, b):
    pa = version.parse(a)
    assert pa is None or (len(pa) == 3 and all(0 <= x <= 999 for x in pa))
    assert (version.check(a) is None) == (pa is not None)
    assert version.is_upgrade(a, b) in (True, False)
    assert not (version.is_upgrade(a, b) and version.is_upgrade(b, a))
    c = version.compare_core(a, b)
    assert c in (-1, 0, 1, None)
    if c is not None:
        assert version.compare_core(b, a) == -c
    base, suffix = version.split_layout(a)
    assert (base if suffix is None else f"{base}_{suffix}") == a
    rv = version.report_version(a, b)
    assert rv is None or isinstance(rv, str)


# --- libfota2 and update: options, answers, URLs -----------------------------------------------

opt_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**7), url_text,
                       st.sampled_from(["###http://127.0.0.1/x", "http://h/a?b", ""]))
opts_dicts = st.dictionaries(
    st.sampled_from(["url", "version", "timeout", "project_key", "imei", "firmware_name",
                     "method", "url_done", "server_cert"]), opt_values, max_size=6)
globals_dicts = st.fixed_dictionaries({}, optional={
    "PROJECT": st.one_of(st.none(), st.text(max_size=10)),
    "VERSION": st.one_of(st.none(), version_text),
    "PRODUCT_KEY": st.one_of(st.none(), st.text(max_size=10)),
})
device_dicts = st.fixed_dictionaries({
    "core_version": st.one_of(st.none(), version_text),
    "bsp": st.text(max_size=10),
    "imei": st.one_of(st.none(), st.text(string.digits, max_size=15)),
    "mac": st.one_of(st.none(), st.text(max_size=17)),
    "unique_id": st.one_of(st.none(), st.binary(max_size=8)),
})


@fuzz(400)
@given(opts_dicts, globals_dicts, device_dicts)
def test_libfota2_prepare(opts, g, dev):
    query = raises_only(libfota2.ConfigError, libfota2.prepare, opts, g, dev)
    if query is not None:
        assert isinstance(opts["url"], str) and opts["url_done"] is True
        assert opts["method"] is not None and opts["method"] is not False  # Lua truth
        assert libfota2.timeout_of(opts) >= 1000


@fuzz(400)
@given(st.one_of(st.text(max_size=120), json_values.map(json.dumps)), version_text)
def test_platform_answers(body, v):
    code = libfota2.iot_code(body)
    assert code is None or code == libfota2.NOT_JSON or isinstance(code, (int, float, str, bool,
                                                                         list, dict))
    label, why = libfota2.iot_explain(code)
    assert isinstance(label, str) and isinstance(why, str)
    assert libfota2.result_code(200, 0) == libfota2.RECEIVE_ERROR
    groups = libfota2.version_groups(v)
    assert groups is None or all(x.isdigit() for x in groups)
    assert libfota2.derive_version("V2012", v) in (None,) or "." in libfota2.derive_version(
        "V2012", v)
    code2, msg = update.answer_of(body)
    assert code2 is None or isinstance(code2, str)
    assert msg is None or isinstance(msg, str)


@fuzz(300)
@given(version_text, st.text(max_size=12), url_text, st.text(string.digits, max_size=15),
       st.booleans())
def test_update_url(core, bsp, url, imei, redir):
    core_parts = update.luat_core(core, bsp)
    assert core_parts is None or isinstance(core_parts[1], int)
    g = {"PRODUCT_KEY": "k", "PROJECT": "P", "VERSION": "1.0.0"}
    built = raises_only(update.ConfigError, update.build_url, url, g, imei, core, bsp, redir)
    if built is not None:
        assert "project_key=k" in built and "://" in built


# --- the TCP command ---------------------------------------------------------------------------

def _strict_json(text: str) -> bool:
    def no_constant(name: str) -> None:
        raise ValueError(name)

    try:
        json.loads(text, parse_constant=no_constant)
    except (ValueError, RecursionError):
        return False
    return True


def _depth(text: str) -> int:
    d = best = 0
    in_str = esc = False
    for c in text:
        if in_str:
            esc, in_str = (False, True) if esc else (c == "\\", c != '"')
        elif c == '"':
            in_str = True
        elif c in "[{":
            d += 1
            best = max(best, d)
        elif c in "]}":
            d -= 1
    return best


@fuzz(500)
@given(st.data())
@example(None)
def test_tcp_command(data):
    if data is None:  # regression seeds: deep nesting and huge numbers stay decided
        texts = ["[" * 17 + "]" * 17, '{"fota": "true", "url": "http://h/", "n": 1e999}']
    else:
        cmd = data.draw(st.fixed_dictionaries({}, optional={
            "fota": st.one_of(st.sampled_from(["true", True, "false", "", 1, None]), json_values),
            "url": st.one_of(url_text, json_values),
            "version": st.one_of(st.none(), version_text, json_values),
        }))
        texts = [mutate(json.dumps(cmd), data), data.draw(st.text(max_size=60))]
    for text in texts:
        for line in (text, text.encode(), text.encode("utf-8", "surrogatepass")):
            r = tcp.parse(line)
            if r is None:
                assert not text.strip(" \t\r\n")
                continue
            assert r["event"] in ("fota", "ignored", "error")
            if r["event"] == "fota":
                assert isinstance(r["url"], str) and r["url"].strip("#").strip()
                assert tcp.fota_opts({}, r)["url"].startswith("###")
        stripped = text.strip(" \t\r\n")
        if stripped and _depth(stripped) <= 16:
            assert (tcp.json_error(stripped) is None) == _strict_json(stripped), stripped


# --- Aliyun ------------------------------------------------------------------------------------

job_keys = st.sampled_from(["url", "size", "md5", "sign", "signMethod", "version", "module",
                            "isDiff", "files", "digestsign", "fileUrl", "fileSize", "fileMd5",
                            "fileSign", "fileName"])
job_values = st.one_of(json_values, url_text,
                       st.sampled_from(["http://127.0.0.1/x", "https://h/x", "MD5", "sha256",
                                        "0" * 32, "A" * 64, 1000, 0, -1, 2**40]))


@fuzz(400)
@given(st.one_of(
    st.binary(max_size=200),
    st.dictionaries(job_keys, job_values, max_size=8).map(lambda d: json.dumps({"data": d})),
    st.lists(st.dictionaries(job_keys, job_values, max_size=6), max_size=3).map(
        lambda fs: json.dumps({"data": {"files": fs, "version": "2"}}))))
def test_aliyun_upgrade_json(payload):
    try:
        job = aliyun_ota.parse_job(payload, capacity=1 << 20)
    except aliyun_ota.BadJob as e:
        assert e.step in (-1, -3, -4) and isinstance(e.desc, str) and e.desc
        return
    for f in job.files:
        assert 0 < f.size <= 1 << 20 and f.url.startswith(("http://", "https://"))
        hp.split_url(f.url)  # what the engine will request must parse


# --- delta patch header ------------------------------------------------------------------------

@fuzz(300)
@given(st.binary(min_size=0, max_size=200), st.booleans())
def test_delta_header(blob, seal):
    if seal and len(blob) >= deltafmt.HEADER_SIZE:  # right magic and CRC: reach the fields
        import zlib

        b = bytearray(blob[:deltafmt.HEADER_SIZE])
        b[:6] = deltafmt.MAGIC + bytes([deltafmt.VERSION, deltafmt.STREAMS])
        b[-4:] = zlib.crc32(b[:-4]).to_bytes(4, "little")
        blob = bytes(b) + blob[deltafmt.HEADER_SIZE:]
    h = raises_only(deltafmt.PatchError, deltafmt.parse_header, blob)
    if h is not None:
        assert h.from_size > 0 and h.to_size > 0 and len(h.streams) == deltafmt.STREAMS


# --- packages ----------------------------------------------------------------------------------

def _section(kind_and_more):
    kind, size, files = kind_and_more
    s = {"type": kind, "size": size, "md5": "0" * 32, "sha256": "a" * 64}
    if kind == "scripts":
        s.update(files=files, unpacked=size)
    if kind == "core-delta":
        s["base_sha256"] = "b" * 64
    return s


manifests = st.fixed_dictionaries(
    {"format": st.sampled_from([1, 1, 1, 2, "1"]),
     "project": st.sampled_from(["DEMO", "OTHER", "", 5]),
     "firmware_name": st.sampled_from(["DEMO_LuatOS-SoC_UNIX_1", "DEMO_LuatOS-SoC_UNIX_2",
                                       "DEMO_LuatOS-SoC_UNIX", "X_LuatOS-SoC_ESP32_1"]),
     "sections": st.lists(st.tuples(st.sampled_from(["core", "scripts", "core-delta", "x"]),
                                    st.integers(0, 2**33), st.integers(0, 200)).map(_section),
                          max_size=5)},
    optional={"counter": st.one_of(st.integers(-1, 2**33), version_text),
              "from": st.fixed_dictionaries({}, optional={"core": version_text,
                                                          "script": version_text}),
              "to": st.fixed_dictionaries({}, optional={"core": version_text,
                                                        "script": version_text}),
              "keep": json_values})


@fuzz(400)
@given(st.one_of(manifests.map(json.dumps), json_values.map(json.dumps), st.text(max_size=80)),
       st.data())
def test_package_manifest_and_target(text, data):
    raw = mutate(text, data).encode("utf-8", "surrogatepass")
    m = raises_only(package.PackageError, package.parse_manifest, raw,
                    data.draw(st.integers(0, 512)))
    if m is None:
        return
    assert 1 <= len(m.sections) <= package.MAX_SECTIONS and m.size > len(raw)
    device = {"project": "DEMO", "firmware_name": "DEMO_LuatOS-SoC_UNIX_1",
              "core": data.draw(st.sampled_from(["1.0.0", "2.0.0", "V2012", "x"])),
              "script": data.draw(st.one_of(st.none(), st.sampled_from(["001.000.001",
                                                                        "002.000.000"]))),
              "min_counter": data.draw(st.integers(0, 5))}
    try:
        package.check_target(m, device)
    except package.PackageError as e:
        assert e.reason in {"project", "firmware", "layout", "rollback", "unsupported",
                            "identity", "base", "downgrade", "current", "cyclic"}, e


@fuzz(400)
@given(st.binary(max_size=40), st.one_of(url_text, st.binary(max_size=70)))
def test_package_header_entry_path(head, path):
    r = raises_only(package.PackageError, package.parse_header, head)
    if r is not None:
        mlen, slen, _ = r
        assert 0 < mlen <= package.MANIFEST_MAX and 0 <= slen <= package.SIGNATURE_MAX
    if len(head) >= package.ENTRY_SIZE:
        e = raises_only(package.PackageError, package.parse_entry, head[:package.ENTRY_SIZE])
        assert e is None or 1 <= e[0] <= package.MAX_PATH
    p = raises_only(package.PackageError, package.check_path, path)
    if p is not None:
        parts = p.split("/")
        assert "" not in parts and "." not in parts and ".." not in parts
        assert parts[0] != ".mpfota" and len(p.encode()) <= package.MAX_PATH


# --- signatures and keys -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def rsa_key():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa as crsa

    key = crsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, der


def test_signatures_and_key_files(rsa_key):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    key, der = rsa_key
    pub = rsa.load_public_key(der)
    good = key.sign(b"manifest", padding.PKCS1v15(), hashes.SHA256())

    @fuzz(300)
    @given(st.binary(max_size=300), st.data())
    def check(blob, data):
        # a signature of any length and content: a bool, never an exception
        sig = bytearray(good)
        for _ in range(data.draw(st.integers(0, 3))):
            sig[data.draw(st.integers(0, len(sig) - 1))] ^= data.draw(st.integers(1, 255))
        for s in (bytes(sig), blob, good[:data.draw(st.integers(0, 256))]):
            assert rsa.verify(pub, b"manifest", s) is (s == good)
        # a damaged key file: a key or ValueError("key: ...")
        k = bytearray(der)
        if blob:
            k[data.draw(st.integers(0, len(k) - 1))] ^= blob[0] or 1
        for candidate in (bytes(k), blob, b"-----BEGIN PUBLIC KEY-----\n" + blob):
            got = raises_only(ValueError, rsa.load_public_key, candidate)
            assert got is None or got.bits >= rsa.MIN_BITS

    check()
