# HMAC (RFC 2104) on hashlib, for MicroPython, which has no hmac module. Pure: it also runs
# under CPython, where it must agree with the standard hmac module (tests check both).
#
#     from mpfota import hmac
#     hmac.new(key, msg, "sha256").hexdigest()
#     hmac.sha256_hex(key, msg)                 # the same, in one call
#
# `digestmod` is a hashlib name ("sha256", "sha1", "md5": whichever this board's hashlib has)
# or a constructor such as hashlib.sha256. Keys and messages are bytes or str (UTF-8).
import hashlib

_BLOCK = 64  # block size of SHA-256, SHA-1 and MD5


def _bytes(data):
    return data.encode() if isinstance(data, str) else bytes(data)


def _constructor(digestmod):
    if isinstance(digestmod, str):
        try:
            return getattr(hashlib, digestmod.lower())
        except AttributeError:
            raise ValueError("hashlib has no %s on this board" % digestmod)
    if digestmod is None:
        raise ValueError("digestmod is required")
    return digestmod


def _pad(key, byte):
    out = bytearray(_BLOCK)
    for i in range(_BLOCK):
        out[i] = (key[i] if i < len(key) else 0) ^ byte
    return out


class HMAC:
    # One MAC computation. MicroPython hash objects cannot be copied and are finished by
    # digest(), so the result is computed once, on the first digest()/hexdigest(), and kept.
    def __init__(self, key, msg=None, digestmod="sha256"):
        make = _constructor(digestmod)
        key = _bytes(key)
        if len(key) > _BLOCK:
            key = make(key).digest()
        self._make = make
        self._outer_key = _pad(key, 0x5C)
        self._inner = make(_pad(key, 0x36))
        self._digest = None
        if msg is not None:
            self.update(msg)

    def update(self, msg):
        if self._digest is not None:
            raise ValueError("HMAC already finished")
        self._inner.update(_bytes(msg))

    def digest(self):
        if self._digest is None:
            outer = self._make(self._outer_key)
            outer.update(self._inner.digest())
            self._digest = outer.digest()
        return self._digest

    def hexdigest(self):
        import binascii

        return binascii.hexlify(self.digest()).decode()


def new(key, msg=None, digestmod="sha256"):
    return HMAC(key, msg, digestmod)


def sha256_hex(key, msg):
    # Lowercase hex HMAC-SHA256, as the Aliyun MQTT password.
    return HMAC(key, msg, "sha256").hexdigest()


def compare_digest(a, b):
    # Comparison whose time does not depend on where the inputs differ.
    a = _bytes(a)
    b = _bytes(b)
    diff = len(a) ^ len(b)
    for i in range(min(len(a), len(b))):
        diff |= a[i] ^ b[i]
    return diff == 0
