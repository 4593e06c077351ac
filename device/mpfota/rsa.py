# RSA signature verification, RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 §8.2.2), in plain Python.
#
#   key = rsa.load_public_key(pem_or_der)   # SubjectPublicKeyInfo or PKCS#1 RSAPublicKey
#   rsa.verify(key, message, signature)                       -> bool
#   rsa.verify(key, sha256_digest, signature, prehashed=True) -> bool
#
# The same scheme as Aliyun's AliOS uOTA firmware signatures. Only verification: the device
# never holds a private key. The cost is one modular exponentiation with the public exponent
# (65537: 17 multiplications of 2048-bit numbers), measured in docs/security.md.
# Runs under MicroPython (big ints, 3-argument pow when the port has it) and CPython.
import binascii
import hashlib

MIN_BITS = 2048
MAX_BITS = 4096

# DER of DigestInfo for SHA-256, up to (not including) the 32 digest bytes.
_SHA256_INFO = b"\x30\x31\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00\x04\x20"
# OID 1.2.840.113549.1.1.1 (rsaEncryption), value bytes.
_RSA_OID = b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01"


class PublicKey:
    def __init__(self, n, e, der=None):
        self.n = n
        self.e = e
        self.size = (_bit_length(n) + 7) // 8  # signature length in bytes
        self.der = der

    @property
    def bits(self):
        return _bit_length(self.n)

    def fingerprint(self):
        # SHA-256 of the key's DER (as read), hex: for log lines.
        if self.der is None:
            return None
        return binascii.hexlify(hashlib.sha256(self.der).digest()).decode()


def _bit_length(n):
    bits = 0
    while n >= 1 << (bits + 64):
        bits += 64
    while n >> bits:
        bits += 1
    return bits


# --- a minimal DER reader: tag, length, value --------------------------------------------------


def _tlv(data, pos, tag):
    # (value start, value end) of the element of type `tag` at `pos`; ValueError otherwise.
    if pos + 2 > len(data):
        raise ValueError("key: DER ends early")
    if data[pos] != tag:
        raise ValueError("key: DER tag 0x%02x where 0x%02x was expected" % (data[pos], tag))
    n = data[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        if not 1 <= k <= 3 or pos + k > len(data):
            raise ValueError("key: bad DER length")
        n = 0
        for i in range(k):
            n = (n << 8) | data[pos + i]
        pos += k
    if pos + n > len(data):
        raise ValueError("key: DER element longer than the data")
    return pos, pos + n


def _int(data, pos):
    start, end = _tlv(data, pos, 0x02)
    if start == end or data[start] & 0x80:
        raise ValueError("key: a negative or empty integer")
    return int.from_bytes(bytes(data[start:end]), "big"), end


def _rsa_public_key(data, pos, end_expected):
    # RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
    start, end = _tlv(data, pos, 0x30)
    if end != end_expected:
        raise ValueError("key: trailing bytes after RSAPublicKey")
    n, p = _int(data, start)
    e, p = _int(data, p)
    if p != end:
        raise ValueError("key: extra fields in RSAPublicKey")
    return n, e


def _from_der(der):
    der = bytes(der)
    start, end = _tlv(der, 0, 0x30)
    if end != len(der):
        raise ValueError("key: trailing bytes after the key")
    if start < end and der[start] == 0x02:  # PKCS#1 RSAPublicKey
        n, e = _rsa_public_key(der, 0, len(der))
    else:  # SubjectPublicKeyInfo ::= SEQUENCE { AlgorithmIdentifier, BIT STRING }
        a0, a1 = _tlv(der, start, 0x30)
        o0, o1 = _tlv(der, a0, 0x06)
        if der[o0:o1] != _RSA_OID:
            raise ValueError("key: not an RSA key (algorithm OID %s)"
                             % binascii.hexlify(der[o0:o1]).decode())
        b0, b1 = _tlv(der, a1, 0x03)
        if b1 != end:
            raise ValueError("key: trailing bytes in SubjectPublicKeyInfo")
        if b0 >= b1 or der[b0] != 0:
            raise ValueError("key: the key bit string has unused bits")
        n, e = _rsa_public_key(der, b0 + 1, b1)
    bits = _bit_length(n)
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError("key: %d-bit modulus (%d to %d supported)" % (bits, MIN_BITS, MAX_BITS))
    if e < 3 or not e & 1 or e >= n:
        raise ValueError("key: bad public exponent")
    return PublicKey(n, e, der)


def _pem_body(text):
    # The base64 between the first BEGIN line and its END line.
    lines = text.replace("\r", "").split("\n")
    out = []
    inside = False
    for ln in lines:
        ln = ln.strip()
        if ln.startswith("-----BEGIN "):
            if "PUBLIC KEY" not in ln:
                raise ValueError("key: PEM block %s is not a public key" % ln)
            inside = True
        elif ln.startswith("-----END "):
            if inside:
                return "".join(out)
        elif inside and ln and ":" not in ln:
            out.append(ln)
    raise ValueError("key: no complete PEM public key block")


def load_public_key(pem_or_der):
    # A PublicKey from PEM text (str or bytes) or DER bytes; ValueError with the cause otherwise.
    if isinstance(pem_or_der, PublicKey):
        return pem_or_der
    data = pem_or_der
    if isinstance(data, str):
        data = data.encode()
    data = bytes(data)
    if data[:5] == b"-----" or data.lstrip()[:5] == b"-----":
        try:
            der = binascii.a2b_base64(_pem_body(data.decode()))
        except (ValueError, UnicodeError):
            raise ValueError("key: bad base64 in PEM")
        return _from_der(der)
    return _from_der(data)


# --- verification ------------------------------------------------------------------------------


def _modexp(base, exp, mod):
    try:
        return pow(base, exp, mod)
    except (TypeError, NotImplementedError):
        # Ports built without 3-argument pow(): square and multiply (17 steps for e = 65537).
        result = 1
        base %= mod
        while exp:
            if exp & 1:
                result = result * base % mod
            exp >>= 1
            if exp:
                base = base * base % mod
        return result


def encoded_message(digest, size):
    # EMSA-PKCS1-v1_5 for SHA-256: 00 01 FF..FF 00 DigestInfo digest, `size` bytes.
    pad = size - 3 - len(_SHA256_INFO) - len(digest)
    if pad < 8:
        raise ValueError("key too small for SHA-256")
    return b"\x00\x01" + b"\xff" * pad + b"\x00" + _SHA256_INFO + digest


def verify(pubkey, message_or_digest, signature, prehashed=False):
    # True when `signature` is a valid PKCS#1 v1.5 SHA-256 signature by `pubkey` (a PublicKey,
    # or PEM/DER) over the message (or, with prehashed=True, over the 32-byte SHA-256 digest
    # given). A malformed key or digest raises ValueError; a bad signature returns False.
    key = load_public_key(pubkey)
    if prehashed:
        digest = bytes(message_or_digest)
        if len(digest) != 32:
            raise ValueError("a SHA-256 digest is 32 bytes, got %d" % len(digest))
    else:
        digest = hashlib.sha256(message_or_digest).digest()
    sig = bytes(signature)
    if len(sig) != key.size:
        return False
    s = int.from_bytes(sig, "big")
    if s >= key.n:
        return False
    m = _modexp(s, key.e, key.n)
    return m.to_bytes(key.size, "big") == encoded_message(digest, key.size)
