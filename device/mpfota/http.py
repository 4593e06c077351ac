"""Streaming HTTP/1.1 client for the mpfota engine (MicroPython only, asyncio).

    from mpfota import http
    buf = bytearray(4096)                       # one buffer per stream, owned by the caller
    resp = await http.request("GET", url, buf,
                              headers=None,     # dict or list of (name, value)
                              body=None,        # bytes or str; sends Content-Length
                              range_start=None, # N -> "Range: bytes=N-"
                              if_range=None,    # ETag or Last-Modified -> "If-Range: ..."
                              server_cert=None, # CA (PEM or DER): verify the server and its name
                              client_cert=None, client_key=None,  # PEM or DER, key unencrypted
                              client_password=None,  # unsupported: raises ERR_CONNECT
                              connect_timeout_ms=10000,  # TCP connect, TLS handshake, request
                              read_timeout_ms=30000,     # longest wait for any response bytes
                              deadline_ms=600000,        # the whole transaction, redirects too
                              max_redirects=5,
                              follow_redirects=True)     # False: a 3xx comes back as is
    resp.status, resp.url (after redirects), resp.redirects (hops followed),
    resp.content_length (None when not announced), resp.content_range ((start, end, total)
    or None; start/end None for "*/total", total None for "/*"), resp.chunked, resp.etag,
    resp.last_modified, resp.location (of an unfollowed 3xx), resp.retry_after (int seconds,
    or the HTTP-date string)
    n = await resp.readinto(mv)   # body bytes into mv[:n]; 0 at the end of the body
    n = await resp.readinto(mv, 512)   # at most 512 of them (no slice of mv needed)
    data = await resp.read(limit=1024)   # at most `limit` body bytes (to log an error body)
    await resp.aclose()           # or resp.close(); also done when the body is complete

What only some transactions need loads when one does: chunked decoding (mpfota.httpchunk),
redirect targets (mpfota.httpredirect), Content-Range (mpfota.httprange), TLS
(mpfota.httptls and ssl, for https URLs).

Every status comes back to the caller (200 and 206 carry data; others have their body
readable). Redirects 301/302/303/307/308 are followed (303 turns the request into a GET
without a body); Range and If-Range are sent again on every hop. A 206 whose Content-Range
does not start at range_start is refused. When If-Range does not match, the server answers
200 with the whole body: the caller must start again from 0.

Failures raise HTTPError(code, msg), with the LuatOS http error numbers below and a cause
for the log. getaddrinfo() is blocking (as in asyncio.open_connection).

Memory: header lines are parsed inside `buf` (a line longer than `buf` is an error). Body
bytes go straight from the socket into the caller's memoryview (socket.readinto with a length:
no slice, no copy); only bytes already buffered with the head or with a chunk-size line are
copied out of `buf`. Per readinto call the only allocation is the coroutine object MicroPython
creates for every `await`.

How: a non-blocking socket (wrapped by ssl for https) waits on asyncio's own I/O queue, as
asyncio.open_connection and its Stream do. We do not use those two directly: Stream.readinto
takes no length (a memoryview slice per read), and a timed-out open_connection would leave its
socket open. One watchdog task per transaction enforces the three timeouts by cancelling the
waiting task (asyncio.wait_for would create two tasks per read).

Known limit: over TLS, a body that ends with the connection (no Content-Length, not chunked)
ends when the server closes TCP; a close_notify arriving in the same read as the last bytes
is swallowed by MicroPython's stream layer, and the client then waits for the TCP close.
"""

import asyncio
import socket
from asyncio import core
from errno import EINPROGRESS
from time import ticks_add, ticks_diff, ticks_ms

from micropython import const

from mpfota import httpparse as hp

# LuatOS http error numbers (components/network/libhttp).
ERR_STATE = const(-1)  # bad arguments, redirect loop, too many redirects
ERR_HEADER = const(-2)  # malformed or oversized response head
ERR_BODY = const(-3)  # malformed chunked body
ERR_CONNECT = const(-4)  # DNS, connect, TLS handshake or verification, sending the request
ERR_CLOSE = const(-5)  # the server closed before the end of the response
ERR_RX = const(-6)  # receive error after the response started
ERR_DOWNLOAD = const(-7)  # not raised here (LuatOS: download to file failed)
ERR_TIMEOUT = const(-8)  # connect, idle read or overall deadline expired
# -9 (LuatOS HTTP_ERROR_FOTA, FOTA mode rejected the answer) is mpfota.errors.FOTA_ERROR: the
# engine raises it, this client never does.

MAX_HEADER_LINES = const(64)
_YIELD_MS = const(10)  # longest run of body reads without letting other tasks run

_LENGTH = const(0)  # body framed by Content-Length
_CHUNKED = const(1)
_TO_CLOSE = const(2)  # HTTP/1.0 style: the body ends when the server closes
_DONE = const(3)

# What an expired wait means (the message is built only when it fires).
_T_CONNECT = const(0)
_T_SEND = const(1)
_T_READ = const(2)
_T_DEADLINE = const(3)
_T_FIRED = const(4)  # added by the watchdog when it cancels the wait

# Response._w, the watchdog's state and the limits it enforces, by index.
_W_TASK = const(0)  # the watchdog task, or None
_W_WAITER = const(1)  # task suspended in an I/O wait, or None
_W_UNTIL = const(2)  # when that wait expires
_W_WHY = const(3)  # which limit that expiry is (_T_*), + _T_FIRED once the watchdog fired
_W_CONNECT = const(4)  # connect_timeout_ms
_W_READ = const(5)  # read_timeout_ms
_W_DEADLINE = const(6)  # deadline_ms

# Response._flags
_F_TLS = const(1)  # the current connection is TLS
_F_ANSWERED = const(2)  # any response byte received on this connection

_MBEDTLS_CONN_EOF = const(-0x7280)  # TCP closed under TLS without close_notify
_EPIPE = const(32)  # the same in Linux and newlib; MicroPython's errno module lacks it


def _closed_errnos():
    # Errors that mean "the server went away". Numbers differ between ports (ENOTCONN is 107
    # on Linux, 128 in ESP-IDF's newlib), so take them from the errno module.
    import errno

    names = ("ECONNRESET", "ECONNABORTED", "ENOTCONN")
    return tuple(getattr(errno, n) for n in names if hasattr(errno, n)) + (
        _EPIPE,
        _MBEDTLS_CONN_EOF,
    )


_CLOSED_ERRNOS = _closed_errnos()


class HTTPError(Exception):
    """An HTTP transaction failed: .code is one of the ERR_* numbers, .msg the cause."""

    def __init__(self, code, msg):
        super().__init__(code, msg)
        self.code = code
        self.msg = msg

    def __str__(self):
        return "http error %d: %s" % (self.code, self.msg)


def _cause(e):
    # One log line: mbedTLS verification reports span lines; a bare errno gets its name.
    if isinstance(e, OSError) and len(e.args) == 1 and isinstance(e.args[0], int):
        import errno

        n = e.args[0]
        name = errno.errorcode.get(n)
        return "%s (errno %d)" % (name, n) if name else "errno %d" % n
    return " ".join(str(e).split())


def _io_wait(sock, write):
    # Suspend the current task until sock is readable or writable. This is exactly what
    # asyncio's Stream methods do; doing it here lets us read with socket.readinto(mv, n)
    # (Stream.readinto takes no length, which would cost a memoryview slice per read).
    if write:
        yield core._io_queue.queue_write(sock)
    else:
        yield core._io_queue.queue_read(sock)


class Response:
    # Fields most answers do not set are class attributes until one does: an instance's
    # attributes live in one table, and with more than 17 of them that table (592 bytes at 33)
    # needs a hole a fragmented heap may not have (docs/delta.md, "Memory and speed"). The
    # watchdog's state and the limits are one list (_w), the connection's flags one number.
    # The class's own table stays within 29 entries (464 bytes) for the same reason.
    redirects = 0
    content_range = None
    chunked = False
    etag = None
    last_modified = None
    location = None
    retry_after = None
    _chunks = 0  # chunks begun (mpfota.httpchunk)

    def __init__(self, buf, connect_ms, read_ms, deadline_ms):
        if not isinstance(buf, bytearray) or len(buf) < 64:
            raise HTTPError(ERR_STATE, "buf must be a bytearray of at least 64 bytes")
        self._buf = buf
        # The watchdog: one task per transaction, not a wait_for (two tasks) per read.
        self._w = [None, None, 0, 0, connect_ms, read_ms, deadline_ms]
        self._deadline = ticks_add(ticks_ms(), deadline_ms)
        self._ran = ticks_ms()  # when this task last let others run (readinto)
        self._sock = None  # None once closed
        self._reset()

    def _reset(self):
        # A new connection (first request or a redirect hop).
        self._reset_fields()
        self._pos = self._end = 0
        self._mode = _DONE
        self._left = 0
        self._got = 0  # body bytes delivered
        if self._chunks:
            self._chunks = 0
        self._flags = 0

    # ------------------------------------------------------------------ timeouts

    async def _watchdog(self):
        # Naps at most the shortest limit a wait can have, so it always wakes before any wait
        # that starts during the nap expires; and never past the current wait's expiry.
        st = self._w
        while True:
            now = ticks_ms()
            nap = min(st[_W_CONNECT], st[_W_READ], ticks_diff(self._deadline, now))
            w = st[_W_WAITER]
            if w is not None:
                left = ticks_diff(st[_W_UNTIL], now)
                if left <= 0:
                    st[_W_WHY] += _T_FIRED
                    st[_W_TASK] = None
                    w.cancel()
                    return
                nap = min(nap, left)
            elif nap <= 0:
                st[_W_TASK] = None  # every later wait fails on the deadline by itself
                return
            await asyncio.sleep_ms(nap)

    def _timeout(self, why):
        st = self._w
        if why == _T_CONNECT:
            msg = "connect timeout (%d ms)" % st[_W_CONNECT]
        elif why == _T_SEND:
            msg = "sending the request timed out (%d ms)" % st[_W_CONNECT]
        elif why == _T_READ:
            msg = "no data for %d ms" % st[_W_READ]
        else:
            msg = "deadline of %d ms reached" % st[_W_DEADLINE]
        return HTTPError(ERR_TIMEOUT, msg)

    async def _wait(self, write, why):
        # Wait until the socket is ready, for at most the limit of this kind of wait and
        # never past the deadline.
        now = ticks_ms()
        left = ticks_diff(self._deadline, now)
        if left <= 0:
            raise self._timeout(_T_DEADLINE)
        st = self._w
        limit = st[_W_READ] if why == _T_READ else st[_W_CONNECT]
        if limit < left:
            left = limit
        else:
            why = _T_DEADLINE
        st[_W_WHY] = why
        st[_W_UNTIL] = ticks_add(now, left)
        st[_W_WAITER] = asyncio.current_task()
        if st[_W_TASK] is None:
            st[_W_TASK] = asyncio.create_task(self._watchdog())
        try:
            await _io_wait(self._sock, write)
        except asyncio.CancelledError:
            if st[_W_WHY] >= _T_FIRED:
                raise self._timeout(st[_W_WHY] - _T_FIRED)
            raise
        finally:
            st[_W_WAITER] = None

    # ----------------------------------------------------------------- connection

    async def _connect(self, scheme, host, port, tls):
        try:
            ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
        except OSError as e:
            raise HTTPError(ERR_CONNECT, "cannot resolve %s: %s" % (host, _cause(e)))
        s = socket.socket(ai[0], ai[1], ai[2])
        self._sock = s
        s.setblocking(False)
        try:
            s.connect(ai[-1])
        except OSError as e:
            if e.errno != EINPROGRESS:
                raise HTTPError(
                    ERR_CONNECT, "connect to %s:%d failed: %s" % (host, port, _cause(e))
                )
        # Writable means connected or failed; a failure shows on the first write.
        await self._wait(True, _T_CONNECT)
        if scheme == "https":
            self._flags |= _F_TLS
            from mpfota import httptls

            try:
                if tls[4] is None:  # the context: made once per transaction
                    tls[4] = httptls.context(*tls[:4])
                self._sock = httptls.wrap(tls[4], s, host)
            except (ValueError, OSError) as e:
                raise HTTPError(ERR_CONNECT, "TLS setup failed: %s" % _cause(e))

    async def _send(self, data):
        # The TLS handshake runs inside these writes, so every failure here is a connect failure
        # (_rx_error's: nothing has been read on this connection yet).
        mv = memoryview(data)
        off = 0
        while off < len(mv):
            try:
                n = self._sock.write(mv[off:])
            except (OSError, ValueError) as e:
                raise self._rx_error(e)
            if n is None:
                await self._wait(True, _T_SEND)
            else:
                off += n

    def _read_now(self, mv, n):
        # socket.readinto without waiting: the count, 0 at EOF, None when nothing is there.
        try:
            r = self._sock.readinto(mv, n)
        except (OSError, ValueError) as e:
            raise self._rx_error(e)
        if r:
            self._flags |= _F_ANSWERED
        return r

    def _rx_error(self, e):
        if not self._flags & _F_ANSWERED:
            # Includes TLS failures that show only when the server's answer is read (TLS 1.3
            # sends a client certificate rejection after the handshake).
            return HTTPError(ERR_CONNECT, "%sconnection failed: %s"
                             % ("TLS " if self._flags & _F_TLS else "", _cause(e)))
        if isinstance(e, OSError) and e.errno in _CLOSED_ERRNOS:
            return HTTPError(ERR_CLOSE, "connection closed by the server: %s" % _cause(e))
        return HTTPError(ERR_RX, "receive failed: %s" % _cause(e))

    # ------------------------------------------------------------- response head

    async def _fill(self, err):
        # Read more bytes into buf after the unconsumed ones; False at EOF.
        buf = self._buf
        if self._pos == self._end:
            self._pos = self._end = 0
        elif self._end == len(buf):
            if self._pos == 0:
                raise HTTPError(err, "line longer than the %d-byte buffer" % len(buf))
            keep = buf[self._pos : self._end]  # a partial line: small
            buf[: len(keep)] = keep
            self._pos, self._end = 0, len(keep)
        end = self._end
        mv = memoryview(buf)[end:] if end else buf
        n = self._read_now(mv, len(buf) - end)  # 0 at EOF; waits only when nothing is there
        while n is None:
            await self._wait(False, _T_READ)
            n = self._read_now(mv, len(buf) - end)
        self._end = end + n
        return n > 0

    async def _line(self, err, eof_msg):
        # Next line from the stream without its line end (a bare LF is accepted).
        # At EOF: ERR_CLOSE with eof_msg, or a plainer cause when nothing came at all.
        buf = self._buf
        while True:
            i = buf.find(b"\n", self._pos, self._end)
            if i >= 0:
                a = self._pos
                self._pos = i + 1
                if i > a and buf[i - 1] == 13:
                    i -= 1
                return bytes(memoryview(buf)[a:i])
            if not await self._fill(err):
                if not self._flags & _F_ANSWERED:
                    eof_msg = "server closed the connection without answering"
                raise HTTPError(ERR_CLOSE, eof_msg)

    async def _read_head(self, method, range_start):
        lines = 0
        while True:
            self._reset_fields()
            line = await self._line(ERR_HEADER, "server closed the connection in the response head")
            try:
                self.status = hp.parse_status_line(line)
            except hp.ParseError as e:
                raise HTTPError(ERR_HEADER, str(e))
            te = cl = None
            while True:
                line = await self._line(
                    ERR_HEADER, "server closed the connection in the response head"
                )
                if not line:
                    break
                lines += 1
                if lines > MAX_HEADER_LINES:
                    raise HTTPError(
                        ERR_HEADER, "endless headers: more than %d lines" % MAX_HEADER_LINES
                    )
                try:
                    kv = hp.parse_header(line)
                    if kv is None:
                        continue
                    name, value = kv
                    if name == "content-length":
                        n = hp.parse_content_length(value)
                        if cl is not None and n != cl:
                            raise hp.ParseError("conflicting Content-Length headers")
                        cl = n
                    elif name == "transfer-encoding":
                        te = value if te is None else te + "," + value
                    elif name == "location":
                        self.location = value
                    elif name == "content-range":
                        from mpfota.httprange import parse_content_range

                        self.content_range = parse_content_range(value)
                    elif name == "etag":
                        self.etag = value
                    elif name == "last-modified":
                        self.last_modified = value
                    elif name == "retry-after":
                        self.retry_after = hp.parse_retry_after(value)
                except hp.ParseError as e:
                    raise HTTPError(ERR_HEADER, str(e))
            if self.status >= 200:
                break
            lines += 1  # a 1xx interim answer: skip it, its lines count against the limit
        self.content_length = cl
        if method == "HEAD" or self.status in (204, 304):
            self._mode = _DONE
        elif te is not None:
            self.chunked = hp.is_chunked(te)
            self._mode = _CHUNKED if self.chunked else _TO_CLOSE
        elif cl is not None:
            self._mode, self._left = (_LENGTH, cl) if cl else (_DONE, 0)
        else:
            self._mode = _TO_CLOSE
        if self.status == 206:
            cr = self.content_range
            if cr is None or cr[0] is None:
                raise HTTPError(ERR_HEADER, "206 without a byte Content-Range")
            if range_start is not None and cr[0] != range_start:
                raise HTTPError(
                    ERR_HEADER,
                    "asked for bytes %d-, got Content-Range from %d" % (range_start, cr[0]),
                )

    def _reset_fields(self):
        # Before each answer (a 1xx or a redirect comes before the last): the fields an
        # earlier answer set go back to their defaults (the others stay class attributes).
        self.status = 0
        self.content_length = None
        if self.content_range is not None:
            self.content_range = None
        if self.chunked:
            self.chunked = False
        if self.etag is not None:
            self.etag = None
        if self.last_modified is not None:
            self.last_modified = None
        if self.location is not None:
            self.location = None
        if self.retry_after is not None:
            self.retry_after = None

    # -------------------------------------------------------------------- body

    def _finish(self):
        # The body is complete: nothing more to read on this connection.
        self._mode = _DONE
        self.close()

    async def readinto(self, mv, n=None):
        """Read at most n (default: len(mv)) body bytes into mv (bytearray or memoryview);
        return the count, 0 at the end. A length spares the caller a slice per read."""
        if self._mode == _DONE:
            return 0
        if self._sock is None:
            raise HTTPError(ERR_STATE, "response already closed")
        now = ticks_ms()
        if ticks_diff(self._deadline, now) <= 0:
            raise self._timeout(_T_DEADLINE)
        if self._mode == _CHUNKED and self._left == 0:
            from mpfota import httpchunk

            await httpchunk.next_chunk(self)
            if self._mode == _DONE:
                return 0
        if n is None or n > len(mv):
            n = len(mv)
        if n <= 0:
            raise HTTPError(ERR_STATE, "readinto needs a non-empty buffer")
        if self._mode != _TO_CLOSE and self._left < n:
            n = self._left
        have = self._end - self._pos
        if have:
            # Bytes that arrived with the head or a chunk-size line.
            if have < n:
                n = have
            mv[:n] = memoryview(self._buf)[self._pos : self._pos + n]
            self._pos += n
        else:
            # Straight from the socket into mv: no slice, no copy.
            r = self._read_now(mv, n)
            if r is None:
                while r is None:
                    await self._wait(False, _T_READ)
                    r = self._read_now(mv, n)
                self._ran = now
            elif ticks_diff(now, self._ran) >= _YIELD_MS:
                # Let other tasks run even when the socket always has data (fast links); not
                # after every read, as a round through the scheduler costs more than a read.
                self._ran = now
                await asyncio.sleep_ms(0)
            n = r
            if not n:
                if self._mode == _TO_CLOSE:
                    self._finish()
                    return 0
                if self._mode == _LENGTH:
                    msg = "after %d of %d body bytes" % (self._got, self.content_length)
                else:
                    msg = "in chunk %d, %d bytes short" % (self._chunks, self._left)
                raise HTTPError(ERR_CLOSE, "server closed the connection " + msg)
        self._got += n
        if self._mode != _TO_CLOSE:
            self._left -= n
            if self._mode == _LENGTH and not self._left:
                self._finish()
        return n

    async def read(self, limit=1024):
        """At most `limit` body bytes as bytes (for logging an error body); then close."""
        out = bytearray(limit)
        mv = memoryview(out)
        n = 0
        try:
            while n < limit:
                r = await self.readinto(mv[n:])
                if not r:
                    break
                n += r
        finally:
            self.close()
        return bytes(mv[:n])

    def close(self):
        st = self._w
        if st[_W_TASK] is not None:
            st[_W_TASK].cancel()
            st[_W_TASK] = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def aclose(self):
        self.close()

    # --------------------------------------------------------------- transaction

    async def _run(self, method, url, headers, body, range_start, if_range, tls, max_redirects,
                   follow_redirects=True):
        seen = []
        while True:
            try:
                scheme, host, port, target = hp.split_url(url)
            except hp.ParseError as e:
                raise HTTPError(ERR_STATE, "bad URL: %s" % e)
            head = _request_head(
                method,
                target,
                hp.authority(scheme, host, port),
                headers,
                body,
                range_start,
                if_range,
            )
            self._reset()
            await self._connect(scheme, host, port, tls)
            await self._send(head)
            if body:
                await self._send(body)
            await self._read_head(method, range_start)
            if (self.status not in (301, 302, 303, 307, 308) or self.location is None
                    or not follow_redirects):
                break
            seen.append(url)
            if len(seen) > max_redirects:
                raise HTTPError(ERR_STATE, "too many redirects (more than %d)" % max_redirects)
            from mpfota import httpredirect

            try:
                nxt = httpredirect.resolve_location(url, self.location)
            except hp.ParseError as e:
                raise HTTPError(ERR_HEADER, "bad Location %r: %s" % (self.location[:80], e))
            if nxt in seen:
                raise HTTPError(ERR_STATE, "redirect loop at %s" % nxt)
            if self.status == 303 and method != "HEAD":
                method, body = "GET", None
            self._sock.close()  # the next hop connects anew
            self._sock = None
            url = nxt
        self.url = url
        if seen:
            self.redirects = len(seen)
        if self._mode == _DONE:
            self.close()


def _request_head(method, target, host, headers, body, range_start, if_range):
    # Host first; the caller's headers replace our Host, Connection and User-Agent.
    user = []
    given = []
    for k, v in headers.items() if hasattr(headers, "items") else headers or ():
        k, v = str(k), str(v)
        if not hp.is_token(k.encode()) or "\r" in v or "\n" in v:
            raise HTTPError(ERR_STATE, "bad request header %r" % k[:40])
        lk = k.lower()
        if lk == "content-length":
            continue  # ours is the true length of body
        given.append(lk)
        user.append("%s: %s\r\n" % (k, v))
    out = ["%s %s HTTP/1.1\r\n" % (method, target)]
    if "host" not in given:
        out.append("Host: %s\r\n" % host)
    out.extend(user)
    if "connection" not in given:
        out.append("Connection: close\r\n")
    if "user-agent" not in given:
        out.append("User-Agent: mpfota\r\n")
    if range_start is not None:
        out.append("Range: bytes=%d-\r\n" % range_start)
    if if_range is not None:
        out.append("If-Range: %s\r\n" % if_range)
    if body is not None:
        out.append("Content-Length: %d\r\n" % len(body))
    out.append("\r\n")
    return "".join(out).encode()


async def request(
    method,
    url,
    buf,
    headers=None,
    body=None,
    range_start=None,
    if_range=None,
    server_cert=None,
    client_cert=None,
    client_key=None,
    client_password=None,
    connect_timeout_ms=10000,
    read_timeout_ms=30000,
    deadline_ms=600000,
    max_redirects=5,
    follow_redirects=True,
):
    """Send a request and read the response head; see the module docstring."""
    method = str(method).upper()
    if not hp.is_token(method.encode()):
        raise HTTPError(ERR_STATE, "bad method %r" % method[:20])
    if isinstance(body, str):
        body = body.encode()
    if range_start is not None and (not isinstance(range_start, int) or range_start < 0):
        raise HTTPError(ERR_STATE, "bad range_start %r" % (range_start,))
    if if_range is not None and ("\r" in if_range or "\n" in if_range):
        raise HTTPError(ERR_STATE, "bad if_range")
    resp = Response(buf, connect_timeout_ms, read_timeout_ms, deadline_ms)
    tls = [server_cert, client_cert, client_key, client_password, None]
    try:
        await resp._run(method, url, headers, body, range_start, if_range, tls, max_redirects,
                        follow_redirects)
    except BaseException:
        resp.close()
        raise
    return resp
