"""HTTP/1.1 parsing for the mpfota client: pure functions, no sockets, no asyncio.

Runs under MicroPython and CPython alike (so it can be fuzzed on the host). Every function
either returns a value or raises `ParseError` (a `ValueError`); malformed input never raises
anything else. Inputs from the network are bytes-like (`bytes`, `bytearray`); URLs and header
values are `str`.

    split_url(url)                 -> (scheme, host, port, target)
    authority(scheme, host, port)  -> "host" or "host:port" (IPv6 in brackets), for Host:
    parse_status_line(line)        -> status code (int)
    parse_header(line)             -> (name, value) for the headers the client keeps, else None
    parse_content_length(value)    -> int
    is_chunked(value)              -> True when chunked is the final transfer coding
    parse_retry_after(value)       -> int seconds, or the HTTP-date string as given

What only some responses need lives apart and loads on demand: chunk sizes in
mpfota.httpchunk, redirect targets in mpfota.httpredirect, Content-Range (a 206 answer to a
resumed download) in mpfota.httprange.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# Bounds that keep numbers small and parsing cheap on a board (no bignums from a hostile peer).
_MAX_DIGITS = const(15)  # decimal lengths and offsets: up to 10**15 - 1 bytes

# The response headers the engine needs; all others are skipped without allocating.
KEPT = (
    "content-length",
    "transfer-encoding",
    "location",
    "content-range",
    "etag",
    "last-modified",
    "retry-after",
    "connection",
)

_TCHAR = b"!#$%&'*+-.^_`|~"  # token characters besides letters and digits (RFC 9110 5.6.2)


class ParseError(ValueError):
    """Malformed HTTP input or URL; the message says what and where."""


def digits(s, what):
    """A decimal number (at most 15 digits, nothing else) as an int, else ParseError naming
    `what`. int() alone is too lenient (signs, spaces, "_", "0x")."""
    if not s or len(s) > _MAX_DIGITS:
        raise ParseError("bad %s: %r" % (what, s[:40]))
    for c in s:
        if c < "0" or c > "9":
            raise ParseError("bad %s: %r" % (what, s[:40]))
    return int(s)


def is_token(b):
    """True when b (bytes) is a non-empty HTTP token (a header name, a method)."""
    if not b:
        return False
    for c in b:
        if not (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c in _TCHAR):
            return False
    return True


def _ascii(b, what):
    # Header values we keep must be printable ASCII (tab allowed): decoding is then exact
    # on both interpreters, and nothing unprintable reaches a log line.
    for c in b:
        if (c < 32 and c != 9) or c > 126:
            raise ParseError("non-ASCII or control byte in %s" % what)
    return b.decode()


def _check_url_chars(s, what):
    for c in s:
        if c <= " " or c > "~":
            raise ParseError("%s holds a space, control or non-ASCII character" % what)


# ---------------------------------------------------------------------------------- URLs


def split_url(url):
    """Split an absolute http(s) URL into (scheme, host, port, target).

    scheme is "http" or "https"; host is a name or an address (an IPv6 literal without its
    brackets); port defaults to 80/443; target is the path and query (at least "/"), without
    the fragment.
    """
    if not isinstance(url, str):
        raise ParseError("URL must be a str")
    i = url.find("://")
    if i <= 0:
        raise ParseError("not an absolute URL: %r" % url[:80])
    scheme = url[:i].lower()
    if scheme == "http":
        port = 80
    elif scheme == "https":
        port = 443
    else:
        raise ParseError("unsupported scheme: %r" % url[:i][:20])
    rest = url[i + 3 :]
    h = rest.find("#")
    if h >= 0:
        rest = rest[:h]
    end = len(rest)
    for sep in "/?":
        j = rest.find(sep)
        if 0 <= j < end:
            end = j
    auth, target = rest[:end], rest[end:]
    if not target or target[0] == "?":
        target = "/" + target
    _check_url_chars(target, "URL path")
    _check_url_chars(auth, "URL host")
    if "@" in auth:
        raise ParseError("user information in URLs is not supported")
    if auth.startswith("["):
        j = auth.find("]")
        if j < 0:
            raise ParseError("unclosed IPv6 literal in URL")
        host, tail = auth[1:j], auth[j + 1 :]
        if not host or ":" not in host:
            raise ParseError("bad IPv6 literal in URL")
        for c in host:
            if c not in "0123456789abcdefABCDEF:.":
                raise ParseError("bad IPv6 literal in URL")
        if tail and tail[0] != ":":
            raise ParseError("junk after IPv6 literal in URL")
    else:
        j = auth.find(":")
        host, tail = (auth, "") if j < 0 else (auth[:j], auth[j:])
        if "[" in host or "]" in host:
            raise ParseError("bad host in URL")
    if not host:
        raise ParseError("URL has no host")
    if tail:
        port = digits(tail[1:], "port")
        if not 0 < port < 65536:
            raise ParseError("port out of range: %d" % port)
    return scheme, host, port, target


def authority(scheme, host, port):
    """The Host header value: the port only when it is not the scheme's default."""
    if ":" in host:
        host = "[" + host + "]"
    if port == (443 if scheme == "https" else 80):
        return host
    return "%s:%d" % (host, port)


# ------------------------------------------------------------------------- response head


def parse_status_line(line):
    """Status code from "HTTP/1.x NNN [reason]" (CRLF already stripped)."""
    b = bytes(line)
    if len(b) < 12 or b[:7] != b"HTTP/1." or b[8] != 32 or not (48 <= b[7] <= 57):
        raise ParseError("garbage status line: %r" % b[:40])
    code = b[9:12]
    if len(b) > 12 and b[12] != 32:
        raise ParseError("garbage status line: %r" % b[:40])
    for c in code:
        if not 48 <= c <= 57:
            raise ParseError("garbage status line: %r" % b[:40])
    status = int(code)
    if status < 100:
        raise ParseError("status code out of range: %d" % status)
    return status


def parse_header(line):
    """(lower-case name, value) for a header in KEPT, None for any other well-formed header.

    A line without a colon, with an invalid name (including whitespace before the colon) or,
    for kept headers, with control or non-ASCII bytes in the value raises ParseError. Obsolete
    line folding (a line starting with a space or tab) is ignored.
    """
    b = bytes(line)
    if b and b[0] in (32, 9):
        return None
    i = b.find(b":")
    if i <= 0 or not is_token(b[:i]):
        raise ParseError("bad header line: %r" % b[:40])
    name = b[:i].decode().lower()
    if name not in KEPT:
        return None
    return name, _ascii(b[i + 1 :], name).strip()


def parse_content_length(value):
    # A list "n, n" of equal values is allowed (RFC 9110 8.6); anything else is an error.
    first = None
    for part in value.split(","):
        n = digits(part.strip(), "Content-Length")
        if first is not None and n != first:
            raise ParseError("conflicting Content-Length values")
        first = n
    return first


def is_chunked(value):
    return value.split(",")[-1].strip().lower() == "chunked"


def parse_retry_after(value):
    v = value.strip()
    if v and "0" <= v[0] <= "9":
        return digits(v, "Retry-After")
    if not v or not ("A" <= v[0] <= "Z" or "a" <= v[0] <= "z"):
        raise ParseError("bad Retry-After: %r" % v[:40])
    return v  # an HTTP-date, left to the caller (a board may not know the time)
