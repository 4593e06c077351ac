"""The rules of `mpfota serve`: what a check asks, and the answer the IoT platform would give.

No HTTP here (serverhttp.py carries the answers); the order of the checks is drawn in
docs/server.md ("Decision order").
"""

from __future__ import annotations

import email.utils
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

from .serverdb import Db, Package, Store, canonical_core, version_rules

# The IoT platform's answers when there is no upgrade (libfota2.lua's table), and the HTTP
# status this server sends each with (any status >= 300 means "no upgrade" to the clients;
# 3xx is avoided because clients follow or stop on it, and old update.lua parses the JSON of
# non-3xx answers only).
MESSAGES = {
    3: "无效的设备",  # invalid device
    17: "无权限",  # no permission: device, firmware and project not under one owner
    21: "不允许升级",  # upgrade not allowed: the device is banned
    25: "无效的项目",  # invalid project
    26: "无效的固件",  # invalid firmware
    27: "已是最新版本",  # already the latest version
    40: "循环升级",  # cyclic upgrade: too many upgrade requests today
    43: "请等待",  # please wait: the package for this device is being prepared
}
STATUS = {3: 403, 17: 403, 21: 403, 25: 404, 26: 404, 27: 404, 40: 429, 43: 503}
RETRY_AFTER_S = 60  # with code 43 (the platform says: retry in 1-3 minutes)
DAILY_LIMIT = 6  # downloads served in full per device and day before the cyclic ban (code 40)
ID_PARAMS = ("imei", "mac", "uid")
ID_OK = re.compile(r"[0-9A-Za-z:._-]{1,64}")
FIELD_MAX = 200
QUERY_FIELDS_MAX = 64

# --- requests ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """What a device's query says. Values are as sent ("" when a parameter is absent)."""

    device: str
    id_param: str
    project: str
    firmware: str
    version: str
    core_version: str | None  # old update.lua sends it; libfota2 puts the core in version
    need_oss_url: bool = False
    device_key: str | None = None  # update.lua sends device_key=<serial number>

    @property
    def style(self) -> str:
        return "update" if self.core_version is not None else "libfota2"


def parse_check(query: str) -> Check:
    """The check parameters of a query string. The first of imei, mac, uid names the device
    (names are case-sensitive, as on the platform: IMEI= is not a device id). ValueError
    when the query has more than QUERY_FIELDS_MAX fields."""
    try:
        q = parse_qs(query, keep_blank_values=True, max_num_fields=QUERY_FIELDS_MAX)
    except ValueError:
        raise ValueError(f"more than {QUERY_FIELDS_MAX} fields") from None

    def one(name: str) -> str:
        return q.get(name, [""])[0][:FIELD_MAX + 1]

    id_param = next((p for p in ID_PARAMS if p in q), "")
    return Check(device=one(id_param) if id_param else "", id_param=id_param,
                 project=one("project_key"), firmware=one("firmware_name"),
                 version=one("version"),
                 core_version=one("core_version") if "core_version" in q else None,
                 need_oss_url=one("need_oss_url") == "1",
                 device_key=one("device_key") if "device_key" in q else None)


@dataclass(frozen=True)
class DeviceVersion:
    core: str  # canonical core version ("2012", "17", "1.0.0")
    script: str  # the script version A.B.C, as version.is_upgrade compares it


def device_version(check: Check) -> DeviceVersion:
    """Core and script version of a request; ValueError (with the cause) when malformed.

    libfota2 sends "<core>.<X>.<Z>" (X and Z from VERSION X.Y.Z, Y dropped): the core is
    everything before the last two numbers. update.lua sends core_version=<n> and VERSION."""
    v = check.version
    if not v or len(v) > FIELD_MAX:
        raise ValueError("no version" if not v else "version too long")
    if check.core_version is not None:
        core, script = check.core_version, v
    else:
        parts = v.split(".")
        if len(parts) < 3:
            raise ValueError(f"version {v[:40]!r} is not <core>.<X>.<Z>")
        core, script = ".".join(parts[:-2]), f"{parts[-2]}.0.{parts[-1]}"
    cause = version_rules().check(script)
    if cause:
        raise ValueError(f"version {v[:40]!r}: {cause}")
    return DeviceVersion(canonical_core(core), script)


def upgrade_available(dv: DeviceVersion, pkg: Package) -> bool:
    """The release is newer for this device: its script version may replace the device's by
    the seed-001 rule (version.is_upgrade), or it brings a newer core (the platform offers
    those too, seed 001 §7.3)."""
    rules = version_rules()
    if rules.is_upgrade(dv.script, pkg.version):
        return True
    return pkg.core is not None and rules.compare_core(pkg.core, dv.core) == 1


@dataclass(frozen=True)
class Answer:
    status: int
    code: int | None = None  # the platform code of a no-upgrade answer
    cause: str = ""  # for the log line
    package: Package | None = None
    counted: bool = False  # the download counts towards the daily limit (unless it aborts)
    claimed: bool = False  # the download made the check's project the device's owner

    @property
    def body(self) -> bytes:
        if self.code is None:
            return b""
        return json.dumps({"code": self.code, "msg": MESSAGES[self.code]}).encode()


def no_upgrade(code: int, cause: str, status: int | None = None) -> Answer:
    return Answer(status or STATUS[code], code, cause)


def decide(store: Store, check: Check, *, now: float, addr: str | None = None,
           whole: Callable[[Package], bool] | bool = True,
           daily_limit: int = DAILY_LIMIT) -> Answer:
    """The answer to one check, and its effect on the state (one transaction).

    `whole(package)`: the answer will carry the whole package from its first byte (a GET
    whose Range is absent, ignored or covers everything). Only those downloads count towards
    the cyclic-upgrade guard and register the device's owner; resuming never does."""
    if not check.device:
        return no_upgrade(3, "no device id (imei=, mac= or uid=)", 400)
    if not ID_OK.fullmatch(check.device):
        return no_upgrade(3, f"bad device id {check.device[:40]!r}", 400)
    if not check.project or not store.project_known(check.project):
        return no_upgrade(25, f"unknown project {check.project[:40]!r}")  # no device row
    with store.tx() as db:
        db.lock_device(check.device)
        answer = _decide(store, db, check, now, addr, whole, daily_limit)
        store.answered(db, check.device, answer.code)
    return answer


def _identity_refusal(store: Store, db: Db, check: Check) -> Answer | None:
    """The device may not ask under this project: wrong key, allow-list, other owner."""
    dev, project = check.device, check.project
    key_ok = store.key_matches(db, dev, check.device_key)
    if key_ok is False:
        return no_upgrade(3, "device_key missing or wrong")
    allowed = store.allowed(db, project, dev)
    if allowed is not True and store.allowed_elsewhere(db, project, dev):
        return no_upgrade(17, "device is on another project's allow-list only")
    if allowed is False:
        return no_upgrade(3, "device not on the project's allow-list")
    owner = store.owner(db, dev)
    if owner is not None and owner != project:
        return no_upgrade(17, "device belongs to another project")
    return None


def _decide(store: Store, db: Db, check: Check, now: float, addr: str | None,
            whole: Callable[[Package], bool] | bool, daily_limit: int) -> Answer:
    dev, project, firmware = check.device, check.project, check.firmware
    refusal = _identity_refusal(store, db, check)
    if refusal:
        return refusal  # nothing recorded: whoever sent it may not be the device
    store.seen(db, dev, now, addr=addr, firmware=firmware or None,
               version=check.version or None)
    if not store.firmware_known(project, firmware):
        return no_upgrade(26, f"unknown firmware {firmware[:60]!r}")
    ban = store.ban_of(db, dev)
    if ban == "cyclic":
        return no_upgrade(40, "device banned after repeated upgrades (mpfota server unban)")
    if ban:
        return no_upgrade(21, "device banned by the administrator")
    try:
        dv = device_version(check)
    except ValueError as e:
        return no_upgrade(26, str(e), 400)
    pkg = store.current(project, firmware, dv.core)
    if pkg is None:
        return no_upgrade(27, f"newest release has no package for core {dv.core}")
    if not upgrade_available(dv, pkg):
        return no_upgrade(27, f"up to date ({check.version} vs release {pkg.version})")
    if pkg.file is None or store.file_path(pkg.file) is None:
        return no_upgrade(43, f"package {pkg.version} for core {pkg.from_core} not ready")
    cause = f"offer {pkg.version} from core {pkg.from_core}"
    if not (whole(pkg) if callable(whole) else whole):
        return Answer(200, None, cause, pkg)
    if daily_limit and store.offers_today(db, dev, now) >= daily_limit:
        store.ban(dev, "cyclic", now, db)
        return no_upgrade(40, f"more than {daily_limit} downloads today: banned")
    store.count_offer(db, dev, now)
    claimed = store.claim(db, dev, project)
    return Answer(200, None, cause, pkg, counted=True, claimed=claimed)


# --- byte ranges ------------------------------------------------------------------------


UNSATISFIABLE = (-1, -1)


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """One byte range (first, last inclusive) of a Range header, None to send the whole
    file (absent, malformed or several ranges: RFC 9110 allows ignoring), UNSATISFIABLE
    when it starts beyond the end."""
    if not value:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d{0,18})\s*-\s*(\d{0,18})\s*", value)
    if not m or (not m[1] and not m[2]):
        return None
    if not m[1]:  # suffix: the last N bytes
        n = int(m[2])
        if n == 0:
            return UNSATISFIABLE
        return (max(size - n, 0), size - 1) if size else UNSATISFIABLE
    first = int(m[1])
    if m[2] and int(m[2]) < first:
        return None
    if first >= size:
        return UNSATISFIABLE
    return first, (min(int(m[2]), size - 1) if m[2] else size - 1)


def range_start(value: str | None) -> int | None:
    """Where a Range header asks to start, None when it does not name a first byte."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d{1,18})\s*-.*", value or "")
    return int(m[1]) if m else None


def covers_all(rng: tuple[int, int] | None, size: int) -> bool:
    """The range parse_range returned means the whole file from byte 0."""
    return rng is None or rng == (0, size - 1)


@dataclass(frozen=True)
class BodyPlan:
    """What a GET of a stored file will send: all of it or one range (after If-Range)."""

    path: Path
    size: int
    etag: str
    last_modified: str
    range: tuple[int, int] | None  # None: the whole file; UNSATISFIABLE: 416

    @property
    def whole(self) -> bool:
        return covers_all(self.range, self.size)


def body_plan(store: Store, name: str, range_header: str | None,
              if_range: str | None) -> BodyPlan | None:
    """The plan for serving stored file `name`; None when there is no such file."""
    path = store.file_path(name)
    if path is None:
        return None
    st = path.stat()
    etag = _etag(name, st)
    last_modified = email.utils.formatdate(st.st_mtime, usegmt=True)
    rng = parse_range(range_header, st.st_size)
    if rng is not None and if_range is not None and if_range.strip() not in (etag,
                                                                              last_modified):
        rng = None  # the file changed since the client's first part: send it whole
    return BodyPlan(path, st.st_size, etag, last_modified, rng)


def _etag(name: str, st: os.stat_result) -> str:
    head = name.split("-", 1)[0]
    if re.fullmatch(r"[0-9a-f]{16}", head):  # content-addressed name (Store.add_file)
        return f'"{head}"'
    return f'"{int(st.st_mtime):x}-{st.st_size:x}"'
