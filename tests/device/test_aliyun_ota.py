# aliyun_ota on the device: HMAC and credentials against CPython's hmac, the report messages,
# the upgrade-message parser, and logins on a real mosquitto (signed password, TLS).
import json

import vb

TIMEOUT = 60


def _unhex(s):
    import binascii

    return binascii.unhexlify(s)


def test_hmac_matches_cpython(aliyun_vectors):
    from mpfota import hmac

    for case in aliyun_vectors["hmac"]:
        got = hmac.new(_unhex(case["key"]), _unhex(case["msg"]), case["digest"]).hexdigest()
        assert got == case["mac"], (case, got)
    h = hmac.new(b"key", None, "sha256")
    h.update("The quick brown fox ")
    h.update(b"jumps over the lazy dog")
    assert h.hexdigest() == aliyun_vectors["hmac"][1]["mac"]
    assert h.digest() == _unhex(aliyun_vectors["hmac"][1]["mac"]), "digest() may be asked twice"
    try:
        h.update(b"more")
    except ValueError:
        pass
    else:
        raise AssertionError("update after digest must fail")
    assert hmac.compare_digest("abc", b"abc") and not hmac.compare_digest("abc", "abd")
    assert not hmac.compare_digest("abc", "abcd")


def test_credentials_match_cpython(aliyun_vectors):
    import aliyun_ota

    for case in aliyun_vectors["credentials"]:
        pk, dn, ds, cid, ts, tls = case["args"]
        got = aliyun_ota.credentials(pk, dn, ds, cid, ts, tls)
        assert got == (case["client_id"], case["username"], case["password"]), (case, got)
    # The worked example of a published Link SDK port: pk testProduct, dn testDevice,
    # secret testSecret, timestamp 1700000000000.
    _, _, pw = aliyun_ota.credentials("testProduct", "testDevice", "testSecret",
                                      timestamp=1700000000000)
    assert pw == "cf010f6c3258ec9917e7cee0dad88c964d0fd125343140b6a78e715e87da3040"
    mid, _, _ = aliyun_ota.credentials("pk", "dn", "s")
    assert mid == "pk.dn|securemode=3,signmethod=hmacsha256,timestamp=2524608000000|"
    want = "a1pk.iot-as-mqtt.cn-shanghai.aliyuncs.com"
    assert aliyun_ota.mqtt_host("a1pk", "cn-shanghai") == want
    assert aliyun_ota.topics("pk", "dn") == ("/ota/device/inform/pk/dn",
                                            "/ota/device/upgrade/pk/dn",
                                            "/ota/device/progress/pk/dn")


def test_report_messages():
    import aliyun_ota as a

    m = json.loads(a.inform_message(7, "P_1.0.0_2.0.0"))
    assert m == {"id": "7", "params": {"version": "P_1.0.0_2.0.0"}}, "no module for default"
    m = json.loads(a.inform_message(8, "1.2", "MCU"))
    assert m["params"] == {"version": "1.2", "module": "MCU"}
    m = json.loads(a.progress_message(9, 42))
    assert m == {"id": "9", "params": {"step": "42", "desc": ""}}
    m = json.loads(a.progress_message(10, -3, "x" * 300 + "中", "MCU"))
    assert m["params"]["step"] == "-3" and len(m["params"]["desc"]) == 128
    assert m["params"]["module"] == "MCU"
    m = json.loads(a.progress_message(11, -1, "中" * 200))
    assert m["params"]["desc"] == "中" * 128, "the limit counts characters, not bytes"


def _job(**data):
    base = {"url": "http://127.0.0.1:1/fw.bin", "size": 1000, "version": "2.0.0",
            "signMethod": "MD5", "md5": "0123456789abcdef0123456789ABCDEF",
            "sign": "0123456789abcdef0123456789abcdef"}
    for k, v in data.items():
        if v is None:
            base.pop(k, None)
        else:
            base[k] = v
    return json.dumps({"code": "1000", "data": base, "id": 1507707025, "message": "success"})


_DEPTH = 3000  # repr() of an array nested this deep exceeds the unix port's recursion limit


def _nested_job(field):
    # A job whose `field` is an array nested _DEPTH deep: written as text, as json.dumps()
    # would have to recurse that deep (json.loads does not: the ports' parser keeps a stack).
    return _job(**{field: "@"}).replace('"@"', "[" * _DEPTH + "]" * _DEPTH)


def test_parse_job_names_hostile_values_briefly():
    import aliyun_ota as a

    try:
        repr(json.loads("[" * _DEPTH + "]" * _DEPTH))
    except RuntimeError:
        pass
    else:
        raise AssertionError("the value is not deep enough to show the failure")
    for field, text in (("md5", "md5 must be 32 hex digits, not <array:1>"),
                        ("size", "size must be an integer >= 0, not <array:1>"),
                        ("url", "url must be a non-empty string, not <array:1>"),
                        ("signMethod", "unknown signMethod <array:1>"),
                        ("version", "version must be a non-empty string, not <array:1>")):
        try:
            a.parse_job(_nested_job(field))
        except a.BadJob as e:
            assert text in e.desc, (field, e.desc)
        else:
            raise AssertionError("accepted a nested " + field)
    try:
        a.parse_job(_job(md5="x" * 5000))
    except a.BadJob as e:
        assert e.desc.endswith("not 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'..."), e.desc
    else:
        raise AssertionError("accepted a 5000-character md5")


def test_parse_job():
    import aliyun_ota as a

    job = a.parse_job(_job(), capacity=4096)
    f = job.files[0]
    assert (job.version, job.module, job.method) == ("2.0.0", "default", "md5")
    assert (f.url, f.size, f.md5, f.sha256) == ("http://127.0.0.1:1/fw.bin", 1000,
                                                "0123456789abcdef0123456789abcdef", None)
    sha = "ab" * 32
    job = a.parse_job(_job(signMethod="SHA256", sign=sha, md5=None))
    assert job.method == "sha256" and job.files[0].sha256 == sha and job.files[0].md5 is None
    job = a.parse_job(_job(module="MCU"), module="MCU")
    assert job.module == "MCU"
    files = [{"fileUrl": "https://h/a.bin", "fileSize": 10, "fileMd5": "0" * 32,
              "fileName": "a.bin"},
             {"fileUrl": "https://h/b.bin", "fileSize": 20, "fileSign": "1" * 32,
              "fileName": "b.bin"}]
    job = a.parse_job(_job(url=None, size=None, md5=None, sign=None, files=files))
    assert [(f.name, f.size, f.md5) for f in job.files] == [("a.bin", 10, "0" * 32),
                                                           ("b.bin", 20, "1" * 32)]
    bad = [
        ("{not json", -1, "not JSON"),
        ("[1, 2]", -1, "not a JSON object"),
        ('{"data": 5}', -1, "data must be"),
        (_job(url=None), -1, "no url"),
        (_job(md5=None, sign=None), -1, "no md5"),
        (_job(size=None), -1, "no size"),
        (_job(size="1000"), -1, "size must be"),
        (_job(size=True), -1, "size must be"),
        (_job(size=-5), -1, "size must be"),
        (_job(url=17), -1, "url must be"),
        (_job(url="ftp://h/x"), -1, "unsupported download URL"),
        (_job(md5="xyz"), -1, "32 hex digits"),
        (_job(md5="0" * 32), -1, "differ"),
        (_job(version=3), -1, "version must be"),
        (_job(signMethod="CRC32"), -3, "unknown signMethod"),
        (_job(signMethod=None, sign=None), None, None),  # no signMethod: MD5, as Luat
        (_job(signMethod="SHA256", md5=None), -1, "64 hex digits"),
        (_job(size=5000), -4, "does not fit"),
        (_job(isDiff=1), None, None),  # a delta patch: parsed, applied by mpfota.delta
        (_job(isDiff="yes"), -1, "isDiff must be"),
        (_job(module="MCU"), -1, "job for module MCU"),
        (_job(files=[]), -1, "files is empty"),
        (_job(files=[5]), -1, "non-object"),
        (_job(digestsign=5), -3, "base64"),
        (b"\xff\xfe\x00", -1, "not JSON"),
    ]
    for payload, step, text in bad:
        try:
            a.parse_job(payload, capacity=4096)
        except a.BadJob as e:
            assert step is not None, (payload, e)
            assert e.step == step and text in e.desc, (payload, step, text, e.step, e.desc)
            if "module MCU" in text:
                assert e.module == "MCU", "a foreign module's failure is reported for it"
            continue
        assert step is None, "accepted %r" % (payload,)


def _platform(broker, pk, dn, got):
    # A second MQTT client playing the platform: collects inform and progress messages.
    from umqtt.simple import MQTTClient

    c = MQTTClient("platform", broker["host"], broker["port"])
    c.set_callback(lambda t, m: got.append((t.decode(), json.loads(m))))
    c.connect()
    c.subscribe(("/ota/device/inform/%s/%s" % (pk, dn)).encode(), 1)
    c.subscribe(("/ota/device/progress/%s/%s" % (pk, dn)).encode(), 1)
    return c


def _wait(c, got, n, ms=5000):
    import time

    t0 = time.ticks_ms()
    while len(got) < n and time.ticks_diff(time.ticks_ms(), t0) < ms:
        c.check_msg()
        time.sleep_ms(10)
    assert len(got) >= n, "expected %d messages, got %r" % (n, got)


def test_signed_login_and_version_report(vboard, mqtt_broker):
    vb.boot()
    import aliyun_ota

    d = mqtt_broker["device"]
    got = []
    plat = _platform(mqtt_broker, d["pk"], d["dn"], got)
    # The auth listener takes only the password CPython computed for this device.
    ota = aliyun_ota.AliyunOta(d["pk"], d["dn"], d["ds"], host=mqtt_broker["host"],
                               port=mqtt_broker["auth_port"])
    ota.connect()
    _wait(plat, got, 1)
    assert got[0] == ("/ota/device/inform/%s/%s" % (d["pk"], d["dn"]),
                      {"id": "1", "params": {"version": "1.0.0"}}) or \
        got[0][1]["params"]["version"].endswith("_1.0.0"), got
    ota.setVer("1.0.0-custom")  # a changed version is reported again at once
    _wait(plat, got, 2)
    assert got[1][1]["params"]["version"] == "1.0.0-custom"
    ota.disconnect()
    plat.disconnect()
    wrong = aliyun_ota.AliyunOta(d["pk"], d["dn"], d["ds"] + "x", host=mqtt_broker["host"],
                                 port=mqtt_broker["auth_port"])
    from umqtt.simple import MQTTException

    try:
        wrong.connect()
    except MQTTException as e:  # the CONNACK's return code 5: not authorised
        assert e.args == (5,), e.args
    else:
        raise AssertionError("a wrong DeviceSecret must not log in")


def test_tls_login(vboard, mqtt_broker):
    vb.boot()
    import aliyun_ota

    d = mqtt_broker["device"]
    got = []
    plat = _platform(mqtt_broker, d["pk"], d["dn"], got)
    ota = aliyun_ota.AliyunOta(d["pk"], d["dn"], d["ds"], host="127.0.0.1",
                               port=mqtt_broker["tls_port"], tls=True, ca=mqtt_broker["ca"],
                               version="tls-1")
    ota.connect()
    _wait(plat, got, 1)
    assert got[0][1]["params"]["version"] == "tls-1"
    ota.disconnect()
    plat.disconnect()


async def test_run_reconnects_and_reports(vboard, mqtt_broker):
    # run() against a refused port keeps retrying (bounded by duration_ms), then a good
    # broker: connected, version reported, bad job answered, still connected.
    vb.boot()
    import asyncio

    import aliyun_ota

    d = mqtt_broker["device"]
    bad = aliyun_ota.AliyunOta(d["pk"], d["dn"], d["ds"], host="127.0.0.1", port=1,
                               version="v")
    await bad.run(1500)
    assert bad.mqtt is None
    got = []
    plat = _platform(mqtt_broker, d["pk"], d["dn"], got)
    ota = aliyun_ota.AliyunOta(d["pk"], d["dn"], d["ds"], host="127.0.0.1",
                               port=mqtt_broker["port"], version="v1")
    task = asyncio.create_task(ota.run(8000))
    for _ in range(100):
        await asyncio.sleep_ms(20)
        if ota.mqtt is not None:
            break
    upgrade = ("/ota/device/upgrade/%s/%s" % (d["pk"], d["dn"])).encode()

    async def push(payload, n):
        # Publish an upgrade message; wait (the client's task running) for n reports in all.
        plat.publish(upgrade, payload)
        for _ in range(200):
            await asyncio.sleep_ms(20)
            plat.check_msg()
            if len(got) >= n:
                break

    await push(b"{oops", 2)
    assert got[0][1]["params"]["version"] == "v1"
    assert got[1][1]["params"]["step"] == "-1" and "JSON" in got[1][1]["params"]["desc"]
    # A value nested deeper than repr() can go: answered with what is wrong (such a message
    # used to get no answer at all, its report failing on the recursion limit).
    await push(_nested_job("md5").encode(), 3)
    assert got[2][1]["params"]["step"] == "-1"
    assert got[2][1]["params"]["desc"] == ("upgrade message: md5 must be 32 hex digits, not "
                                           "<array:1>")
    # Whatever else goes wrong with a message (here: the heap runs out while it is read) is
    # reported too, and the client goes on.
    parse_job = aliyun_ota.parse_job

    def out_of_memory(*args):
        raise MemoryError("memory allocation failed")

    aliyun_ota.parse_job = out_of_memory
    try:
        await push(_job().encode(), 4)
    finally:
        aliyun_ota.parse_job = parse_job
    assert got[3][1]["params"] == {"step": "-1", "desc": "internal error: MemoryError("
                                   "'memory allocation failed',)"}, got[3]
    await push(_job(version="v1").encode(), 5)  # a job for the running version: reported
    assert got[4][1]["params"]["version"] == "v1"
    assert ota.mqtt is not None, "a bad message must not drop the connection"
    ota.stop()
    await task
    plat.disconnect()


class _Recorder:
    # Stands in for the MQTT side: report() calls are recorded instead of published.
    def __init__(self, ota):
        self.steps = []
        ota.report = lambda step, desc="", module=None: self.steps.append((step, desc,
                                                                         module)) or True
        ota.mqtt = object()


def test_progress_is_rate_limited_and_capped():
    import time

    import aliyun_ota

    ota = aliyun_ota.AliyunOta("pk", "dn", "ds", progress_interval_ms=200, version="v")
    rec = _Recorder(ota)
    ota._progress(0, 1000)
    ota._progress(5, 1000)  # same percent (1): not again
    ota._progress(500, 1000)  # too soon
    assert [s[0] for s in rec.steps] == [1]
    time.sleep_ms(220)
    ota._progress(500, 1000)
    ota._progress(1000, 1000)  # too soon, and 100 waits for verification anyway
    time.sleep_ms(220)
    ota._progress(1000, 1000)
    ota._progress(1000, 1000)
    assert [s[0] for s in rec.steps] == [1, 50, 99]


async def test_file_target_single_and_multi(vboard, http_server):
    # setName: packages land in files (MCU firmware, Luat's setName), checked by MD5.
    vb.boot()
    import asyncio

    import aliyun_ota

    blobs = http_server["blobs"]
    base = http_server["base"]
    ota = aliyun_ota.AliyunOta("pk", "dn", "ds", progress_interval_ms=0, module="MCU",
                               version="m1")
    ota.setName("/mcu.bin")
    rec = _Recorder(ota)
    done = []
    ota.setCb(lambda ok, path: done.append((ok, path)))

    async def job(data):
        n = len(done)
        ota._handle(json.dumps({"data": data}))
        for _ in range(500):
            if len(done) > n or (rec.steps and rec.steps[-1][0] < 0 and not ota._job):
                break
            await asyncio.sleep_ms(10)
        return rec.steps[-1]

    small = {"url": base + "/blob/small", "size": blobs["small"]["size"],
             "md5": blobs["small"]["md5"], "version": "m2", "module": "MCU"}
    assert (await job(small))[0] == 100
    assert done[-1] == (True, "/mcu.bin")
    import os

    assert os.stat("/mcu.bin")[6] == blobs["small"]["size"]
    steps = [s[0] for s in rec.steps]
    assert steps[0] >= 1 and steps[-1] == 100 and steps == sorted(steps), steps
    bad = dict(small, md5="0" * 32)
    step = await job(bad)
    assert step[0] == -3 and "md5" in step[1], step
    assert done[-1] == (False, "/mcu.bin")
    assert os.stat("/mcu.bin")[6] == blobs["small"]["size"], "the old file stays"
    files = [{"fileUrl": base + "/blob/" + n, "fileSize": blobs[n]["size"],
              "fileMd5": blobs[n]["md5"], "fileName": n + ".bin"} for n in ("small", "medium")]
    assert (await job({"files": files, "version": "m3", "module": "MCU"}))[0] == 100
    assert done[-1] == (True, ["/small.bin", "/medium.bin"])
    assert os.stat("/medium.bin")[6] == blobs["medium"]["size"]
    evil = [dict(files[0], fileName="../x.bin"), files[1]]
    step = await job({"files": evil, "version": "m4", "module": "MCU"})
    assert step[0] == -1 and "plain fileName" in step[1], step
    huge = dict(small, size=10 * 1024 * 1024)
    step = await job(huge)
    assert step[0] == -4, step
    gone = dict(small, url=http_server["refused"] + "/x")
    step = await job(gone)
    assert step[0] == -2, step
    assert "/mcu.bin.part" not in ["/" + n for n in os.listdir("/")]
