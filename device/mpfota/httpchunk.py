# Chunked transfer decoding for mpfota.http, imported only when a response's transfer coding
# is chunked (a server sending a file with its length never loads it).
#
#     parse_chunk_size(line) -> int      pure: runs under CPython too (fuzzed on the host)
#     await next_chunk(resp)             device: move an http.Response to its next chunk
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from mpfota.httpparse import ParseError

_MAX_HEX = const(12)  # chunk sizes: up to 2**48 - 1 bytes (no bignums from a hostile peer)
_HEX = b"0123456789abcdefABCDEF"


def parse_chunk_size(line):
    """Size from a chunk-size line "HEX[;ext...]" (CRLF stripped; spaces before ';' allowed)."""
    b = bytes(line)
    i = b.find(b";")
    if i >= 0:
        b = b[:i]
    b = b.rstrip(b" \t")
    if not b or len(b) > _MAX_HEX:
        raise ParseError("bad chunk size line: %r" % bytes(line)[:40])
    for c in b:
        if c not in _HEX:
            raise ParseError("bad chunk size line: %r" % bytes(line)[:40])
    return int(b.decode(), 16)


async def next_chunk(resp):
    # Read up to the next chunk's data: its size goes to resp._left, or the last chunk and
    # its trailers end the body. A part of Response kept apart so that it loads on demand,
    # hence the use of its private members.
    from mpfota.http import ERR_BODY, MAX_HEADER_LINES, HTTPError

    eof = "server closed the connection in the chunked body"
    if resp._chunks:
        if await resp._line(ERR_BODY, eof):
            raise HTTPError(ERR_BODY, "chunk data not followed by CRLF")
    resp._chunks += 1
    try:
        size = parse_chunk_size(await resp._line(ERR_BODY, eof))
    except ParseError as e:
        raise HTTPError(ERR_BODY, str(e))
    if size == 0:
        for _ in range(MAX_HEADER_LINES + 1):  # trailer lines, up to the empty line
            if not await resp._line(ERR_BODY, eof):
                resp._finish()
                return
        raise HTTPError(ERR_BODY, "endless trailers")
    resp._left = size
