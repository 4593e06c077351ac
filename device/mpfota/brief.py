# Short texts of what came from outside (a JSON answer or message, an answer's body), for log
# lines and error texts. repr() or str() of a JSON value can fail: a list nested a few hundred
# deep exceeds the recursion limit (far sooner on a board's small stack), and a long one takes
# as much heap as its text. Containers are named by kind and length and never walked, in one
# word (log lines are read field by field: "<array:3>", "<object:2>").

def brief(v, n=40):
    if isinstance(v, list):
        return "<array:%d>" % len(v)
    if isinstance(v, dict):
        return "<object:%d>" % len(v)
    if isinstance(v, str) and len(v) > n:
        return repr(v[:n]) + "..."
    text = repr(v)  # a number, a bool, None or a short string
    return text if len(text) <= n else text[:n] + "..."


def body_text(b):
    # The start of an answer's body (bytes) as text. MicroPython's decode() ignores
    # errors="replace" and raises: a character cut by the caller's limit is left out, and a body
    # that is no UTF-8 at all keeps its ASCII bytes ("?" for the others).
    for cut in range(4):
        try:
            return b[:len(b) - cut].decode()
        except UnicodeError:
            pass
    return "".join([chr(c) if c < 0x80 else "?" for c in b])
