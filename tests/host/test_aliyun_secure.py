"""Secure upgrade (AliOS uOTA scheme): with a public key provisioned, the board applies only
jobs whose `digestsign` verifies; everything else is refused with step -3 before downloading."""

from __future__ import annotations

import base64
import hashlib
import threading

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from mpfota_host import aliyun_mock, vboard
from test_aliyun_mock import SLOT, Board, _app, _failure, _flash_state, _image, _reported


def _pem_private(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_public(key) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture(scope="module")
def keys():
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


@pytest.fixture
def mock(mqtt_broker):
    d = mqtt_broker.device()
    m = aliyun_mock.AliyunMock("127.0.0.1", mqtt_broker.port, d["pk"], d["dn"])
    yield m
    m.close()


def test_digestsign_is_over_the_binary_digest(keys):
    # What the mock sends is what uOTA checks: PKCS#1 v1.5 / SHA-256 over digest bytes.
    digest = hashlib.sha256(b"package").hexdigest()
    sig = base64.b64decode(aliyun_mock.sign_digest(_pem_private(keys[0]), digest))
    keys[0].public_key().verify(sig, bytes.fromhex(digest), padding.PKCS1v15(), hashes.SHA256())


def test_signed_sha256_job_end_to_end(make_vboard, mqtt_broker, mock, keys, tmp_path):
    vb = make_vboard("secure", slot_size=SLOT)
    fw = _image("2.0.0", 80_000)
    app = _app(tmp_path, mqtt_broker, public_key=_pem_public(keys[0]))
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(code=vboard.run(
        vb.path, app=app, max_boots=3, timeout=60, stream=_Null())), daemon=True)
    runner.start()
    pkg = aliyun_mock.PackageServer(fw)
    try:
        assert mock.wait_inform(20) == _reported("1.0.0")
        job = aliyun_mock.make_job(pkg.url, len(fw), _reported("2.0.0"),
                                   sha256=hashlib.sha256(fw).hexdigest(), sign_method="SHA256",
                                   private_key_pem=_pem_private(keys[0]))
        assert "md5" not in job and len(base64.b64decode(job["digestsign"])) == 256
        mock.push(job)
        outcome = mock.follow(_reported("2.0.0"), 60)
        assert outcome.success, outcome
        assert outcome.steps[-1] == 100
    finally:
        pkg.close()
        runner.join(30)
    assert result.get("code") == 0


class _Null:
    def write(self, data: bytes) -> None:
        pass

    def flush(self) -> None:
        pass


def test_unsigned_and_forged_jobs_are_refused(make_vboard, mqtt_broker, mock, keys, tmp_path):
    vb = make_vboard("forged", slot_size=SLOT)
    before = _flash_state(vb.path)
    board = Board(vb.path, _app(tmp_path, mqtt_broker, public_key=_pem_public(keys[0]),
                                auto_reset=False))
    fw = _image("2.0.0", 40_000)
    md5 = hashlib.md5(fw).hexdigest()
    pkg = aliyun_mock.PackageServer(fw)
    try:
        assert mock.wait_inform(20) == _reported("1.0.0")
        job = aliyun_mock.make_job(pkg.url, len(fw), "2.0.0", md5=md5)
        own = _pem_private(keys[0])
        other_digest = hashlib.md5(b"another package").hexdigest()
        sig = base64.b64decode(aliyun_mock.sign_digest(own, md5))
        cases = [
            (job, "unsigned job refused"),
            ({**job, "digestsign": aliyun_mock.sign_digest(_pem_private(keys[1]), md5)},
             "does not verify"),
            ({**job, "digestsign": aliyun_mock.sign_digest(own, other_digest)},
             "does not verify"),
            ({**job, "digestsign": base64.b64encode(sig[:-1]).decode()}, "does not verify"),
            ({**job, "digestsign": base64.b64encode(bytes([sig[0] ^ 1]) + sig[1:]).decode()},
             "does not verify"),
            ({**job, "digestsign": "!!not base64!!"}, "base64"),
        ]
        for payload, text in cases:
            mock.push(payload)
            ev = _failure(mock)
            assert ev.step == -3 and text in ev.desc, (text, ev)
        assert pkg.hits == 0, "a job that does not verify is not downloaded"
        # The genuine signature over the package's MD5: written and verified (no reset here).
        mock.push({**job, "digestsign": base64.b64encode(sig).decode()})
        ev = mock.next_event(30, "progress")
        while ev is not None and 0 < ev.step < 100:
            ev = mock.next_event(30, "progress")
        assert ev is not None and ev.step == 100, ev
    finally:
        pkg.close()
        out = board.stop()
    assert "Traceback" not in out, out
    after = _flash_state(vb.path)
    assert after[1] == before[1], "the running slot is never written"
