# TLS end to end, above the HTTP client (tests/device/test_http.py has the client's own TLS
# tests): the FOTA engine (download.fetch), libfota2.request with opts.server_cert /
# client_cert / client_key / client_password, and the Aliyun client on mosquitto's TLS
# listener. A CA and certificates are made at test time (tests/host/httpserver.py make_pki);
# every server is on 127.0.0.1 (fixtures tls_server, mqtt_broker, update_server).
#
# What must pass: the right CA and host name; a client certificate where the server demands
# one. What must fail, as a connect error and before anything is written: another CA, a
# certificate for another host name, CA bytes that are not a certificate, no client
# certificate where one is demanded, an encrypted client key (MicroPython cannot decrypt keys).
import json
import time

import vb

TIMEOUT = 90


def _untouched():
    # Nothing was switched: the boot record and the confirmation state are as at boot.
    import vpartition
    from mpfota import confirm

    assert vpartition.boot_record() is None, vpartition.boot_record()
    assert confirm.status() == "valid"


async def _fetch_fails(code, url, words=None, **kw):
    from mpfota import download, http
    from mpfota.errors import FotaError

    try:
        await download.fetch(url, retries=0, **kw)
    except (http.HTTPError, FotaError) as e:
        assert e.code == code, "expected %d, got %d: %s" % (code, e.code, e.msg)
        if words is not None:
            assert words in e.msg, "%r not in %r" % (words, e.msg)
        return e
    raise AssertionError("fetch of %s did not fail" % url)


async def test_engine_fetch_over_tls_verifies_the_server(vboard, tls_server):
    # The right CA: every byte arrives over TLS into the spare slot, its MD5 matches and the
    # slot reads back right; the blob is not a core image, so the board refuses to switch to it
    # (-9, after the digest and read-back checks). Any other trust failure: -4 (connect).
    vb.boot()
    from mpfota import http
    from mpfota.errors import FOTA_ERROR

    blob = tls_server["blobs"]["medium"]
    url = tls_server["base"] + "/blob/medium"
    ca = tls_server["ca"]
    await _fetch_fails(FOTA_ERROR, url, "not a bootable image", md5=blob["md5"], server_cert=ca)
    await _fetch_fails(FOTA_ERROR, url, "md5", md5="0" * 32, server_cert=ca)
    await _fetch_fails(http.ERR_CONNECT, url, "TLS", server_cert=tls_server["other_ca"])
    await _fetch_fails(http.ERR_CONNECT, tls_server["wrong_host_base"] + "/blob/medium",
                       "(CN) does not match", server_cert=ca)
    await _fetch_fails(http.ERR_CONNECT, url, "TLS setup failed", server_cert=b"not a cert")
    _untouched()


async def test_engine_fetch_with_a_client_certificate(vboard, tls_server):
    vb.boot()
    from mpfota import http
    from mpfota.errors import FOTA_ERROR

    url = tls_server["mtls_base"] + "/blob/small"
    kw = {"server_cert": tls_server["ca"]}
    md5 = tls_server["blobs"]["small"]["md5"]
    await _fetch_fails(FOTA_ERROR, url, "not a bootable image", md5=md5,
                       client_cert=tls_server["client_cert"],
                       client_key=tls_server["client_key"], **kw)
    await _fetch_fails(http.ERR_CONNECT, url, **kw)  # the server demands a certificate
    await _fetch_fails(http.ERR_CONNECT, url, "not supported",
                       client_cert=tls_server["client_cert"],
                       client_key=tls_server["client_key_encrypted"],
                       client_password=tls_server["client_key_password"], **kw)
    _untouched()


def _libfota2_opts(url, **kw):
    opts = {"url": "###" + url}
    opts.update(kw)
    return opts


async def _libfota2(opts):
    # libfota2.request(cb, opts): the callback's code, and the Outcome of the same check.
    import asyncio

    import libfota2

    codes = []
    libfota2.request(codes.append, dict(opts))
    for _ in range(300):
        if codes:
            break
        await asyncio.sleep_ms(20)
    assert codes, "no callback"
    o = dict(opts)
    libfota2.prepare(o, {}, {})
    return codes[0], await libfota2.check(o)


async def test_libfota2_request_over_tls(vboard, tls_server):
    # opts.server_cert over https: the platform's answer is read ("already latest", code 27,
    # callback 4), or the connection is refused (callback 1, connect error -4).
    vb.boot()
    import libfota2

    ca = tls_server["ca"]
    answer = "/status/404"
    code, out = await _libfota2(_libfota2_opts(tls_server["base"] + answer, server_cert=ca))
    assert code == libfota2.RECEIVE_ERROR and out.error is None and out.status == 404
    assert json.loads(out.body)["code"] == 27, out.body
    for opts in (
        _libfota2_opts(tls_server["base"] + answer, server_cert=tls_server["other_ca"]),
        _libfota2_opts(tls_server["wrong_host_base"] + answer, server_cert=ca),
    ):
        code, out = await _libfota2(opts)
        assert (code, out.error) == (libfota2.CONNECT_FAILED, -4), (opts["url"], code, out.error)
    # a download over TLS goes to the end: every byte counted by the progress callback
    seen = []
    blob = tls_server["blobs"]["small"]
    opts = _libfota2_opts(tls_server["base"] + "/blob/small", server_cert=ca,
                          callback=lambda total, got: seen.append((total, got)))
    code, out = await _libfota2(opts)
    assert out.error == -9 and seen and seen[-1][1] == blob["size"], (out.error, seen[-3:])
    _untouched()


async def test_libfota2_client_certificate_and_password(vboard, tls_server):
    vb.boot()
    import libfota2

    url = tls_server["mtls_base"] + "/status/404"
    base = {"server_cert": tls_server["ca"], "client_cert": tls_server["client_cert"]}
    code, out = await _libfota2(_libfota2_opts(url, client_key=tls_server["client_key"],
                                               **base))
    assert (code, out.status) == (libfota2.RECEIVE_ERROR, 404), (code, out.status, out.error)
    code, out = await _libfota2(_libfota2_opts(url, server_cert=tls_server["ca"]))
    assert (code, out.error) == (libfota2.CONNECT_FAILED, -4)
    code, out = await _libfota2(_libfota2_opts(
        url, client_key=tls_server["client_key_encrypted"],
        client_password=tls_server["client_key_password"], **base))
    assert (code, out.error) == (libfota2.CONNECT_FAILED, -4)


def _platform(broker, pk, dn, got):
    # The platform's side: a plain MQTT client on the same broker.
    from umqtt.simple import MQTTClient

    c = MQTTClient("platform-tls", broker["host"], broker["port"])
    c.set_callback(lambda t, m: got.append((t.decode(), json.loads(m))))
    c.connect()
    c.subscribe(("/ota/device/inform/%s/%s" % (pk, dn)).encode(), 1)
    c.subscribe(("/ota/device/progress/%s/%s" % (pk, dn)).encode(), 1)
    return c


async def test_aliyun_job_over_tls(vboard, mqtt_broker, update_server):
    # The device logs in on the broker's TLS listener (CA and host name verified), reports its
    # version, takes an upgrade job pushed by the platform, downloads and verifies the image
    # and reports 100; the boot slot is switched.
    vb.boot()
    import asyncio

    import aliyun_ota
    import vpartition

    d = mqtt_broker["device"]
    img = update_server["images"]["core-2.0.0"]
    got = []
    plat = _platform(mqtt_broker, d["pk"], d["dn"], got)
    results = []
    ota = aliyun_ota.AliyunOta(d["pk"], d["dn"], d["ds"], host="127.0.0.1",
                               port=mqtt_broker["tls_port"], tls=True, ca=mqtt_broker["ca"],
                               version="1.0.0", progress_interval_ms=0)
    ota.setCb(lambda result, path=None: results.append(result))
    task = asyncio.create_task(ota.run(20000))
    t0 = time.ticks_ms()
    while not got and time.ticks_diff(time.ticks_ms(), t0) < 8000:
        plat.check_msg()
        await asyncio.sleep_ms(20)
    assert got and got[0][1]["params"]["version"] == "1.0.0", got
    job = {"code": "1000", "id": 1, "message": "success",
           "data": {"url": update_server["base"] + img["path"], "size": img["size"],
                    "md5": img["md5"], "version": "2.0.0"}}
    plat.publish(("/ota/device/upgrade/%s/%s" % (d["pk"], d["dn"])).encode(),
                 json.dumps(job).encode())
    while not results and time.ticks_diff(time.ticks_ms(), t0) < 18000:
        plat.check_msg()
        await asyncio.sleep_ms(20)
    for _ in range(20):
        plat.check_msg()
        await asyncio.sleep_ms(20)
    ota.stop()
    await task
    plat.disconnect()
    assert results == [True], (results, got)
    steps = [m[1]["params"]["step"] for m in got if "step" in m[1]["params"]]
    assert steps and steps[-1] == "100", steps
    assert vpartition.boot_record() == (1, "new")


def test_aliyun_tls_refuses_a_broker_of_another_ca(vboard, mqtt_broker, tls_server):
    vb.boot()
    import aliyun_ota

    d = mqtt_broker["device"]
    ota = aliyun_ota.AliyunOta(d["pk"], d["dn"], d["ds"], host="127.0.0.1",
                               port=mqtt_broker["tls_port"], tls=True,
                               ca=tls_server["other_ca"], version="x")
    try:
        ota.connect()
    except ValueError as e:  # MicroPython's ssl: the certificate does not verify
        assert "not correctly signed by the trusted CA" in str(e), e
    else:
        ota.disconnect()
        raise AssertionError("a broker certified by another CA was accepted")
    # the broker's certificate names 127.0.0.1 and localhost, nothing else
    wrong = aliyun_ota.AliyunOta(d["pk"], d["dn"], d["ds"], host="127.0.0.1",
                                 port=mqtt_broker["tls_port"], tls=True, ca=mqtt_broker["ca"],
                                 ssl_params={"server_hostname": "wrong.example"}, version="x")
    try:
        wrong.connect()
    except ValueError as e:  # verified against the right CA: only the name is wrong
        assert "Common Name (CN) does not match" in str(e), e
    else:
        wrong.disconnect()
        raise AssertionError("a broker certificate for another host name was accepted")


async def test_full_core_update_over_verified_tls(vboard, tls_update_server):
    # The whole update over https with the server verified: downloaded, checked, switched, and
    # the next boot runs the new core.
    vb.boot()
    import board
    import vpartition
    from mpfota import download

    blob = tls_update_server["blobs"]["core-2.0.0"]
    r = await download.fetch(tls_update_server["base"] + "/blob/core-2.0.0", md5=blob["md5"],
                             server_cert=tls_update_server["ca"])
    assert (r.status, r.size) == (200, blob["size"])
    assert vpartition.boot_record() == (1, "new")
    assert vb.reboot() == 1
    assert board.core_version() == "2.0.0"
