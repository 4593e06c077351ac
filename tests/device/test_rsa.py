# RSA PKCS#1 v1.5 / SHA-256 verification in MicroPython against signatures made by the host's
# `cryptography` package; malformed keys are refused with a cause; the cost is printed.
from binascii import unhexlify

from mpfota import rsa

TIMEOUT = 60


def test_valid_signatures_verify_for_each_key_size(rsa_vectors):
    for k in rsa_vectors["keys"]:
        key = rsa.load_public_key(k["pem"])
        assert key.bits == k["bits"] and key.e == 65537
        msg = unhexlify(k["message_hex"])
        sig = unhexlify(k["sig_hex"])
        assert rsa.verify(key, msg, sig), k["bits"]
        assert rsa.verify(key, unhexlify(k["digest_hex"]), sig, prehashed=True)
        # The same key given as PEM text, DER SubjectPublicKeyInfo, or PKCS#1 DER.
        assert rsa.verify(k["pem"], msg, sig)
        assert rsa.verify(unhexlify(k["der_hex"]), msg, sig)
        assert rsa.load_public_key(unhexlify(k["pkcs1_der_hex"])).n == key.n


def test_wrong_message_signature_or_key_is_false(rsa_vectors):
    a, b = rsa_vectors["keys"][0], rsa_vectors["keys"][1]
    key = rsa.load_public_key(a["pem"])
    msg = unhexlify(a["message_hex"])
    sig = bytearray(unhexlify(a["sig_hex"]))
    assert not rsa.verify(key, msg + b"!", sig)
    sig[100] ^= 1
    assert not rsa.verify(key, msg, sig)
    assert not rsa.verify(key, msg, unhexlify(a["sig_hex"])[:-1]), "short signature"
    assert not rsa.verify(key, msg, b"\xff" * key.size), "signature >= modulus"
    assert not rsa.verify(key, msg, bytes(key.size))
    assert not rsa.verify(b["pem"], msg, unhexlify(a["sig_hex"])), "another key"
    assert not rsa.verify(key, msg, unhexlify(rsa_vectors["pss_sig_hex"])), "PSS is not v1.5"


def test_right_digest_under_wrong_padding_is_false(rsa_vectors):
    # The whole encoded message is compared, not only the digest at its end (a lax padding
    # check would accept these forged-looking signatures).
    a = rsa_vectors["keys"][0]
    key = rsa.load_public_key(a["pem"])
    msg = unhexlify(a["message_hex"])
    assert len(rsa_vectors["bad_padding"]) == 4
    for name, sig in rsa_vectors["bad_padding"].items():
        assert not rsa.verify(key, msg, unhexlify(sig)), name
        assert not rsa.verify(key, unhexlify(a["digest_hex"]), unhexlify(sig), prehashed=True)


def test_malformed_keys_raise_value_error_with_a_cause(rsa_vectors):
    der = unhexlify(rsa_vectors["keys"][0]["der_hex"])
    cases = {
        "small": rsa_vectors["small_pem"],
        "ec": rsa_vectors["ec_pem"],
        "empty": b"",
        "truncated": der[:100],
        "trailing": der + b"\x00",
        "garbage": b"\x30\x82\xff\xff" + der[4:],
        "no pem end": "-----BEGIN PUBLIC KEY-----\nMIIB\n",
        "private": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    }
    for name, data in cases.items():
        try:
            rsa.load_public_key(data)
        except ValueError as e:
            assert str(e).startswith("key:"), (name, e)
        else:
            raise AssertionError("%s key should be refused" % name)
    try:
        rsa.verify(der, b"x" * 31, b"", prehashed=True)
    except ValueError:
        pass
    else:
        raise AssertionError("a digest must be 32 bytes")


def test_ports_without_three_argument_pow(rsa_vectors):
    # Some ports are built without MICROPY_PY_BUILTINS_POW3: rsa falls back to square and
    # multiply. Shadow pow() in the module to check that path gives the same answers.
    def no_pow3(*args):
        raise TypeError("3-arg pow() not supported")

    k = rsa_vectors["keys"][0]
    msg = unhexlify(k["message_hex"])
    sig = unhexlify(k["sig_hex"])
    rsa.pow = no_pow3
    try:
        assert rsa.verify(k["pem"], msg, sig)
        assert not rsa.verify(k["pem"], msg + b"x", sig)
        assert rsa._modexp(7, 65537, 1000003) == 7 ** 65537 % 1000003
    finally:
        del rsa.pow


def test_verify_cost(rsa_vectors):
    import time

    for k in rsa_vectors["keys"]:
        key = rsa.load_public_key(k["pem"])
        msg = unhexlify(k["message_hex"])
        sig = unhexlify(k["sig_hex"])
        t = time.ticks_us()
        for _ in range(10):
            assert rsa.verify(key, msg, sig)
        us = time.ticks_diff(time.ticks_us(), t) // 10
        print("rsa.verify_us.%d: %d" % (k["bits"], us))
        assert us < 200000, "one verify should take well under 0.2 s on the unix port"
