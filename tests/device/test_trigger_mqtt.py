# The MQTT trigger (device/triggers/mqtt.py) on umqtt.simple against a real mosquitto
# (tests/fixtures_mqtt.py): the payload "update" on the device's topic starts libfota2.request();
# the device answers on its reply topic. A second client in the same process plays the server.
import vb

TIMEOUT = 60


async def _until(pred, client=None, ms=15000):
    # Poll (and let the other client read its messages) until pred() is true.
    import asyncio

    for _ in range(ms // 20):
        if client is not None:
            client.check_msg()
        if pred():
            return
        await asyncio.sleep_ms(20)
    raise AssertionError("timed out")


def _server(broker, reply_topic, got):
    from umqtt.simple import MQTTClient

    s = MQTTClient("fota-server", broker["host"], broker["port"])
    s.set_callback(lambda topic, msg: got.append((topic, msg)))
    s.connect()
    s.subscribe(reply_topic)
    return s


def _events(got):
    import json

    return [json.loads(m) for _, m in got]


async def test_update_payload_starts_the_update(vboard, mqtt_broker, update_server):
    vb.boot()
    import board
    import lsys
    import vpartition
    from triggers import mqtt

    img = update_server["images"]["core-2.0.0"]
    results = []
    payloads = []
    lsys.subscribe("mqtt_payload", lambda topic, payload: payloads.append(payload))
    c = mqtt.start(mqtt_broker["host"], mqtt_broker["port"], lambda ret: results.append(ret),
                   {"url": "###" + update_server["base"] + img["path"]}, poll_ms=20)
    # The LuatOS demo topics, named after the board's IMEI.
    assert c.topic == "/luatos/sub/" + board.imei()
    assert c.reply_topic == "/luatos/pub/" + board.imei()
    got = []
    s = _server(mqtt_broker, c.reply_topic, got)
    await _until(lambda: c.connections == 1)
    # Other payloads are logged and published, nothing starts (the match is exact).
    for p in (b"hello", b"UPDATE", b"update ", b""):
        s.publish(c.topic, p)
    await _until(lambda: len(payloads) == 4)
    assert got == [] and results == [] and vpartition.boot_record() is None
    s.publish(c.topic, b"update")
    await _until(lambda: len(got) >= 2, s)
    assert _events(got) == [{"event": "accepted"}, {"event": "result", "code": 0}]
    assert results == [0]
    assert payloads[-1] == b"update"
    assert vpartition.boot_record() == (1, "new")  # downloaded, verified, switched
    s.disconnect()
    c.stop()


async def test_update_while_one_runs_is_refused(vboard, mqtt_broker, http_server):
    vb.boot()
    from triggers import mqtt

    results = []
    # 2 s of body (not an image: it ends with result 4); meanwhile a second "update" arrives.
    c = mqtt.start(mqtt_broker["host"], mqtt_broker["port"], lambda ret: results.append(ret),
                   {"url": "###" + http_server["base"] + "/trickle?n=2000&ms=1"}, poll_ms=20,
                   reply_topic="/test/replies")
    got = []
    s = _server(mqtt_broker, "/test/replies", got)
    await _until(lambda: c.connections == 1)
    s.publish(c.topic, b"update")
    await _until(lambda: len(got) >= 1, s)
    s.publish(c.topic, b"update")
    await _until(lambda: len(got) >= 2, s)
    assert _events(got) == [{"event": "accepted"}, {"event": "busy"}]
    await _until(lambda: len(got) >= 3, s)
    assert _events(got)[2] == {"event": "result", "code": 4}
    assert results == [4]
    # The guard is free again.
    s.publish(c.topic, b"update")
    await _until(lambda: len(got) >= 4, s)
    assert _events(got)[3] == {"event": "accepted"}
    s.disconnect()
    c.stop()


async def test_broker_down_then_up_reconnects(vboard, mqtt_broker):
    # No broker at first (a refused port): the trigger logs, waits and tries again.
    vb.boot()
    import asyncio

    from triggers import mqtt

    c = mqtt.start("127.0.0.1", 1, reconnect_ms=100, poll_ms=20)
    await asyncio.sleep_ms(500)
    assert c.connections == 0
    c.server, c.port = mqtt_broker["host"], mqtt_broker["port"]
    await _until(lambda: c.connections == 1)
    assert c.link is not None
    c.stop()
