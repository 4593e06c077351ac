"""mpfota.httpparse (and its on-demand parts httpchunk, httpredirect) under CPython: the parsing
rules, a property test that hostile input only ever raises ParseError, and a check that
MicroPython gives the same answers."""

from __future__ import annotations

import json
import random
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpdevice import run_code
from mpfota_host import paths

sys.path.insert(0, str(paths.DEVICE))

from mpfota import httpparse as hp  # noqa: E402
from mpfota.httpchunk import parse_chunk_size  # noqa: E402
from mpfota.httpparse import ParseError  # noqa: E402
from mpfota.httprange import parse_content_range  # noqa: E402
from mpfota.httpredirect import resolve_location  # noqa: E402

# ------------------------------------------------------------------------------ URLs


@pytest.mark.parametrize(
    "url, parts",
    [
        ("http://example.com", ("http", "example.com", 80, "/")),
        ("HTTPS://Example.com/", ("https", "Example.com", 443, "/")),
        ("http://10.0.0.1:8080/a/b?x=1&y=2", ("http", "10.0.0.1", 8080, "/a/b?x=1&y=2")),
        ("http://h?x=1", ("http", "h", 80, "/?x=1")),
        ("http://h/p#frag", ("http", "h", 80, "/p")),
        ("https://[::1]:8443/fw.bin", ("https", "::1", 8443, "/fw.bin")),
        ("http://[fe80::1]/", ("http", "fe80::1", 80, "/")),
        ("http://h:65535/%20x", ("http", "h", 65535, "/%20x")),
    ],
)
def test_split_url(url, parts):
    assert hp.split_url(url) == parts


@pytest.mark.parametrize(
    "url",
    [
        "",
        "example.com/x",
        "ftp://h/x",
        "://h/",
        "http://",
        "http:///p",
        "http://h:/",
        "http://h:0/",
        "http://h:65536/",
        "http://h:+80/",
        "http://h:8_0/",
        "http://h: 80/",
        "http://user:pw@h/",
        "http://[::1/",
        "http://[zz]/",
        "http://[::1]x/",
        "http://h/a b",
        "http://h/\r\nX: y",
        "http://h/\u00e9",
        "http://h\x00/",
        b"http://h/",
    ],
)
def test_split_url_rejects(url):
    with pytest.raises(ParseError):
        hp.split_url(url)


def test_authority_names_the_port_only_when_not_default():
    assert hp.authority("http", "h", 80) == "h"
    assert hp.authority("http", "h", 443) == "h:443"
    assert hp.authority("https", "h", 443) == "h"
    assert hp.authority("https", "::1", 8443) == "[::1]:8443"


BASE = "http://a.example:8080/b/c/d;p?q"


@pytest.mark.parametrize(
    "loc, url",
    [
        ("https://cdn.example/fw.bin", "https://cdn.example/fw.bin"),
        ("//cdn.example/x", "http://cdn.example/x"),
        ("/g", "http://a.example:8080/g"),
        ("g", "http://a.example:8080/b/c/g"),
        ("./g", "http://a.example:8080/b/c/g"),
        ("g/", "http://a.example:8080/b/c/g/"),
        ("?y", "http://a.example:8080/b/c/d;p?y"),
        ("g?y", "http://a.example:8080/b/c/g?y"),
        ("g#s", "http://a.example:8080/b/c/g"),
        ("..", "http://a.example:8080/b/"),
        ("../", "http://a.example:8080/b/"),
        ("../g", "http://a.example:8080/b/g"),
        ("../..", "http://a.example:8080/"),
        ("../../g", "http://a.example:8080/g"),
        ("../../../g", "http://a.example:8080/g"),
        ("/./g", "http://a.example:8080/g"),
        ("/../g", "http://a.example:8080/g"),
        ("g.", "http://a.example:8080/b/c/g."),
        ("..g", "http://a.example:8080/b/c/..g"),
        ("./g/.", "http://a.example:8080/b/c/g/"),
        ("g/../h", "http://a.example:8080/b/c/h"),
        ("g?y/./x", "http://a.example:8080/b/c/g?y/./x"),
        ("  /g  ", "http://a.example:8080/g"),
    ],
)
def test_resolve_location(loc, url):
    assert resolve_location(BASE, loc) == url


def test_resolve_location_keeps_ipv6_and_https_origins():
    assert resolve_location("https://[::1]:8443/a/b", "c") == "https://[::1]:8443/a/c"
    assert resolve_location("https://h/a", "//g:81/x") == "https://g:81/x"


@pytest.mark.parametrize(
    "loc", ["", "   ", "ftp://h/x", "mailto:a@b", "http:x", "g h", "//", "//h:99999/"]
)
def test_resolve_location_rejects(loc):
    with pytest.raises(ParseError):
        resolve_location(BASE, loc)


# ----------------------------------------------------------------------- response head


@pytest.mark.parametrize(
    "line, status",
    [
        (b"HTTP/1.1 200 OK", 200),
        (b"HTTP/1.0 404 Not Found", 404),
        (b"HTTP/1.1 206", 206),
        (b"HTTP/1.1 301 ", 301),
        (b"HTTP/1.1 500 \xff\xfe weird reason", 500),
        (bytearray(b"HTTP/1.1 100 Continue"), 100),
    ],
)
def test_status_line(line, status):
    assert hp.parse_status_line(line) == status


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"SPAM AND EGGS",
        b"HTTP/2 200",
        b"HTTP/1.1 2",
        b"HTTP/1.1 20",
        b"HTTP/1.1 2000",
        b"HTTP/1.1  200",
        b"http/1.1 200 OK",
        b"HTTP/1.x 200 OK",
        b"HTTP/1.1 099 x",
        b"HTTP/1.1 +20 x",
        b"HTTP/1.1 2a0 x",
        b"ICY 200 OK",
        bytes(range(256)),
    ],
)
def test_status_line_rejects(line):
    with pytest.raises(ParseError):
        hp.parse_status_line(line)


def test_headers_kept_and_skipped():
    assert hp.parse_header(b"Content-Length: 42") == ("content-length", "42")
    assert hp.parse_header(b"cOnTeNt-RaNgE:bytes 0-1/2  ") == ("content-range", "bytes 0-1/2")
    assert hp.parse_header(b'ETag: W/"x y"') == ("etag", 'W/"x y"')
    assert hp.parse_header(b"Location:") == ("location", "")
    assert hp.parse_header(b"X-Other: \xff\x00 anything") is None  # not kept: not decoded
    assert hp.parse_header(b"Set-Cookie: a=b") is None
    assert hp.parse_header(b" folded continuation") is None
    for name in hp.KEPT:
        assert hp.parse_header(name.upper().encode() + b": v") == (name, "v")


@pytest.mark.parametrize(
    "line",
    [
        b"no colon here",
        b": empty name",
        b"Bad Name: x",
        b"Content-Length : 1",
        b"X\x00: y",
        b"ETag: \xff",
        b"Location: a\x00b",
        "Location: x".encode("utf-16"),
    ],
)
def test_headers_rejected(line):
    with pytest.raises(ParseError):
        hp.parse_header(line)


def test_content_length():
    assert hp.parse_content_length("0") == 0
    assert hp.parse_content_length("1048583") == 1048583
    assert hp.parse_content_length("7, 7") == 7
    for bad in ("", "-1", "+1", " ", "1.0", "0x10", "1_000", "7, 8", "1" * 16, "\u0661"):
        with pytest.raises(ParseError):
            hp.parse_content_length(bad)


def test_transfer_encoding():
    assert hp.is_chunked("chunked") and hp.is_chunked("gzip, Chunked ")
    assert not hp.is_chunked("chunked, gzip") and not hp.is_chunked("identity")


def test_chunk_size_lines():
    assert parse_chunk_size(b"0") == 0
    assert parse_chunk_size(b"1A") == 26
    assert parse_chunk_size(b"ff;name=value") == 255
    assert parse_chunk_size(b'10 ; q="a;b"') == 16
    assert parse_chunk_size(bytearray(b"ffffffffffff")) == 2**48 - 1
    for bad in (b"", b";x", b"zz", b"-1", b"+1", b"0x10", b" 1", b"1_0", b"fffffffffffff", b"1 2"):
        with pytest.raises(ParseError):
            parse_chunk_size(bad)


def test_content_range():
    assert parse_content_range("bytes 0-99/100") == (0, 99, 100)
    assert parse_content_range("BYTES 5-5/*") == (5, 5, None)
    assert parse_content_range("bytes */1000") == (None, None, 1000)
    for bad in (
        "",
        "bytes",
        "bytes 5-4/10",
        "bytes 0-10/10",
        "bytes */*",
        "items 0-1/2",
        "bytes 0-/10",
        "bytes -1/10",
        "bytes 0-1",
        "bytes a-b/c",
        "bytes 0-1/-2",
    ):
        with pytest.raises(ParseError):
            parse_content_range(bad)


def test_retry_after():
    assert hp.parse_retry_after(" 120 ") == 120
    assert hp.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == "Wed, 21 Oct 2015 07:28:00 GMT"
    for bad in ("", "12s", "-1"):
        with pytest.raises(ParseError):
            hp.parse_retry_after(bad)


# ------------------------------------------------------------------ hostile input


BYTE_PARSERS = (hp.parse_status_line, hp.parse_header, parse_chunk_size)
TEXT_PARSERS = (
    hp.split_url,
    hp.parse_content_length,
    parse_content_range,
    hp.parse_retry_after,
    hp.is_chunked,
    lambda s: resolve_location(BASE, s),
)
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Bytes that look like HTTP more often than uniform noise does.
http_bytes = st.one_of(
    st.binary(max_size=80),
    st.lists(
        st.sampled_from(
            [
                b"HTTP/1.",
                b"1",
                b" ",
                b"200",
                b":",
                b";",
                b"\r",
                b"\n",
                b"\t",
                b"\xff",
                b"ff",
                b"content-length",
                b"0",
                b"-",
                b"x",
            ]
        ),
        max_size=12,
    ).map(b"".join),
)
url_text = st.one_of(
    st.text(max_size=60),
    st.lists(
        st.sampled_from(
            [
                "http",
                "https",
                "://",
                "//",
                "/",
                "?",
                "#",
                "[",
                "]",
                ":",
                "::1",
                "@",
                ".",
                "..",
                "h",
                "80",
                "65536",
                " ",
                "%",
                "\u00e9",
                "bytes ",
                "*",
                "-",
            ]
        ),
        max_size=12,
    ).map("".join),
)


@PROPERTY
@given(data=http_bytes)
def test_byte_parsers_raise_only_parse_error(data):
    for parse in BYTE_PARSERS:
        for arg in (data, bytearray(data)):
            try:
                parse(arg)
            except ParseError:
                pass


@PROPERTY
@given(text=url_text)
def test_text_parsers_raise_only_parse_error(text):
    for parse in TEXT_PARSERS:
        try:
            parse(text)
        except ParseError:
            pass


@PROPERTY
@given(base=url_text, loc=url_text)
def test_resolved_locations_are_valid_urls(base, loc):
    try:
        url = resolve_location(base, loc)
    except ParseError:
        return
    scheme, host, port, target = hp.split_url(url)
    assert target.startswith("/")
    assert "/./" not in target.split("?")[0] and "/../" not in target.split("?")[0]


# ------------------------------------------------- the same answers under MicroPython


def _mutate(rnd, seq, pieces):
    # Up to two edits: cut a slice, insert a piece, or change one element.
    for _ in range(rnd.randint(0, 2)):
        i = rnd.randint(0, len(seq))
        j = rnd.randint(i, min(len(seq), i + 3))
        seq = seq[:i] + rnd.choice(pieces) + seq[j:] if rnd.random() < 0.6 else seq[:i] + seq[j:]
    return seq


def _cases(n=600, seed=7):
    """Well-formed inputs, lightly damaged ones, and noise."""
    rnd = random.Random(seed)
    byte_seeds = [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.0 404 Not Found",
        b"HTTP/1.1 206",
        b"Content-Length: 12",
        b'ETag: "x"',
        b"Location: /a",
        b"ff;a=b",
        b"0",
        b"1A",
        b"X-Y: z",
    ]
    byte_pieces = [b"HTTP/1.", b"200", b" ", b":", b";", b"\r", b"\xff", b"f", b"1", b"x", b""]
    text_seeds = [
        BASE,
        "https://[::1]:8443/a?b",
        "http://h",
        "/g",
        "../g",
        "g?y",
        "//h/x",
        "bytes 0-9/10",
        "bytes */5",
        "120",
        "Wed, 21 Oct 2015",
        "7, 7",
        "chunked",
        "gzip, chunked",
    ]
    text_pieces = [
        "http://",
        "/",
        "..",
        ".",
        "?",
        "#",
        "[",
        "]",
        ":",
        "0",
        "-",
        "*",
        " ",
        "%",
        "\u00e9",
        "",
    ]
    cases = []
    for _ in range(n):
        b = rnd.choice(byte_seeds)
        b = (
            rnd.randbytes(rnd.randint(0, 20))
            if rnd.random() < 0.2
            else _mutate(rnd, b, byte_pieces)
        )
        t = _mutate(rnd, rnd.choice(text_seeds), text_pieces)
        cases.append([b.hex(), t])
    return cases


# The same answers, computed the same way on both interpreters (keep the two in step).
def _run(f, *a):
    try:
        r = f(*a)
        return ["ok", list(r) if isinstance(r, tuple) else r]
    except ParseError:
        return ["ParseError"]
    except Exception as e:  # noqa: BLE001 - the test is that this never happens
        return ["other", type(e).__name__]


def _answers(b, t):
    return [
        _run(hp.parse_status_line, b),
        _run(hp.parse_header, b),
        _run(parse_chunk_size, b),
        _run(hp.split_url, t),
        _run(hp.parse_content_length, t),
        _run(parse_content_range, t),
        _run(hp.parse_retry_after, t),
        _run(hp.is_chunked, t),
        _run(resolve_location, BASE, t),
        _run(resolve_location, t, "../x"),
    ]


_DUAL = r"""
import json, binascii
from mpfota import httpparse as hp
from mpfota.httpchunk import parse_chunk_size
from mpfota.httprange import parse_content_range
from mpfota.httpredirect import resolve_location
BASE = %r
def _run(f, *a):
    try:
        r = f(*a)
        return ["ok", list(r) if isinstance(r, tuple) else r]
    except hp.ParseError:
        return ["ParseError"]
    except Exception as e:
        return ["other", type(e).__name__]
def _answers(b, t):
    out = [_run(f, b) for f in (hp.parse_status_line, hp.parse_header, parse_chunk_size)]
    out += [_run(f, t) for f in (hp.split_url, hp.parse_content_length, parse_content_range,
                                 hp.parse_retry_after, hp.is_chunked)]
    return out + [_run(resolve_location, BASE, t), _run(resolve_location, t, "../x")]
for h, t in json.load(open(%r)):
    print(json.dumps(_answers(binascii.unhexlify(h), t)))
"""


def test_micropython_gives_the_same_answers(tmp_path):
    cases = _cases()
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))
    proc = run_code(_DUAL % (BASE, str(path)), timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got_all = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(got_all) == len(cases)
    for (bhex, t), got in zip(cases, got_all, strict=True):
        want = json.loads(json.dumps(_answers(bytes.fromhex(bhex), t)))
        assert got == want, (bhex, t, got, want)
        assert all(r[0] != "other" for r in got), (bhex, t, got)
    # The cases reach both outcomes of every parser that can fail.
    for k in (0, 1, 2, 3, 4, 5, 6, 8, 9):
        assert {row[k][0] for row in got_all} == {"ok", "ParseError"}, k
