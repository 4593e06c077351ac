# A short text of a value that came from outside (a JSON answer or message), for log lines and
# error texts. repr() or str() of such a value can fail: a list nested a few hundred deep
# exceeds the recursion limit (far sooner on a board's small stack), and a long one takes as
# much heap as its text. Containers are named by kind and length and never walked, in one word
# (log lines are read field by field: "<array:3>", "<object:2>").


def brief(v, n=40):
    if isinstance(v, list):
        return "<array:%d>" % len(v)
    if isinstance(v, dict):
        return "<object:%d>" % len(v)
    if isinstance(v, str) and len(v) > n:
        return repr(v[:n]) + "..."
    text = repr(v)  # a number, a bool, None or a short string
    return text if len(text) <= n else text[:n] + "..."
