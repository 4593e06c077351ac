# Redirect targets for mpfota.http (and Luat's update module), imported only when an answer
# is a 3xx with a Location: a direct download never loads it. Pure: runs under CPython too.
#
#     resolve_location(base, loc) -> absolute URL of a redirect target (or ParseError)
from mpfota.httpparse import ParseError, authority, split_url


def _remove_dots(path):
    # RFC 3986 5.2.4, on whole segments: "." vanishes, ".." drops the previous segment.
    out = []
    segs = path.split("/")
    for i, s in enumerate(segs):
        last = i == len(segs) - 1
        if s == ".":
            if last:
                out.append("")
        elif s == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(s)
    res = "/".join(out)
    return res if res.startswith("/") else "/" + res


def _has_scheme(ref):
    # "scheme:" before any "/" or "?" (RFC 3986 4.2: a relative path cannot start so).
    i = ref.find(":")
    if i <= 0:
        return False
    for k, c in enumerate(ref[:i]):
        if not ("a" <= c <= "z" or "A" <= c <= "Z" or (k and (c in "+-." or "0" <= c <= "9"))):
            return False
    return True


def resolve_location(base, loc):
    """Resolve a Location header value against the URL it came from; return an absolute URL.

    Handles absolute URLs, scheme-relative ("//host/p"), absolute paths ("/p"), queries ("?q")
    and relative paths ("p", "../p"). The result is checked with split_url.
    """
    if not isinstance(loc, str):
        raise ParseError("Location must be a str")
    loc = loc.strip()
    if not loc:
        raise ParseError("empty Location")
    h = loc.find("#")
    if h >= 0:
        loc = loc[:h]
    scheme, host, port, target = split_url(base)
    if _has_scheme(loc):
        split_url(loc)  # http(s) with an authority, or an error naming the scheme
        return loc
    if loc.startswith("//"):
        url = scheme + ":" + loc
    else:
        origin = scheme + "://" + authority(scheme, host, port)
        q = target.find("?")
        path = target if q < 0 else target[:q]
        if loc.startswith("/"):
            ref = loc
        elif loc.startswith("?"):
            ref = path + loc
        else:
            ref = path[: path.rfind("/") + 1] + loc
        q = ref.find("?")
        if q < 0:
            ref = _remove_dots(ref)
        else:
            ref = _remove_dots(ref[:q]) + ref[q:]
        url = origin + ref
    split_url(url)
    return url
