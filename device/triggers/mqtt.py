# An MQTT downlink that starts a FOTA (seed 001 §7.4): the LuatOS mqtt demo's "recv" branch
#
#   elseif event == "recv" then
#       log.info("mqtt", "downlink", "topic", data, "payload", payload)
#       if payload == "update" then libfota2.request(fota_cb, ota_opts) end
#       sys.publish("mqtt_payload", data, payload)
#
# on umqtt.simple (deps/umqtt/simple.py):
#
#   from triggers import mqtt
#   mqtt.start("broker.example", 1883, fota_cb, ota_opts)
#
# Topics follow the LuatOS mqtt demos: the device subscribes to /luatos/sub/<device id> and
# answers on /luatos/pub/<device id> (device id: IMEI, else MAC, else unique id) with the same
# JSON events as triggers.tcp: {"event": "accepted"}, {"event": "busy"} (a FOTA is running:
# refused), {"event": "result", "code": N}. Any other payload is only logged and published.
# umqtt.simple is blocking: connect() and the reading of a message that has started to arrive
# block the loop (briefly, on a working network); waiting for messages does not (check_msg()
# every POLL_MS). A broken connection is re-made RECONNECT_MS later.
import json

KEYWORD = b"update"
POLL_MS = 100
RECONNECT_MS = 5000
KEEPALIVE_S = 60


from triggers import Connection


class Client(Connection):
    tag = "mqtt"

    def __init__(self, server, port=1883, cb=None, opts=None, topic=None, reply_topic=None,
                 client_id=None, user=None, password=None, keepalive=KEEPALIVE_S,
                 poll_ms=POLL_MS, reconnect_ms=RECONNECT_MS, keyword=KEYWORD, start=None):
        import triggers

        dev = triggers.device_id()
        self.server = server
        self.port = int(port)
        self.cb = cb
        self.opts = opts
        self.topic = topic or "/luatos/sub/" + dev
        self.reply_topic = ("/luatos/pub/" + dev) if reply_topic is None else reply_topic
        self.client_id = client_id or dev
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.poll_ms = poll_ms
        self.reconnect_ms = reconnect_ms
        self.keyword = keyword if isinstance(keyword, bytes) else keyword.encode()
        self.start_fn = start
        self.messages = 0

    def send(self, obj):
        # Publish one JSON event on reply_topic; False when offline or replies are off.
        m = self.link
        if m is None or not self.reply_topic:
            return False
        try:
            m.publish(self.reply_topic, json.dumps(obj))
        except OSError as exc:
            import lsys

            lsys.log.warn("mqtt", "reply lost:", exc)
            return False
        return True

    def _result(self, ret):
        self.send({"event": "result", "code": ret})
        if self.cb is not None:
            self.cb(ret)

    def on_message(self, topic, payload):
        import lsys

        import triggers

        self.messages += 1
        lsys.log.info("mqtt", "downlink", "topic", topic, "payload", payload)
        if payload == self.keyword:
            try:
                started = triggers.request(self._result, self.opts, self.start_fn)
            except Exception as exc:  # noqa: BLE001 - reported, not fatal to the connection
                lsys.log.error("mqtt", "request failed:", exc)
                self.send({"event": "error", "error": "request", "detail": str(exc)})
            else:
                self.send({"event": "accepted"} if started else {"event": "busy"})
        lsys.publish("mqtt_payload", topic, payload)

    def _connect(self):
        from umqtt.simple import MQTTClient

        m = MQTTClient(self.client_id, self.server, self.port, self.user, self.password,
                       self.keepalive)
        m.set_callback(self.on_message)
        try:
            m.connect()
            m.subscribe(self.topic)
        except Exception:
            if m.sock is not None:
                m.sock.close()
            raise
        return m

    async def _serve(self, m):
        import time

        import lsys

        ping_ms = self.keepalive * 500 if self.keepalive else 0
        last = time.ticks_ms()
        while True:
            m.check_msg()
            if ping_ms and time.ticks_diff(time.ticks_ms(), last) >= ping_ms:
                m.ping()
                last = time.ticks_ms()
            await lsys.wait(self.poll_ms)

    async def _open(self):
        import lsys

        try:
            m = self._connect()
        # OSError, or umqtt's MQTTException (the broker refused)
        except Exception as exc:  # noqa: BLE001
            lsys.log.warn("mqtt", "connect", self.server, self.port, "failed:", repr(exc))
            return None
        lsys.log.info("mqtt", "sub", self.topic)
        lsys.log.info("mqtt", "pub", self.reply_topic)
        return m

    def _close(self, m, bye):
        try:
            if bye:
                m.disconnect()
            else:
                m.sock.close()
        except OSError:
            pass


def start(server, port=1883, cb=None, opts=None, **kw):
    # Connect (after the network is up), subscribe and watch for the keyword; returns the Client.
    # Keywords: topic, reply_topic ("" for none), client_id, user, password, keepalive,
    # poll_ms, reconnect_ms, keyword, start (replaces libfota2.request).
    return Client(server, port, cb, opts, **kw).start()
