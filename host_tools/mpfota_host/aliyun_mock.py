"""`mpfota aliyun-mock`: play the Aliyun IoT OTA platform for one device over a real broker.

The mock connects to an MQTT broker (mosquitto on 127.0.0.1, say), listens on the device's
/ota/device/inform and /ota/device/progress topics, waits until the device reports its version,
pushes an upgrade job on /ota/device/upgrade (serving the firmware over HTTP on 127.0.0.1
itself, or pointing at a URL you give), shows the progress the device reports, and decides as
the platform does: a negative step is a failure; success is the device reporting the job's
version after its reboot.

Exit status: 0 success (or the device already runs that version), 1 the upgrade failed or
timed out, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.server
import itertools
import json
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .progress import Progress

DEFAULT_MODULE = "default"


def topics(pk: str, dn: str) -> dict[str, str]:
    tail = f"/{pk}/{dn}"
    return {k: f"/ota/device/{k}{tail}" for k in ("inform", "upgrade", "progress")}


# --------------------------------------------------------------------------- jobs


def sign_digest(private_key_pem: bytes, hex_digest: str) -> str:
    """`digestsign` as AliOS Things uOTA verifies it: base64 of RSA PKCS#1 v1.5 / SHA-256 over
    the binary digest (MD5 or SHA-256) of the package."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise UserError(f"cannot read the signing key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise UserError("the signing key must be an RSA private key (PEM, unencrypted)")
    sig = key.sign(bytes.fromhex(hex_digest), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(sig).decode()


def make_job(url: str, size: int, version: str, md5: str | None = None,
             sha256: str | None = None, sign_method: str = "MD5", module: str | None = None,
             private_key_pem: bytes | None = None, ext: dict | None = None) -> dict:
    """The `data` object of a single-file upgrade push, as the platform sends it."""
    method = sign_method.upper()
    if method == "MD5":
        if not md5:
            raise UserError("an MD5 job needs the package's MD5")
        digest = md5
    elif method == "SHA256":
        if not sha256:
            raise UserError("a SHA256 job needs the package's SHA-256")
        digest = sha256
    else:
        raise UserError(f"unknown sign method {sign_method!r} (MD5 or SHA256)")
    data: dict = {"size": size, "version": version, "url": url, "signMethod": method,
                  "sign": digest, "isDiff": 0}
    if md5:
        data["md5"] = md5
    if module and module != DEFAULT_MODULE:
        data["module"] = module
    if ext:
        data["extData"] = ext
    if private_key_pem is not None:
        data["digestsign"] = sign_digest(private_key_pem, digest)
    return data


# --------------------------------------------------------------------------- HTTP


class _BlobHandler(http.server.BaseHTTPRequestHandler):
    """GET/HEAD of the one package (any path), with `Range: bytes=N-` for resumed downloads."""

    blob = b""
    protocol_version = "HTTP/1.1"

    def do_HEAD(self) -> None:
        self._reply(head=True)

    def do_GET(self) -> None:
        self._reply(head=False)

    def _reply(self, head: bool) -> None:
        self.server.hits += 1
        blob = self.blob
        start = 0
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and rng[6:].rstrip("-").isdigit():
            start = int(rng[6:].rstrip("-"))
        if start >= len(blob) and start:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(blob)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = blob[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(blob) - 1}/{len(blob)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", f'"{hashlib.md5(blob).hexdigest()}"')
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, *args) -> None:  # quiet
        pass


class PackageServer:
    """Serves one package on http://127.0.0.1:<ephemeral port>/<name> until close()."""

    def __init__(self, data: bytes, name: str = "firmware.bin") -> None:
        handler = type("Handler", (_BlobHandler,), {"blob": data})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.hits = 0  # requests answered
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/{name}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def hits(self) -> int:
        return self.server.hits

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------- the platform


@dataclass
class Event:
    kind: str  # "inform" or "progress"
    version: str | None = None
    step: int | None = None
    desc: str = ""
    module: str = DEFAULT_MODULE
    raw: dict = field(default_factory=dict)


@dataclass
class Outcome:
    success: bool
    reason: str
    steps: list[int]
    events: list[Event]


class AliyunMock:
    """The platform side for one device (productKey/deviceName) on an MQTT broker."""

    def __init__(self, host: str, port: int, pk: str, dn: str, module: str = DEFAULT_MODULE,
                 username: str | None = None, password: str | None = None) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise UserError("paho-mqtt is not installed: run `make setup`") from None

        self.pk, self.dn, self.module = pk, dn, module
        self.topics = topics(pk, dn)
        self.events: queue.Queue[Event] = queue.Queue()
        self.versions: list[str] = []
        self._ids = itertools.count(1)
        self._ready = threading.Event()
        self._error = ""
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"mpfota-aliyun-mock-{time.monotonic_ns()}")
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        try:
            self.client.connect(host, port, keepalive=60)
        except OSError as exc:
            raise UserError(f"cannot reach the MQTT broker at {host}:{port}: {exc}") from None
        self.client.loop_start()
        if not self._ready.wait(10) or self._error:
            self.close()
            raise UserError(f"broker {host}:{port} refused the mock: {self._error or 'timeout'}")

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            self._error = str(reason_code)
            self._ready.set()
        else:
            client.subscribe([(self.topics["inform"], 1), (self.topics["progress"], 1)])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties=None) -> None:
        # Ready once the broker has both subscriptions: no report of the device is missed.
        if any(rc.is_failure for rc in reason_codes):
            self._error = "subscription refused"
        self._ready.set()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            body = json.loads(msg.payload)
            params = body["params"]
        except (ValueError, KeyError, TypeError, RecursionError):
            params = None
        if not isinstance(params, dict) or not all(
                isinstance(params.get(k, ""), str) for k in ("version", "step", "desc", "module")):
            # The device reports strings only (params of Alink's inform and progress).
            self.events.put(Event("bad", desc=repr(msg.payload[:100])))
            return
        module = params.get("module") or DEFAULT_MODULE
        if msg.topic == self.topics["inform"]:
            self.versions.append(str(params.get("version")))
            self.events.put(Event("inform", version=str(params.get("version")), module=module,
                                  raw=body))
        else:
            try:
                step = int(float(params.get("step")))
            except (TypeError, ValueError):
                step = None
            self.events.put(Event("progress", step=step, desc=str(params.get("desc", "")),
                                  module=module, raw=body))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    # ---- pushing

    def push_raw(self, payload: bytes | str) -> None:
        info = self.client.publish(self.topics["upgrade"], payload, qos=1)
        info.wait_for_publish(10)

    def push(self, data: dict) -> int:
        msg_id = next(self._ids)
        self.push_raw(json.dumps({"code": "1000", "data": data, "id": msg_id,
                                  "message": "success"}))
        return msg_id

    # ---- waiting

    def next_event(self, timeout: float, kind: str | None = None) -> Event | None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                return None
            if kind is None or ev.kind == kind:
                return ev

    def wait_inform(self, timeout: float) -> str | None:
        """The version the device reports next (None when it does not within `timeout`)."""
        ev = self.next_event(timeout, "inform")
        return ev.version if ev else None

    def follow(self, target: str, timeout: float, on_step=None) -> Outcome:
        """After a push: collect progress until a failure step, or until the device reports
        a version after step 100 (success when it is `target`)."""
        deadline = time.monotonic() + timeout
        steps: list[int] = []
        events: list[Event] = []
        written = False
        while True:
            ev = self.next_event(deadline - time.monotonic())
            if ev is None:
                where = "after the update was written" if written else "during the upgrade"
                return Outcome(False, f"timed out {where}", steps, events)
            events.append(ev)
            if ev.kind == "progress" and ev.step is not None:
                if ev.module != self.module:
                    continue
                steps.append(ev.step)
                if on_step:
                    on_step(ev)
                if ev.step < 0:
                    return Outcome(False, f"device reports step {ev.step}: {ev.desc}", steps,
                                   events)
                if ev.step >= 100:
                    written = True
            elif ev.kind == "inform" and ev.module == self.module:
                if ev.version == target:
                    return Outcome(True, f"device reports version {target}", steps, events)
                if written:
                    return Outcome(False, f"device reports {ev.version} after the update, "
                                   f"expected {target}", steps, events)


# --------------------------------------------------------------------------- CLI


def _broker(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--broker {text!r}: expected HOST:PORT, e.g. 127.0.0.1:1883")
    return host, int(port)


def _package(args: argparse.Namespace) -> tuple[bytes | None, int, str | None, str | None]:
    if args.firmware:
        try:
            data = args.firmware.read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read {args.firmware}: {exc.strerror or exc}") from None
        if not data:
            raise UserError(f"{args.firmware} is empty")
        return data, len(data), hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
    if not args.url:
        raise UserError("give the package: --firmware FILE, or --url URL with --size and --md5")
    if args.size is None or args.size <= 0:
        raise UserError("--url needs --size (bytes)")
    return None, args.size, args.md5, args.sha256


def run_mock(args: argparse.Namespace) -> int:
    host, port = _broker(args.broker)
    data, size, md5, sha256 = _package(args)
    key = None
    if args.sign_key:
        try:
            key = args.sign_key.read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read {args.sign_key}: {exc.strerror or exc}") from None
    server = PackageServer(data) if data is not None else None
    url = server.url if server else args.url
    try:
        job = make_job(url, size, args.version, md5, sha256, args.sign_method, args.module, key)
        mock = AliyunMock(host, port, args.pk, args.dn, args.module)
        try:
            return _drive(mock, job, args)
        finally:
            mock.close()
    finally:
        if server:
            server.close()


def _drive(mock: AliyunMock, job: dict, args: argparse.Namespace) -> int:
    say = print
    if not args.no_wait:
        say(f"aliyun-mock: waiting for {args.pk}/{args.dn} to report its version "
            f"(up to {args.wait:g} s)")
        current = mock.wait_inform(args.wait)
        if current is None:
            say("aliyun-mock: failure: the device did not report a version")
            return 1
        say(f"aliyun-mock: device runs {current}")
        if current == args.version:
            say(f"aliyun-mock: success: the device already runs {args.version}")
            return 0
    mock.push(job)
    say(f"aliyun-mock: pushed {args.version} ({job['size']} bytes, {job['signMethod']}"
        f"{', signed' if 'digestsign' in job else ''}) from {job['url']}")
    bar = Progress("device", 100, unit="%")
    last = [0]

    def on_step(ev: Event) -> None:
        if ev.step is not None and ev.step > last[0]:
            bar.update(ev.step - last[0])
            last[0] = ev.step

    outcome = mock.follow(args.version, args.timeout, on_step)
    bar.close()
    if outcome.success:
        say(f"aliyun-mock: success: {outcome.reason}")
        return 0
    say(f"aliyun-mock: failure: {outcome.reason}")
    return 1


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "aliyun-mock", help="play the Aliyun IoT OTA platform for a device, over MQTT",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  mpfota aliyun-mock --broker 127.0.0.1:1883 --pk a1pk --dn dev1 "
               "--firmware core-2.0.0.img --version 2.0.0",
    )
    p.add_argument("--broker", default="127.0.0.1:1883", help="MQTT broker HOST:PORT")
    p.add_argument("--pk", required=True, help="ProductKey")
    p.add_argument("--dn", required=True, help="DeviceName")
    p.add_argument("--version", required=True,
                   help="the version the device must report after the upgrade")
    p.add_argument("--firmware", type=Path, help="package file, served on 127.0.0.1")
    p.add_argument("--url", help="package URL (instead of --firmware)")
    p.add_argument("--size", type=int, help="package size in bytes (with --url)")
    p.add_argument("--md5", help="package MD5, hex (with --url)")
    p.add_argument("--sha256", help="package SHA-256, hex (with --url)")
    p.add_argument("--sign-method", default="MD5", choices=["MD5", "SHA256"],
                   help="signMethod of the job (default MD5)")
    p.add_argument("--sign-key", type=Path,
                   help="RSA private key (PEM): add digestsign for a secure upgrade")
    p.add_argument("--module", default=DEFAULT_MODULE, help="OTA module (default: default)")
    p.add_argument("--no-wait", action="store_true",
                   help="push at once instead of waiting for the device's version report")
    p.add_argument("--wait", type=float, default=60, help="seconds to wait for the device")
    p.add_argument("--timeout", type=float, default=300,
                   help="seconds for the whole upgrade, reboot included")
    p.set_defaults(func=run_mock)
