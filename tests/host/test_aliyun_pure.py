"""The pure parts of device/aliyun_ota.py and device/mpfota/hmac.py under CPython: checked
against CPython's hmac and fuzzed with hypothesis (any payload gets a Job or a BadJob)."""

from __future__ import annotations

import hashlib
import hmac as std_hmac
import importlib
import json
import sys

from hypothesis import given, settings
from hypothesis import strategies as st
from mpfota_host import paths

sys.path.insert(0, str(paths.DEVICE))
try:
    aliyun_ota = importlib.import_module("aliyun_ota")
    dev_hmac = importlib.import_module("mpfota.hmac")
finally:
    sys.path.remove(str(paths.DEVICE))

from fixtures_mqtt import aliyun_credentials  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=300),
       st.sampled_from(["sha256", "sha1", "md5"]))
def test_hmac_equals_cpython(key, msg, name):
    assert dev_hmac.new(key, msg, name).digest() == std_hmac.new(key, msg, name).digest()
    assert dev_hmac.new(key, msg, getattr(hashlib, name)).hexdigest() == \
        std_hmac.new(key, msg, name).hexdigest()


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30),
       st.text(min_size=1, max_size=80), st.one_of(st.none(), st.text(max_size=64)),
       st.integers(min_value=0, max_value=2**45), st.booleans())
def test_credentials_equal_independent_computation(pk, dn, ds, cid, ts, tls):
    want = aliyun_credentials(pk, dn, ds, cid, str(ts), tls)
    got = aliyun_ota.credentials(pk, dn, ds, cid, ts, tls)
    assert got == (want["client_id"], want["username"], want["password"])


def test_worked_example():
    # Published Link SDK port test: testProduct / testDevice / testSecret at 1700000000000.
    _, user, pw = aliyun_ota.credentials("testProduct", "testDevice", "testSecret",
                                         timestamp="1700000000000")
    assert user == "testDevice&testProduct"
    assert pw == "cf010f6c3258ec9917e7cee0dad88c964d0fd125343140b6a78e715e87da3040"


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=5),
    max_leaves=12,
)
_keys = st.sampled_from(["url", "size", "md5", "sign", "signMethod", "version", "module",
                         "isDiff", "files", "digestsign", "extData", "fileUrl", "fileSize",
                         "fileMd5", "fileSign", "fileName"])
_values = st.one_of(_json, st.sampled_from(["http://127.0.0.1/x", "MD5", "SHA256", "default",
                                            "0" * 32, "a" * 64, 1000, 0, 1, "AAAA"]))
_data = st.dictionaries(_keys, _values, max_size=8)


def _check(payload):
    try:
        job = aliyun_ota.parse_job(payload, capacity=100_000)
    except aliyun_ota.BadJob as e:
        assert e.step in (-1, -3, -4), e
        assert isinstance(e.desc, str) and e.desc
        msg = json.loads(aliyun_ota.progress_message(1, e.step, e.desc, e.module))
        assert len(msg["params"]["desc"]) <= 128
        return
    assert job.files and all(f.size > 0 and f.url.startswith(("http://", "https://"))
                             for f in job.files)
    assert all(f.size <= 100_000 for f in job.files)
    assert all((f.md5 is None or len(f.md5) == 32) and (f.sha256 is None or len(f.sha256) == 64)
               and f.digest is not None for f in job.files)


@settings(max_examples=500, deadline=None)
@given(_data)
def test_parse_job_fuzz_data(data):
    _check(json.dumps({"code": "1000", "data": data, "id": 1}))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), _json.map(json.dumps),
                 st.lists(_data, max_size=3).map(
                     lambda files: json.dumps({"data": {"files": files, "version": "1"}}))))
def test_parse_job_fuzz_payload(payload):
    _check(payload)
