# Aliyun IoT OTA over MQTT (the platform's legacy /ota/device/... topics), on umqtt.simple and
# the mpfota engine. The MicroPython counterpart of Luat's aLiYunOta.lua: see docs/aliyun.md.
#
#     import asyncio, aliyun_ota
#     ota = aliyun_ota.setup("a1pk", "dev1", "secret", region="cn-shanghai", tls=True, ca=ROOT_CA)
#     asyncio.run(ota.run())       # connect, subscribe, report the version, apply pushed jobs
#
# The pure parts (credentials, topics, message parsing, report messages) import nothing
# MicroPython-specific, so they also run, and are fuzzed, under CPython.
import json

try:
    from micropython import const
except ImportError:  # CPython (host tests)

    def const(x):
        return x


from mpfota import hmac, log
from mpfota.brief import brief

# Progress steps of /ota/device/progress (sent as strings): 1..100 while running, and:
STEP_FAILED = const(-1)  # upgrade failed (bad or refused job)
STEP_DOWNLOAD_FAILED = const(-2)
STEP_VERIFY_FAILED = const(-3)  # digest or signature
STEP_FLASH_FAILED = const(-4)  # writing (or fitting) the update into flash

DESC_MAX = const(128)  # characters of a progress desc
KEEPALIVE_MIN = const(30)  # the platform refuses a keepalive outside 30..1200 s
KEEPALIVE_MAX = const(1200)
ID_MAX = 4294967295  # message ids are decimal strings in 0..4294967295
# The fixed timestamp Aliyun's Link SDK signs with (2050-01-01): devices often have no clock.
LINKSDK_TIMESTAMP = "2524608000000"
DEFAULT_MODULE = "default"
_INBOX_MAX = const(4)  # upgrade messages waiting to be handled; more are dropped (and logged)
_SIGN_METHODS = ("md5", "sha256")
_HEX = "0123456789abcdefABCDEF"


# ------------------------------------------------------------------ credentials and topics


def mqtt_host(product_key, region="cn-shanghai"):
    # The public instance's endpoint; Enterprise instances have their own (pass host=).
    return "%s.iot-as-mqtt.%s.aliyuncs.com" % (product_key, region)


def credentials(product_key, device_name, device_secret, client_id=None, timestamp=None,
                tls=False):
    """(mqtt client id, username, password) of a device-secret ("one device, one secret") login.

    client id: "<clientId>|securemode=<2 TLS, 3 TCP>,signmethod=hmacsha256,timestamp=<ts>|"
    username:  "<deviceName>&<productKey>"
    password:  lowercase hex HMAC-SHA256, keyed with the DeviceSecret, of
               "clientId<clientId>deviceName<dn>productKey<pk>timestamp<ts>"
               (the parameters in alphabetical order, each name followed by its value).
    clientId defaults to "<pk>.<dn>" and timestamp to the Link SDK's fixed value."""
    cid = client_id if client_id is not None else "%s.%s" % (product_key, device_name)
    ts = str(timestamp) if timestamp is not None else LINKSDK_TIMESTAMP
    mqtt_id = "%s|securemode=%s,signmethod=hmacsha256,timestamp=%s|" % (
        cid, "2" if tls else "3", ts)
    username = "%s&%s" % (device_name, product_key)
    content = "clientId%sdeviceName%sproductKey%stimestamp%s" % (cid, device_name, product_key,
                                                                   ts)
    return mqtt_id, username, hmac.sha256_hex(device_secret, content)


def topics(product_key, device_name):
    # (inform, upgrade, progress)
    tail = "/%s/%s" % (product_key, device_name)
    return ("/ota/device/inform" + tail, "/ota/device/upgrade" + tail,
            "/ota/device/progress" + tail)


# ------------------------------------------------------------------ report messages


def _params_message(msg_id, params, module):
    if module is not None and module != DEFAULT_MODULE:
        params["module"] = module
    return json.dumps({"id": str(msg_id), "params": params})


def inform_message(msg_id, version, module=None):
    # /ota/device/inform: the module is left out for the default module.
    return _params_message(msg_id, {"version": version}, module)


def progress_message(msg_id, step, desc="", module=None):
    # /ota/device/progress: step and desc are strings; desc is cut to DESC_MAX characters.
    desc = "" if desc is None else str(desc)
    return _params_message(msg_id, {"step": str(step), "desc": desc[:DESC_MAX]}, module)


# ------------------------------------------------------------------ upgrade messages


class BadJob(Exception):
    # A job refused before anything is written: step and desc go to the progress topic.
    def __init__(self, step, desc, module=None):
        super().__init__(step, desc)
        self.step = step
        self.desc = desc
        self.module = module

    def __str__(self):
        return "%d %s" % (self.step, self.desc)


class FileSpec:
    # One file of a job. `digest` is the hex digest the signature covers (md5 or sha256).
    def __init__(self, url, size, md5, sha256, name=None, digestsign=None):
        self.url = url
        self.size = size
        self.md5 = md5
        self.sha256 = sha256
        self.name = name
        self.digestsign = digestsign

    @property
    def digest(self):
        return self.sha256 if self.sha256 is not None else self.md5


class Job:
    def __init__(self, version, module, method, files, ext, msg_id, diff=False):
        self.version = version
        self.diff = diff  # isDiff=1: the file is an mpfota delta patch (docs/delta.md)
        self.module = module
        self.method = method  # "md5" or "sha256"
        self.files = files  # list of FileSpec (one for a single-file package)
        self.ext = ext  # extData (dict) or None
        self.id = msg_id
        self.paths = None  # the files' paths, for a file target (setName)

    def same_as(self, other):
        return (other is not None and self.version == other.version
                and [f.url for f in self.files] == [f.url for f in other.files])


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _field(d, key, kind, required, what=None):
    # d[key] checked against a type: "str" (non-empty), "int" (>= 0), "dict", "list".
    v = d.get(key)
    name = what or key
    if v is None:
        if required:
            raise BadJob(STEP_FAILED, "upgrade message has no %s" % name)
        return None
    ok = ((kind == "str" and isinstance(v, str) and v)
          or (kind == "int" and _is_int(v) and v >= 0)
          or (kind == "dict" and isinstance(v, dict))
          or (kind == "list" and isinstance(v, list)))
    if not ok:
        raise BadJob(STEP_FAILED, "upgrade message: %s must be %s, not %s"
                     % (name, {"str": "a non-empty string", "int": "an integer >= 0",
                               "dict": "an object", "list": "an array"}[kind],
                        brief(v)))
    return v


def _short(text, n=40):
    return text if len(text) <= n else text[:n] + "..."


def _hex_digest(v, n, name):
    if v is None:
        return None
    if not isinstance(v, str) or len(v) != n or any(c not in _HEX for c in v):
        raise BadJob(STEP_FAILED, "upgrade message: %s must be %d hex digits, not %s"
                     % (name, n, brief(v)))
    return v.lower()


def _digestsign(v):
    if v is None:
        return None
    import binascii

    if not isinstance(v, str):
        raise BadJob(STEP_VERIFY_FAILED, "digestsign must be a base64 string")
    try:
        return binascii.a2b_base64(v)
    except (ValueError, TypeError):
        raise BadJob(STEP_VERIFY_FAILED, "digestsign is not valid base64")


def _file(d, method, keys):
    # keys: (url, size, md5, sign, name) field names of a single job or of a files[] entry.
    url = _field(d, keys[0], "str", True)
    if not (url.startswith("http://") or url.startswith("https://")):
        raise BadJob(STEP_FAILED, "unsupported download URL: %s" % _short(url))
    size = _field(d, keys[1], "int", True)
    if size == 0:
        raise BadJob(STEP_FAILED, "upgrade message: %s is 0" % keys[1])
    md5 = _hex_digest(d.get(keys[2]), 32, keys[2])
    if method == "md5":
        sign = _hex_digest(d.get(keys[3]), 32, keys[3])
        if md5 is None:
            md5 = sign
        if md5 is None:
            raise BadJob(STEP_FAILED, "upgrade message has no %s" % keys[2])
        if sign is not None and sign != md5:
            raise BadJob(STEP_FAILED, "upgrade message: %s and %s differ" % (keys[2], keys[3]))
        sha256 = None
    else:
        sha256 = _hex_digest(d.get(keys[3]), 64, keys[3])
        if sha256 is None:
            raise BadJob(STEP_FAILED, "upgrade message has no %s (SHA256)" % keys[3])
    name = _field(d, keys[4], "str", False) if keys[4] else None
    return FileSpec(url, size, md5, sha256, name, _digestsign(d.get("digestsign")))


def parse_job(payload, module=DEFAULT_MODULE, capacity=None):
    """The Job of an /ota/device/upgrade payload, or BadJob(step, desc, module).

    `module`: the module this client updates; `capacity`: the largest file it can take."""
    try:
        msg = json.loads(payload)
    except (ValueError, TypeError, UnicodeError, RuntimeError) as e:
        # RuntimeError: CPython's json nests by recursion (the unix and ESP32 ports' does not)
        raise BadJob(STEP_FAILED, "upgrade message is not JSON (%s)" % e)
    if not isinstance(msg, dict):
        raise BadJob(STEP_FAILED, "upgrade message is not a JSON object")
    data = _field(msg, "data", "dict", True)
    job_module = _field(data, "module", "str", False) or DEFAULT_MODULE
    if job_module != module:
        raise BadJob(STEP_FAILED, "job for module %s; this client updates %s"
                     % (_short(job_module), module), job_module)
    diff = data.get("isDiff")
    if diff is not None and not (_is_int(diff) or isinstance(diff, bool)):
        raise BadJob(STEP_FAILED, "upgrade message: isDiff must be 0 or 1", job_module)
    version = _field(data, "version", "str", False)
    ext = _field(data, "extData", "dict", False)
    method = data.get("signMethod")
    if method is None:
        method = "md5"  # Luat: MD5 is the only signature method
    if not isinstance(method, str) or method.lower() not in _SIGN_METHODS:
        raise BadJob(STEP_VERIFY_FAILED, "unknown signMethod %s (MD5 or SHA256)"
                     % brief(method), job_module)
    method = method.lower()
    files = data.get("files")
    if files is None:
        specs = [_file(data, method, ("url", "size", "md5", "sign", None))]
    else:
        files = _field(data, "files", "list", True)
        if not files:
            raise BadJob(STEP_FAILED, "upgrade message: files is empty", job_module)
        specs = []
        for entry in files:
            if not isinstance(entry, dict):
                raise BadJob(STEP_FAILED, "upgrade message: files[] holds a non-object",
                             job_module)
            specs.append(_file(entry, method,
                               ("fileUrl", "fileSize", "fileMd5", "fileSign", "fileName")))
    if capacity is not None:
        for f in specs:
            if f.size > capacity:
                raise BadJob(STEP_FLASH_FAILED, "update of %d bytes does not fit (%d)"
                             % (f.size, capacity), job_module)
    if diff and len(specs) > 1:
        raise BadJob(STEP_FAILED, "a delta job (isDiff=1) carries one patch", job_module)
    msg_id = msg.get("id")
    return Job(version, job_module, method, specs, ext, msg_id, bool(diff))


def check_signature(spec, public_key):
    # Secure upgrade as AliOS Things uOTA: `digestsign` is RSA PKCS#1 v1.5 with SHA-256 over
    # the binary digest (MD5 or SHA-256, per signMethod) of the file. Raises BadJob(-3).
    import binascii
    from mpfota import rsa

    if spec.digestsign is None:
        raise BadJob(STEP_VERIFY_FAILED, "unsigned job refused: a public key is provisioned")
    try:
        ok = rsa.verify(public_key, binascii.unhexlify(spec.digest), spec.digestsign)
    except ValueError as e:
        raise BadJob(STEP_VERIFY_FAILED, "digestsign cannot be checked: %s" % e)
    if not ok:
        raise BadJob(STEP_VERIFY_FAILED, "digestsign does not verify with the provisioned key")


def default_version():
    # As aLiYunOta: PROJECT_VERSION_<core>, from lsys.PROJECT / lsys.VERSION and the running
    # core; only the core version when the script has not set PROJECT and VERSION.
    import board

    core = board.core_version()
    try:
        import lsys

        project = getattr(lsys, "PROJECT", None)
        version = getattr(lsys, "VERSION", None)
    except ImportError:
        project = version = None
    if project and version:
        return "%s_%s_%s" % (project, version, core)
    return core


def _der(cert):
    # A PEM certificate (str or bytes) as DER bytes; DER passes through.
    import binascii

    if isinstance(cert, str):
        cert = cert.encode()
    if not cert.lstrip().startswith(b"-----BEGIN"):
        return bytes(cert)
    body = cert.split(b"-----")[2]
    return binascii.a2b_base64(body.replace(b"\n", b"").replace(b"\r", b""))


# ------------------------------------------------------------------ the client


class AliyunOta:
    """One device on the platform. Luat aLiYunOta names: setVer, setName, setCb, isDownloading,
    upgrade(payload), connectCb(result); verRpt() reports the version."""

    def __init__(self, product_key, device_name, device_secret, region="cn-shanghai",
                 host=None, port=None, tls=False, ca=None, ssl_params=None, client_id=None,
                 timestamp=None, keepalive=300, module=DEFAULT_MODULE, version=None,
                 public_key=None, progress_interval_ms=5000, auto_confirm=True,
                 auto_reset=True, poll_ms=50):
        for name, v in (("product_key", product_key), ("device_name", device_name),
                        ("device_secret", device_secret)):
            if not isinstance(v, str) or not v:
                raise ValueError("%s must be a non-empty string" % name)
        if not KEEPALIVE_MIN <= keepalive <= KEEPALIVE_MAX:
            raise ValueError("keepalive must be %d..%d s" % (KEEPALIVE_MIN, KEEPALIVE_MAX))
        self.pk = product_key
        self.dn = device_name
        self._secret = device_secret
        self.host = host or mqtt_host(product_key, region)
        self.tls = tls
        self.port = port or (8883 if tls else 1883)
        self.ssl_params = dict(ssl_params or {})
        if tls and ca is not None:
            import ssl

            self.ssl_params.setdefault("cadata", _der(ca))
            self.ssl_params.setdefault("cert_reqs", ssl.CERT_REQUIRED)
        if tls:
            self.ssl_params.setdefault("server_hostname", self.host)
        self.client_id = client_id
        self.timestamp = timestamp
        self.keepalive = keepalive
        self.module = module or DEFAULT_MODULE
        self._version = version
        self.public_key = None
        if public_key is not None:
            from mpfota import rsa

            self.public_key = rsa.load_public_key(public_key)
        self.progress_interval_ms = progress_interval_ms
        self.auto_confirm = auto_confirm
        self.auto_reset = auto_reset
        self.poll_ms = poll_ms
        self.inform_topic, self.upgrade_topic, self.progress_topic = topics(product_key,
                                                                              device_name)
        self.mqtt = None
        self.receive = None  # receive(topic, msg) for messages on other topics
        self.last_result = None  # (step, desc) of the last job
        self._cb = None
        self._name = None
        self._reported = None  # the version the platform has acknowledged
        self._id = 0
        self._inbox = []
        self._job = None
        self._stop = False
        self._last_ping = 0
        self._last_progress = None  # (ticks, percent)

    # ---- Luat aLiYunOta API

    def setVer(self, version):
        # The version reported to the platform (default: default_version()). Reports again
        # when the new value differs from what was reported.
        self._version = version
        if self.mqtt is not None and self._reported is not None and self._reported != version:
            try:
                self.verRpt()
            except OSError as e:  # reported again after the reconnect
                self._drop(e)

    def setName(self, name):
        # Luat: store the package as a file (e.g. MCU firmware) instead of the core slot.
        # Several files of one job go next to it, under their fileName. None: the core slot.
        if name is not None and (not isinstance(name, str) or not name or name.endswith("/")):
            raise ValueError("setName needs a file path")
        self._name = name

    def setCb(self, cb):
        # cb(result, path): called after a job instead of resetting the board. result: True
        # when the update is written and verified (and, for the core slot, switched); path:
        # None for the core slot, the file (a list of files for a multi-file job) otherwise.
        self._cb = cb

    def isDownloading(self):
        return self._job is not None

    def upgrade(self, payload):
        # Hand over an /ota/device/upgrade payload (aLiYun calls this); handled by run().
        if len(self._inbox) >= _INBOX_MAX:
            log.warn("aliyun", "upgrade message dropped: %d already waiting" % _INBOX_MAX)
            return
        self._inbox.append(payload)

    def connectCb(self, result, product_key=None, device_name=None):
        # After every MQTT connect: settle a new image's confirmation, then report the version.
        if not result:
            return
        if self.auto_confirm:
            from mpfota import confirm

            if confirm.check_boot() == "pending":
                confirm.confirm()
        if self._reported is None or self._reported != self.version():
            self.verRpt()

    def version(self):
        return self._version if self._version is not None else default_version()

    def verRpt(self):
        # Report the version on /ota/device/inform (QoS 1: returns once the broker has it).
        v = self.version()
        self._publish(self.inform_topic, inform_message(self._next_id(), v, self.module), 1)
        self._reported = v
        log.info("aliyun", "version reported:", v)

    # ---- MQTT

    def connect(self):
        # Blocking: TCP (TLS), CONNECT with the signed credentials, subscribe, connectCb.
        from umqtt.simple import MQTTClient

        if self.tls:
            import sys

            try:
                import ussl  # noqa: F401
            except ImportError:  # umqtt.simple 1.3 imports ussl, gone from recent MicroPython
                import ssl

                sys.modules["ussl"] = ssl
        mqtt_id, user, password = credentials(self.pk, self.dn, self._secret, self.client_id,
                                              self.timestamp, self.tls)
        c = MQTTClient(mqtt_id, self.host, self.port, user=user, password=password,
                       keepalive=self.keepalive, ssl=self.tls, ssl_params=self.ssl_params)
        c.set_callback(self._on_message)
        try:
            c.connect()
        except Exception:
            if c.sock is not None:
                c.sock.close()
            raise
        self.mqtt = c
        log.info("aliyun", "connected to %s:%d as %s" % (self.host, self.port, user))
        try:
            c.subscribe(self.upgrade_topic.encode(), 1)
            self._last_ping = _ticks()
            self.connectCb(True, self.pk, self.dn)
        except Exception:
            self.mqtt = None
            c.sock.close()
            raise

    def disconnect(self):
        c, self.mqtt = self.mqtt, None
        if c is not None:
            try:
                c.disconnect()
            except OSError:
                c.sock.close()

    def _drop(self, why):
        c, self.mqtt = self.mqtt, None
        if c is not None:
            log.warn("aliyun", "connection lost:", why)
            try:
                c.sock.close()
            except OSError:
                pass
            self.connectCb(False, self.pk, self.dn)

    def _on_message(self, topic, msg):
        if topic == self.upgrade_topic.encode():
            self.upgrade(msg)
        elif self.receive is not None:
            self.receive(topic, msg)

    def _publish(self, topic, text, qos=0):
        if self.mqtt is None:
            raise OSError("not connected")
        self.mqtt.publish(topic.encode(), text.encode(), False, qos)

    def _next_id(self):
        self._id = self._id + 1 if self._id < ID_MAX else 1
        return self._id

    def report(self, step, desc="", module=None):
        # Publish a progress step (only while connected, as Luat). Returns True when sent.
        if self.mqtt is None:
            return False
        try:
            self._publish(self.progress_topic,
                          progress_message(self._next_id(), step, desc, module or self.module))
            return True
        except OSError as e:
            self._drop(e)
            return False

    def stop(self):
        self._stop = True

    async def run(self, duration_ms=None):
        """Stay connected and apply jobs until stop() (or `duration_ms`). Reconnects with a
        growing pause (1 s .. 60 s) after a failure; jobs keep running meanwhile."""
        import asyncio

        start = _ticks()
        pause = 1000
        self._stop = False
        while not self._stop:
            if duration_ms is not None and _since(start) >= duration_ms:
                break
            if self.mqtt is None:
                try:
                    self.connect()
                    pause = 1000
                except Exception as e:  # OSError, MQTTException, a TLS failure ...
                    log.warn("aliyun", "connect to %s:%d failed: %r; retry in %d ms"
                             % (self.host, self.port, e, pause))
                    self.mqtt = None
                    await asyncio.sleep_ms(pause)
                    pause = min(pause * 2, 60000)
                    continue
            try:
                self.mqtt.check_msg()
                if _since(self._last_ping) >= self.keepalive * 500:
                    self.mqtt.ping()
                    self._last_ping = _ticks()
            except Exception as e:  # OSError, or umqtt's asserts on a broken stream
                self._drop(repr(e))
                continue
            while self._inbox:
                self._handle(self._inbox.pop(0))
            await asyncio.sleep_ms(self.poll_ms)
        self.disconnect()

    # ---- jobs

    def _capacity(self):
        if self._name is not None:
            import os

            st = os.statvfs(_dirname(self._name))
            return st[0] * st[4]  # free bytes of the filesystem
        import board

        _, spare = board.ota_slots()
        return spare.ioctl(4, 0) * spare.ioctl(5, 0)

    def _paths(self, job):
        # Where a file job's files go: the setName path, or beside it under their fileName.
        if len(job.files) == 1:
            return [self._name]
        paths = []
        for f in job.files:
            n = f.name
            if not n or "/" in n or n in (".", ".."):
                raise BadJob(STEP_FAILED, "file %s needs a plain fileName"
                             % _short(f.url), job.module)
            d = _dirname(self._name)
            paths.append((d if d.endswith("/") else d + "/") + n)
        return paths

    def _handle(self, payload):
        try:
            job = parse_job(payload, self.module, self._capacity())
            if self._job is not None:
                if job.same_as(self._job):
                    log.info("aliyun", "job for", job.version, "pushed again: already running")
                    return
                raise BadJob(STEP_FAILED, "busy: the update to %s is still running"
                             % self._job.version, job.module)
            if job.diff and self._name is not None:
                raise BadJob(STEP_FAILED, "a delta job (isDiff=1) updates the core slot, not "
                             "files", job.module)
            if self._name is None and len(job.files) > 1:
                raise BadJob(STEP_FAILED, "%d files in one package; the core slot takes one"
                             % len(job.files), job.module)
            if self._name is not None:
                job.paths = self._paths(job)
                total = sum(f.size for f in job.files)
                if total > self._capacity():
                    raise BadJob(STEP_FLASH_FAILED, "%d bytes do not fit in the filesystem"
                                 % total, job.module)
            if self.public_key is not None:
                if len(job.files) > 1:
                    raise BadJob(STEP_VERIFY_FAILED, "signed multi-file jobs are not "
                                 "supported", job.module)
                check_signature(job.files[0], self.public_key)
            if job.version is not None and job.version == self.version():
                # Nothing to do: reporting the version again is what the platform judges by.
                log.info("aliyun", "job for", job.version, "which is already running")
                self.verRpt()
                return
            from mpfota import confirm

            if self._name is None and confirm.status() == "pending":
                raise BadJob(STEP_FAILED, "the running image is not confirmed yet",
                             job.module)
        except BadJob as e:
            log.error("aliyun", "job refused:", e)
            self.last_result = (e.step, e.desc)
            self.report(e.step, e.desc, e.module)
            return
        except Exception as e:  # a bug or a MemoryError must not end run(): report it
            log.error("aliyun", "upgrade message failed:", repr(e))
            self.last_result = (STEP_FAILED, "internal error: %r" % e)
            self.report(*self.last_result)
            return
        import asyncio

        self._job = job
        asyncio.create_task(self._apply(job))

    async def _apply(self, job):
        step, desc = STEP_FAILED, "internal error"
        try:
            if job.diff:
                step, desc = await self._download_delta(job)
            elif self._name is None:
                step, desc = await self._download(job)
            else:
                step, desc = await self._download_files(job)
        except Exception as e:  # a bug must not end the client: report it
            log.error("aliyun", "job failed:", repr(e))
            desc = "internal error: %r" % e
        finally:
            self._job = None
        self.last_result = (step, desc)
        if step is None:
            # The door found the job's image already running (nothing written): as for a job
            # naming the running version, reporting the version is what the platform judges by.
            log.info("aliyun", "job for", job.version, "is the image already running")
            self.verRpt()
            return
        if step < 0:
            log.error("aliyun", "upgrade to", job.version, "failed:", step, desc)
        self.report(step, desc)
        where = None
        if self._name is not None:
            where = job.paths[0] if len(job.paths) == 1 else job.paths
        if step < 0:
            if self._cb:
                self._cb(False, where)
            return
        log.info("aliyun", "upgrade to", job.version, "written and verified")
        if self._cb:
            self._cb(True, where)
        elif self.auto_reset and where is None:
            import asyncio
            import board

            await asyncio.sleep_ms(200)
            self.disconnect()
            board.reset()

    async def _download(self, job):
        from mpfota import download, http
        from mpfota.errors import ALREADY_RUNNING, FotaError

        spec = job.files[0]
        got = [0]
        self._last_progress = None
        log.info("aliyun", "upgrade to", job.version, "from", spec.url)

        def progress(done, total):
            got[0] = done
            self._progress(done, spec.size)

        try:
            res = await download.fetch(spec.url, md5=spec.md5, sha256=spec.sha256,
                                       length=spec.size, progress=progress, version=job.version)
        except http.HTTPError as e:
            return STEP_DOWNLOAD_FAILED, "download failed: %s" % e
        except FotaError as e:
            if e.code == ALREADY_RUNNING:
                return None, e.msg
            if got[0] >= spec.size:
                return STEP_VERIFY_FAILED, "verification failed: %s" % e.msg
            return STEP_DOWNLOAD_FAILED, "download failed: %s" % e.msg
        except OSError as e:
            return STEP_FLASH_FAILED, "flash write failed: %r" % e
        if res.status != 200:
            return STEP_DOWNLOAD_FAILED, "download failed: HTTP %d" % res.status
        return 100, ""

    async def _download_delta(self, job):
        # isDiff=1: a format-2 patch is applied as it downloads (mpfota.deltafetch, the file's
        # digests checked before the switch). A format-1 patch goes into delta.PATCH_PATH
        # (digests checked), then the new core is rebuilt from the running slot into the spare
        # one, verified and switched (mpfota.delta); the patch file is removed either way.
        import hashlib
        import os

        from mpfota import deltafetch, delta, http
        from mpfota.errors import ALREADY_RUNNING, FotaError

        spec = job.files[0]
        self._last_progress = None
        log.info("aliyun", "delta upgrade to", job.version, "from", spec.url)
        try:
            await deltafetch.fetch(spec.url, version=job.version, md5=spec.md5,
                                   sha256=spec.sha256, size=spec.size,
                                   progress=lambda done, total: self._progress(done, total))
            return 100, ""
        except http.HTTPError as e:
            return STEP_DOWNLOAD_FAILED, "download failed: %s" % e
        except FotaError as e:
            if e.code == ALREADY_RUNNING:
                return None, e.msg
            if "unsupported format version 1" not in e.msg:
                return STEP_VERIFY_FAILED, "delta refused: %s" % e.msg
        except OSError as e:
            return STEP_FLASH_FAILED, "flash write failed: %r" % e
        try:
            os.mkdir("/.mpfota")
        except OSError:
            pass
        try:
            step, desc = await self._fetch_file(spec, delta.PATCH_PATH, bytearray(4096),
                                                bytearray(1024), 0, spec.size, http, hashlib)
            if step != 100:
                return step, desc
            try:
                delta.apply(delta.PATCH_PATH, version=job.version)
            except FotaError as e:
                if e.code == ALREADY_RUNNING:
                    return None, e.msg
                return STEP_VERIFY_FAILED, "delta refused: %s" % e.msg
            return 100, ""
        except OSError as e:
            return STEP_FLASH_FAILED, "flash write failed: %r" % e
        finally:
            try:
                os.remove(delta.PATCH_PATH)
            except OSError:
                pass

    async def _download_files(self, job):
        # Each file into "<path>.part" (one 4 KiB buffer, MD5/SHA-256 on the way), checked,
        # then renamed over <path>. A failure removes the partial file; earlier files stay.
        import hashlib
        import os

        from mpfota import http

        total = sum(f.size for f in job.files)
        self._last_progress = None
        buf = bytearray(4096)
        hbuf = bytearray(1024)
        before = 0
        for spec, path in zip(job.files, job.paths):
            log.info("aliyun", "upgrade", job.version, "file", path, "from", spec.url)
            tmp = path + ".part"
            try:
                step, desc = await self._fetch_file(spec, tmp, buf, hbuf, before, total, http,
                                                    hashlib)
                if step == 100:
                    os.rename(tmp, path)
            except OSError as e:
                step, desc = STEP_FLASH_FAILED, "file write failed: %r" % e
            if step != 100:
                try:
                    os.remove(tmp)
                except OSError:
                    pass
                return step, desc
            before += spec.size
        return 100, ""

    async def _fetch_file(self, spec, tmp, buf, hbuf, before, total, http, hashlib):
        import binascii

        md5 = hashlib.md5() if spec.md5 is not None else None
        sha = hashlib.sha256() if spec.sha256 is not None else None
        mv = memoryview(buf)
        got = 0
        try:
            resp = await http.request("GET", spec.url, hbuf)
        except http.HTTPError as e:
            return STEP_DOWNLOAD_FAILED, "download failed: %s" % e
        try:
            if resp.status != 200:
                return STEP_DOWNLOAD_FAILED, "download failed: HTTP %d" % resp.status
            if resp.content_length not in (None, spec.size):
                return STEP_DOWNLOAD_FAILED, ("server announces %d bytes, expected %d"
                                              % (resp.content_length, spec.size))
            with open(tmp, "wb") as f:
                while True:
                    n = await resp.readinto(mv)
                    if not n:
                        break
                    got += n
                    if got > spec.size:
                        return STEP_DOWNLOAD_FAILED, "body longer than %d bytes" % spec.size
                    chunk = mv[:n]
                    f.write(chunk)
                    if md5 is not None:
                        md5.update(chunk)
                    if sha is not None:
                        sha.update(chunk)
                    self._progress(before + got, total)
        except http.HTTPError as e:
            return STEP_DOWNLOAD_FAILED, "download failed: %s" % e
        finally:
            await resp.aclose()
        if got != spec.size:
            return STEP_DOWNLOAD_FAILED, "got %d of %d bytes" % (got, spec.size)
        for h, want, name in ((md5, spec.md5, "md5"), (sha, spec.sha256, "sha256")):
            if h is not None:
                have = binascii.hexlify(h.digest()).decode()
                if have != want:
                    return STEP_VERIFY_FAILED, ("verification failed: %s %s, expected %s"
                                                % (name, have, want))
        return 100, ""

    def _progress(self, done, size):
        # Rate-limited: a new percentage at most every progress_interval_ms; 100 comes only
        # after verification.
        pct = done * 100 // size
        pct = 1 if pct < 1 else 99 if pct > 99 else pct
        last = self._last_progress
        if last is not None and (pct <= last[1] or _since(last[0]) < self.progress_interval_ms):
            return
        if self.report(pct):
            self._last_progress = (_ticks(), pct)


def _dirname(path):
    i = path.rfind("/")
    return path[:i] if i > 0 else "/" if i == 0 else "."


def _ticks():
    import time

    return time.ticks_ms()


def _since(t):
    import time

    return time.ticks_diff(time.ticks_ms(), t)


# ------------------------------------------------------------------ module-level API (Luat)

_client = None


def setup(product_key, device_name, device_secret, **kw):
    # The module's client (Luat keeps one per device); the functions below act on it.
    global _client
    _client = AliyunOta(product_key, device_name, device_secret, **kw)
    return _client


def _the():
    if _client is None:
        raise RuntimeError("aliyun_ota.setup(productKey, deviceName, deviceSecret) first")
    return _client


def setVer(version):
    _the().setVer(version)


def setName(name):
    _the().setName(name)


def setCb(cb):
    _the().setCb(cb)


def isDownloading():
    return _client is not None and _client.isDownloading()


def upgrade(payload):
    _the().upgrade(payload)


def connectCb(result, product_key=None, device_name=None):
    _the().connectCb(result, product_key, device_name)


def verRpt():
    _the().verRpt()


def run(duration_ms=None):
    return _the().run(duration_ms)
