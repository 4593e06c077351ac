"""State of `mpfota serve`: one SQLite database and a directory of package files.

A data directory holds `fota.db` and `files/`. The database keeps:

    releases   project, firmware_name, version (the script VERSION A.B.C a device reports after
               the update), core (the core version it brings, optional)
    packages   per release, one package file for each installed core version ("from core"),
               or "*" for any core; a package without a file is announced but not ready
               (devices on that core are told to wait, code 43)
    devices    every device id seen: its project (the first valid request registers it), the
               firmware and version it last reported, last answer, request count
    daily      per device and UTC day: checks, and upgrade offers (the cyclic-upgrade guard)
    bans       device -> "admin" (code 21) or "cyclic" (code 40), until lifted
    allow      per project, the devices allowed to ask (when a project has any)

Package files are copied into `files/` under `<sha256[:16]>-<original name>`, so two different
files never share a name and a static server (nginx, object storage) can serve the directory
as it is. All access goes through `Store`, which is safe to share between threads (one
connection, one lock) and between processes (WAL; the admin commands work while the server runs).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from . import paths

ANY_CORE = "*"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS releases(
    id INTEGER PRIMARY KEY, project TEXT NOT NULL, firmware TEXT NOT NULL,
    version TEXT NOT NULL, core TEXT, created REAL NOT NULL,
    UNIQUE(project, firmware, version));
CREATE TABLE IF NOT EXISTS packages(
    release INTEGER NOT NULL REFERENCES releases(id) ON DELETE CASCADE,
    from_core TEXT NOT NULL, file TEXT, size INTEGER, sha256 TEXT, md5 TEXT,
    PRIMARY KEY(release, from_core));
CREATE TABLE IF NOT EXISTS devices(
    id TEXT PRIMARY KEY, project TEXT, firmware TEXT, version TEXT, addr TEXT,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL, last_code INTEGER,
    requests INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS daily(
    device TEXT NOT NULL, day TEXT NOT NULL, checks INTEGER NOT NULL DEFAULT 0,
    offers INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(device, day));
CREATE TABLE IF NOT EXISTS bans(device TEXT PRIMARY KEY, reason TEXT NOT NULL, since REAL NOT NULL);
CREATE TABLE IF NOT EXISTS allow(project TEXT NOT NULL, device TEXT NOT NULL,
    PRIMARY KEY(project, device));
"""

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


_version: ModuleType | None = None


def version_rules() -> ModuleType:
    """The device's version rules, device/mpfota/version.py (is_upgrade, check, core_key,
    compare_core), loaded from the repository without importing the rest of the device
    package (MicroPython code): the host and the board apply the same rules."""
    global _version
    if _version is None:
        path = paths.DEVICE / "mpfota" / "version.py"
        spec = importlib.util.spec_from_file_location("mpfota_device_version", path)
        if spec is None or spec.loader is None or not path.is_file():
            raise RuntimeError(f"{path} is missing")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _version = module
    return _version


def canonical_core(text: str) -> str:
    """The form a core version is stored and matched in: its numbers ("V0017" -> "17",
    "2012", "1.0.0"); "*" stays "*". ValueError when it is not a core version."""
    if text.strip() == ANY_CORE:
        return ANY_CORE
    key = version_rules().core_key(text.strip())
    if key is None or len(key) > 8:
        raise ValueError(f"core version {text[:40]!r}: expected numbers such as 2012, V0017 "
                         "or 1.0.0")
    return ".".join(str(n) for n in key)


def day_of(now: float) -> str:
    """The UTC day a timestamp falls in (the cyclic-upgrade counter resets with it)."""
    return time.strftime("%Y-%m-%d", time.gmtime(now))


@dataclass(frozen=True)
class Package:
    release: int
    project: str
    firmware: str
    version: str
    core: str | None
    from_core: str
    file: str | None  # name in files/; None: announced, not ready
    size: int | None
    sha256: str | None
    md5: str | None


@dataclass(frozen=True)
class Device:
    id: str
    project: str | None
    firmware: str | None
    version: str | None
    addr: str | None
    first_seen: float
    last_seen: float
    last_code: int | None
    requests: int
    offers_today: int
    ban: str | None


class Store:
    def __init__(self, data_dir: str | os.PathLike) -> None:
        self.dir = Path(data_dir)
        self.files = self.dir / "files"
        self.files.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "fota.db"
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10,
                                   isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)  # each statement is idempotent
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction, under the store's lock (reads and writes of one request are atomic)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- files and releases -------------------------------------------------------------

    def add_file(self, src: str | os.PathLike) -> tuple[str, int, str, str]:
        """Copy a package file into files/; returns (name, size, sha256, md5)."""
        src = Path(src)
        sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
        with open(src, "rb") as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
                md5.update(chunk)
                size += len(chunk)
        digest = sha.hexdigest()
        name = f"{digest[:16]}-{_SAFE_NAME.sub('_', src.name)[:80]}"
        dest = self.files / name
        if not dest.exists():
            tmp = dest.with_name(dest.name + ".part")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        return name, size, digest, md5.hexdigest()

    def publish(self, project: str, firmware: str, version: str, *, core: str | None = None,
                from_core: str = ANY_CORE, file: str | os.PathLike | None = None,
                now: float | None = None) -> Package:
        """Add (or replace) the package for `from_core` in a release, creating the release.

        Without `file` the package is announced but not ready (devices on that core get 43).
        ValueError when the version or a core version is malformed."""
        cause = version_rules().check(version)
        if cause:
            raise ValueError(cause)
        from_core = canonical_core(from_core)
        core = canonical_core(core) if core else None
        meta: tuple = (None, None, None, None)
        if file is not None:
            if os.path.getsize(file) == 0:
                raise ValueError(f"{file}: empty (a device takes an empty 200 for a failure)")
            meta = self.add_file(file)
        with self.tx() as db:
            row = db.execute("SELECT id, core FROM releases WHERE project=? AND firmware=? "
                             "AND version=?", (project, firmware, version)).fetchone()
            if row is None:
                rid = db.execute("INSERT INTO releases(project, firmware, version, core, created)"
                                 " VALUES(?,?,?,?,?)",
                                 (project, firmware, version, core,
                                  time.time() if now is None else now)).lastrowid
            else:
                rid = row["id"]
                if core and row["core"] != core:
                    db.execute("UPDATE releases SET core=? WHERE id=?", (core, rid))
            db.execute("INSERT OR REPLACE INTO packages(release, from_core, file, size, sha256, "
                       "md5) VALUES(?,?,?,?,?,?)", (rid, from_core, *meta))
        pkg = self.package(project, firmware, version, from_core)
        assert pkg is not None
        return pkg

    def retract(self, project: str, firmware: str, version: str) -> bool:
        """Withdraw a release (its files stay in files/). False when there was none."""
        with self.tx() as db:
            cur = db.execute("DELETE FROM releases WHERE project=? AND firmware=? AND version=?",
                             (project, firmware, version))
            return cur.rowcount > 0

    _PKG_SELECT = ("SELECT r.id AS release, r.project, r.firmware, r.version, r.core, "
                   "p.from_core, p.file, p.size, p.sha256, p.md5 "
                   "FROM releases r JOIN packages p ON p.release = r.id ")

    def package(self, project: str, firmware: str, version: str, from_core: str) -> Package | None:
        with self._lock:
            row = self._db.execute(self._PKG_SELECT + "WHERE r.project=? AND r.firmware=? AND "
                                   "r.version=? AND p.from_core=?",
                                   (project, firmware, version, from_core)).fetchone()
        return Package(**row) if row else None

    def packages(self) -> list[Package]:
        with self._lock:
            rows = self._db.execute(self._PKG_SELECT + "ORDER BY r.id, p.from_core").fetchall()
        return [Package(**r) for r in rows]

    def project_known(self, project: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM releases WHERE project=? UNION "
                                    "SELECT 1 FROM allow WHERE project=? LIMIT 1",
                                    (project, project)).fetchone() is not None

    def firmware_known(self, project: str, firmware: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM releases WHERE project=? AND firmware=? "
                                    "LIMIT 1", (project, firmware)).fetchone() is not None

    def current(self, project: str, firmware: str, core: str) -> Package | None:
        """The package of the newest release of (project, firmware) for a device on `core`:
        the one made for that core, else the one for any core; None when the release has
        neither."""
        with self._lock:
            rid = self._db.execute("SELECT max(id) FROM releases WHERE project=? AND firmware=?",
                                   (project, firmware)).fetchone()[0]
            if rid is None:
                return None
            rows = self._db.execute(self._PKG_SELECT + "WHERE r.id=? AND p.from_core IN (?, ?)",
                                    (rid, core, ANY_CORE)).fetchall()
        pkgs = {r["from_core"]: Package(**r) for r in rows}
        return pkgs.get(core) or pkgs.get(ANY_CORE)

    def file_path(self, name: str) -> Path | None:
        """The path of a stored file by name, None for an unknown or unsafe name."""
        if not name or name != Path(name).name or name.startswith(".") or name.endswith(".part"):
            return None
        path = self.files / name
        return path if path.is_file() else None

    # --- devices, counters, bans, allow-list ----------------------------------------------

    def owner(self, db: sqlite3.Connection, device: str) -> str | None:
        row = db.execute("SELECT project FROM devices WHERE id=?", (device,)).fetchone()
        return row["project"] if row else None

    def allowed(self, db: sqlite3.Connection, project: str, device: str) -> bool | None:
        """None: the project has no allow-list; else whether the device is on it."""
        if db.execute("SELECT 1 FROM allow WHERE project=? LIMIT 1", (project,)).fetchone() is None:
            return None
        return db.execute("SELECT 1 FROM allow WHERE project=? AND device=?",
                          (project, device)).fetchone() is not None

    def allowed_elsewhere(self, db: sqlite3.Connection, project: str, device: str) -> bool:
        return db.execute("SELECT 1 FROM allow WHERE project<>? AND device=? LIMIT 1",
                          (project, device)).fetchone() is not None

    def ban_of(self, db: sqlite3.Connection, device: str) -> str | None:
        row = db.execute("SELECT reason FROM bans WHERE device=?", (device,)).fetchone()
        return row["reason"] if row else None

    def seen(self, db: sqlite3.Connection, device: str, now: float, *, addr: str | None,
             project: str | None = None, firmware: str | None = None,
             version: str | None = None) -> None:
        """Record a request of `device`; `project` registers it when it has no project yet."""
        db.execute("INSERT INTO devices(id, project, firmware, version, addr, first_seen, "
                   "last_seen, requests) VALUES(?,?,?,?,?,?,?,1) ON CONFLICT(id) DO UPDATE SET "
                   "project=coalesce(devices.project, excluded.project), "
                   "firmware=coalesce(excluded.firmware, devices.firmware), "
                   "version=coalesce(excluded.version, devices.version), addr=excluded.addr, "
                   "last_seen=excluded.last_seen, requests=devices.requests+1",
                   (device, project, firmware, version, addr, now, now))
        db.execute("INSERT INTO daily(device, day, checks) VALUES(?,?,1) ON CONFLICT(device, day)"
                   " DO UPDATE SET checks=checks+1", (device, day_of(now)))

    def answered(self, db: sqlite3.Connection, device: str, code: int | None) -> None:
        db.execute("UPDATE devices SET last_code=? WHERE id=?", (code, device))

    def offers_today(self, db: sqlite3.Connection, device: str, now: float) -> int:
        row = db.execute("SELECT offers FROM daily WHERE device=? AND day=?",
                         (device, day_of(now))).fetchone()
        return row[0] if row else 0

    def count_offer(self, db: sqlite3.Connection, device: str, now: float) -> None:
        db.execute("INSERT INTO daily(device, day, offers) VALUES(?,?,1) ON CONFLICT(device, day)"
                   " DO UPDATE SET offers=offers+1", (device, day_of(now)))

    def ban(self, device: str, reason: str = "admin", now: float | None = None,
            db: sqlite3.Connection | None = None) -> None:
        if db is not None:
            db.execute("INSERT OR REPLACE INTO bans(device, reason, since) VALUES(?,?,?)",
                       (device, reason, time.time() if now is None else now))
            return
        with self.tx() as tx:
            self.ban(device, reason, now, tx)

    def unban(self, device: str) -> bool:
        """Lift a ban (admin or cyclic) and clear the device's upgrade count, so the next
        check starts afresh. False when the device was not banned."""
        with self.tx() as db:
            cur = db.execute("DELETE FROM bans WHERE device=?", (device,))
            db.execute("UPDATE daily SET offers=0 WHERE device=?", (device,))
            return cur.rowcount > 0

    def allow(self, project: str, devices: list[str]) -> None:
        with self.tx() as db:
            db.executemany("INSERT OR IGNORE INTO allow(project, device) VALUES(?,?)",
                           [(project, d) for d in devices])

    def disallow(self, project: str, devices: list[str]) -> int:
        with self.tx() as db:
            return sum(db.execute("DELETE FROM allow WHERE project=? AND device=?",
                                  (project, d)).rowcount for d in devices)

    def allow_list(self, project: str | None = None) -> list[tuple[str, str]]:
        with self._lock:
            if project is None:
                rows = self._db.execute("SELECT project, device FROM allow "
                                        "ORDER BY project, device").fetchall()
            else:
                rows = self._db.execute("SELECT project, device FROM allow WHERE project=? "
                                        "ORDER BY device", (project,)).fetchall()
        return [(r["project"], r["device"]) for r in rows]

    def forget(self, device: str) -> bool:
        """Drop a device's registration, counters and ban (it registers again on its next check)."""
        with self.tx() as db:
            n = db.execute("DELETE FROM devices WHERE id=?", (device,)).rowcount
            db.execute("DELETE FROM daily WHERE device=?", (device,))
            db.execute("DELETE FROM bans WHERE device=?", (device,))
            return n > 0

    _DEV_SELECT = ("SELECT d.*, coalesce(y.offers, 0) AS offers_today, b.reason AS ban "
                   "FROM devices d LEFT JOIN daily y ON y.device=d.id AND y.day=? "
                   "LEFT JOIN bans b ON b.device=d.id ")

    def devices(self, now: float | None = None) -> list[Device]:
        """Every device seen, most recent first, with today's upgrade offers and its ban."""
        day = day_of(time.time() if now is None else now)
        with self._lock:
            rows = self._db.execute(self._DEV_SELECT + "ORDER BY d.last_seen DESC, d.id",
                                    (day,)).fetchall()
        return [Device(**r) for r in rows]

    def device(self, device: str, now: float | None = None) -> Device | None:
        day = day_of(time.time() if now is None else now)
        with self._lock:
            row = self._db.execute(self._DEV_SELECT + "WHERE d.id=?", (day, device)).fetchone()
        return Device(**row) if row else None

    def bans(self) -> list[tuple[str, str, float]]:
        with self._lock:
            rows = self._db.execute("SELECT device, reason, since FROM bans ORDER BY since")
            return [(r["device"], r["reason"], r["since"]) for r in rows.fetchall()]
