# Content-Range for mpfota.http, imported only when an answer carries one (a 206 to a resumed
# download): a download from byte 0 never loads it. Pure: runs under CPython too.
#
#     parse_content_range(value) -> (start, end, total); (None, None, total) for "*/total";
#                                   total is None for "/*"
from mpfota.httpparse import ParseError, digits


def parse_content_range(value):
    """(start, end, total) from "bytes a-b/t"; (None, None, t) from "bytes */t"; t may be None."""
    v = value.strip()
    if v[:6].lower() != "bytes ":
        raise ParseError("bad Content-Range: %r" % value[:60])
    v = v[6:].strip()
    i = v.find("/")
    if i < 0:
        raise ParseError("bad Content-Range: %r" % value[:60])
    rng, tot = v[:i].strip(), v[i + 1 :].strip()
    total = None if tot == "*" else digits(tot, "Content-Range total")
    if rng == "*":
        if total is None:
            raise ParseError("bad Content-Range: %r" % value[:60])
        return None, None, total
    j = rng.find("-")
    if j < 0:
        raise ParseError("bad Content-Range: %r" % value[:60])
    start = digits(rng[:j], "Content-Range start")
    end = digits(rng[j + 1 :], "Content-Range end")
    if end < start or (total is not None and end >= total):
        raise ParseError("inconsistent Content-Range: %r" % value[:60])
    return start, end, total
