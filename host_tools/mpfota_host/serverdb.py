"""State of `mpfota serve`: a database behind one interface, and a directory of package files.

The database is SQLite (`DATA/fota.db`, the embedded default) or PostgreSQL (`--db
postgresql://...`: several `mpfota serve` instances share one state). It keeps:

    releases   project, firmware_name, version (the script VERSION A.B.C a device reports after
               the update), core (the core version it brings, optional)
    packages   per release, one package file for each installed core version ("from core"),
               or "*" for any core; a package without a file is announced but not ready
               (devices on that core are told to wait, code 43)
    devices    the devices of known projects that checked: their project (set by the operator's
               allow-list or by a download served in full, never by a check alone), the
               firmware and version they last reported, last answer, request count
    daily      per device and UTC day: checks, and downloads served in full (the cyclic guard)
    bans       device -> "admin" (code 21) or "cyclic" (code 40), until lifted
    allow      per project, the devices allowed to ask (when a project has any)
    device_keys  per device, the SHA-256 of the device_key it must send (optional)

Package files are copied into `DATA/files/` under `<sha256[:16]>-<original name>`, so two
different files never share a name and a static server (nginx, object storage) can serve the
directory as it is. All access goes through `Store`, safe to share between threads (one
connection, one lock) and between processes (SQLite WAL; PostgreSQL transactions with a per-device
advisory lock, so two instances never both pass the daily limit).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from . import paths

ANY_CORE = "*"
SCHEMA_VERSION = 2  # 2: device_keys

# {serial} and {real} differ between SQLite and PostgreSQL; the rest is common SQL.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS releases(
    id {serial} PRIMARY KEY, project TEXT NOT NULL, firmware TEXT NOT NULL,
    version TEXT NOT NULL, core TEXT, created {real} NOT NULL,
    UNIQUE(project, firmware, version));
CREATE TABLE IF NOT EXISTS packages(
    release INTEGER NOT NULL REFERENCES releases(id) ON DELETE CASCADE,
    from_core TEXT NOT NULL, file TEXT, size INTEGER, sha256 TEXT, md5 TEXT,
    PRIMARY KEY(release, from_core));
CREATE TABLE IF NOT EXISTS devices(
    id TEXT PRIMARY KEY, project TEXT, firmware TEXT, version TEXT, addr TEXT,
    first_seen {real} NOT NULL, last_seen {real} NOT NULL, last_code INTEGER,
    requests INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS daily(
    device TEXT NOT NULL, day TEXT NOT NULL, checks INTEGER NOT NULL DEFAULT 0,
    offers INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(device, day));
CREATE TABLE IF NOT EXISTS bans(device TEXT PRIMARY KEY, reason TEXT NOT NULL,
    since {real} NOT NULL);
CREATE TABLE IF NOT EXISTS allow(project TEXT NOT NULL, device TEXT NOT NULL,
    PRIMARY KEY(project, device));
CREATE TABLE IF NOT EXISTS device_keys(device TEXT PRIMARY KEY, sha256 TEXT NOT NULL);
"""

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def version_rules() -> ModuleType:
    """The device's version rules, device/mpfota/version.py (is_upgrade, check, core_key,
    compare_core): the host and the board apply the same rules."""
    return paths.device_module("version")


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


def _key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Db:
    """One database connection in the dialect the SQL below is written in: `?` placeholders,
    rows addressed by column name."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def transaction(self) -> Any:
        """A context manager: one transaction that serialises against other writers."""
        raise NotImplementedError

    def lock_device(self, device: str) -> None:
        """Within a transaction: no other transaction works on `device` until it ends."""

    def close(self) -> None:
        raise NotImplementedError


class SqliteDb(Db):
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=10,
                                   isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA.format(serial="INTEGER", real="REAL"))
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._db.execute(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes too
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


class PostgresDb(Db):
    """PostgreSQL through psycopg (`pip install 'mpfota[postgres]'`)."""

    def __init__(self, url: str) -> None:
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError as e:
            raise RuntimeError("PostgreSQL needs psycopg: pip install 'psycopg[binary]'") from e
        self._db = psycopg.connect(url, autocommit=True, row_factory=dict_row, connect_timeout=10)
        with self._db.transaction():
            # Instances starting together: one creates the tables, the others wait for it.
            self._db.execute("SELECT pg_advisory_xact_lock(7130001)")
            self._db.execute(_SCHEMA.format(serial="BIGSERIAL", real="DOUBLE PRECISION"))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._db.execute(sql.replace("?", "%s"), tuple(params))

    def transaction(self) -> Any:
        return self._db.transaction()

    def lock_device(self, device: str) -> None:
        self._db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (device,))

    def close(self) -> None:
        self._db.close()


def is_database_url(text: str | None) -> bool:
    return bool(text) and text.startswith(("postgresql://", "postgres://"))


class Store:
    """The server's state: releases, devices, counters, bans, allow-lists, device keys.

    `Store(data_dir)` keeps everything in data_dir (SQLite); `Store(data_dir, db=URL)` keeps
    the tables in PostgreSQL and only the package files in data_dir/files."""

    def __init__(self, data_dir: str | os.PathLike, db: str | None = None) -> None:
        self.dir = Path(data_dir)
        self.files = self.dir / "files"
        self.files.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        if db:
            if not is_database_url(db):
                raise ValueError(f"--db {db[:60]!r}: expected postgresql://USER@HOST/NAME")
            self.db_name = "postgresql"
            self._db: Db = PostgresDb(db)
        else:
            self.db_name = str(self.dir / "fota.db")
            self._db = SqliteDb(self.dir / "fota.db")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def tx(self) -> Iterator[Db]:
        """One transaction, under the store's lock (reads and writes of one request are atomic)."""
        with self._lock, self._db.transaction():
            yield self._db

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._lock:
            return self._db.execute(sql, params).fetchone()

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
                                 " VALUES(?,?,?,?,?) RETURNING id",
                                 (project, firmware, version, core,
                                  time.time() if now is None else now)).fetchone()["id"]
            else:
                rid = row["id"]
                if core and row["core"] != core:
                    db.execute("UPDATE releases SET core=? WHERE id=?", (core, rid))
            db.execute("INSERT INTO packages(release, from_core, file, size, sha256, md5) "
                       "VALUES(?,?,?,?,?,?) ON CONFLICT(release, from_core) DO UPDATE SET "
                       "file=excluded.file, size=excluded.size, sha256=excluded.sha256, "
                       "md5=excluded.md5", (rid, from_core, *meta))
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
        row = self._one(self._PKG_SELECT + "WHERE r.project=? AND r.firmware=? AND r.version=? "
                        "AND p.from_core=?", (project, firmware, version, from_core))
        return Package(**row) if row else None

    def packages(self) -> list[Package]:
        return [Package(**r) for r in self._all(self._PKG_SELECT + "ORDER BY r.id, p.from_core")]

    def project_known(self, project: str) -> bool:
        return self._one("SELECT 1 AS x FROM releases WHERE project=? UNION "
                         "SELECT 1 AS x FROM allow WHERE project=? LIMIT 1",
                         (project, project)) is not None

    def firmware_known(self, project: str, firmware: str) -> bool:
        return self._one("SELECT 1 AS x FROM releases WHERE project=? AND firmware=? LIMIT 1",
                         (project, firmware)) is not None

    def current(self, project: str, firmware: str, core: str) -> Package | None:
        """The package of the newest release of (project, firmware) for a device on `core`:
        the one made for that core, else the one for any core; None when the release has
        neither."""
        with self._lock:
            rid = self._one("SELECT max(id) AS m FROM releases WHERE project=? AND firmware=?",
                            (project, firmware))["m"]
            if rid is None:
                return None
            rows = self._all(self._PKG_SELECT + "WHERE r.id=? AND p.from_core IN (?, ?)",
                             (rid, core, ANY_CORE))
        pkgs = {r["from_core"]: Package(**r) for r in rows}
        return pkgs.get(core) or pkgs.get(ANY_CORE)

    def file_path(self, name: str) -> Path | None:
        """The path of a stored file by name, None for an unknown or unsafe name."""
        if not name or name != Path(name).name or name.startswith(".") or name.endswith(".part"):
            return None
        path = self.files / name
        return path if path.is_file() else None

    # --- devices, counters, bans, allow-list, keys ----------------------------------------
    # The methods taking `db` run inside a transaction of Store.tx().

    def owner(self, db: Db, device: str) -> str | None:
        row = db.execute("SELECT project FROM devices WHERE id=?", (device,)).fetchone()
        return row["project"] if row else None

    def allowed(self, db: Db, project: str, device: str) -> bool | None:
        """None: the project has no allow-list; else whether the device is on it."""
        if db.execute("SELECT 1 AS x FROM allow WHERE project=? LIMIT 1",
                      (project,)).fetchone() is None:
            return None
        return db.execute("SELECT 1 AS x FROM allow WHERE project=? AND device=?",
                          (project, device)).fetchone() is not None

    def allowed_elsewhere(self, db: Db, project: str, device: str) -> bool:
        return db.execute("SELECT 1 AS x FROM allow WHERE project<>? AND device=? LIMIT 1",
                          (project, device)).fetchone() is not None

    def key_matches(self, db: Db, device: str, key: str | None) -> bool | None:
        """None: the device has no key; else whether `key` is its key."""
        row = db.execute("SELECT sha256 FROM device_keys WHERE device=?", (device,)).fetchone()
        if row is None:
            return None
        return key is not None and hmac.compare_digest(row["sha256"], _key_digest(key))

    def ban_of(self, db: Db, device: str) -> str | None:
        row = db.execute("SELECT reason FROM bans WHERE device=?", (device,)).fetchone()
        return row["reason"] if row else None

    def seen(self, db: Db, device: str, now: float, *, addr: str | None,
             firmware: str | None = None, version: str | None = None) -> None:
        """Record a check of `device` (its project is not set here: see claim)."""
        db.execute("INSERT INTO devices(id, firmware, version, addr, first_seen, last_seen, "
                   "requests) VALUES(?,?,?,?,?,?,1) ON CONFLICT(id) DO UPDATE SET "
                   "firmware=coalesce(excluded.firmware, devices.firmware), "
                   "version=coalesce(excluded.version, devices.version), addr=excluded.addr, "
                   "last_seen=excluded.last_seen, requests=devices.requests+1",
                   (device, firmware, version, addr, now, now))
        db.execute("INSERT INTO daily(device, day, checks) VALUES(?,?,1) ON CONFLICT(device, day)"
                   " DO UPDATE SET checks=daily.checks+1", (device, day_of(now)))

    def claim(self, db: Db, device: str, project: str) -> bool:
        """Make `project` the device's owner when it has none; True when this call did."""
        cur = db.execute("UPDATE devices SET project=? WHERE id=? AND project IS NULL",
                         (project, device))
        return cur.rowcount > 0

    def answered(self, db: Db, device: str, code: int | None) -> None:
        db.execute("UPDATE devices SET last_code=? WHERE id=?", (code, device))

    def offers_today(self, db: Db, device: str, now: float) -> int:
        row = db.execute("SELECT offers FROM daily WHERE device=? AND day=?",
                         (device, day_of(now))).fetchone()
        return row["offers"] if row else 0

    def count_offer(self, db: Db, device: str, now: float) -> None:
        db.execute("INSERT INTO daily(device, day, offers) VALUES(?,?,1) ON CONFLICT(device, day)"
                   " DO UPDATE SET offers=daily.offers+1", (device, day_of(now)))

    def download_aborted(self, device: str, project: str, now: float, claimed: bool) -> None:
        """A counted download was not served in full: it does not count, and the ownership
        it gave (claimed) is taken back."""
        with self.tx() as db:
            db.execute("UPDATE daily SET offers=offers-1 WHERE device=? AND day=? AND offers>0",
                       (device, day_of(now)))
            if claimed:
                db.execute("UPDATE devices SET project=NULL WHERE id=? AND project=?",
                           (device, project))

    def ban(self, device: str, reason: str = "admin", now: float | None = None,
            db: Db | None = None) -> None:
        if db is not None:
            db.execute("INSERT INTO bans(device, reason, since) VALUES(?,?,?) ON CONFLICT(device)"
                       " DO UPDATE SET reason=excluded.reason, since=excluded.since",
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
            for d in devices:
                db.execute("INSERT INTO allow(project, device) VALUES(?,?) ON CONFLICT DO NOTHING",
                           (project, d))

    def disallow(self, project: str, devices: list[str]) -> int:
        with self.tx() as db:
            return sum(db.execute("DELETE FROM allow WHERE project=? AND device=?",
                                  (project, d)).rowcount for d in devices)

    def allow_list(self, project: str | None = None) -> list[tuple[str, str]]:
        if project is None:
            rows = self._all("SELECT project, device FROM allow ORDER BY project, device")
        else:
            rows = self._all("SELECT project, device FROM allow WHERE project=? ORDER BY device",
                             (project,))
        return [(r["project"], r["device"]) for r in rows]

    def set_key(self, device: str, key: str | None) -> bool:
        """Require `key` as the device's device_key (None: no longer). False when removing a
        key the device did not have."""
        with self.tx() as db:
            if key is None:
                return db.execute("DELETE FROM device_keys WHERE device=?",
                                  (device,)).rowcount > 0
            db.execute("INSERT INTO device_keys(device, sha256) VALUES(?,?) ON CONFLICT(device) "
                       "DO UPDATE SET sha256=excluded.sha256", (device, _key_digest(key)))
            return True

    def forget(self, device: str) -> bool:
        """Drop a device's registration, counters and ban (it registers again on its next check)."""
        with self.tx() as db:
            n = db.execute("DELETE FROM devices WHERE id=?", (device,)).rowcount
            db.execute("DELETE FROM daily WHERE device=?", (device,))
            db.execute("DELETE FROM bans WHERE device=?", (device,))
            return n > 0

    _DEV_SELECT = ("SELECT d.id, d.project, d.firmware, d.version, d.addr, d.first_seen, "
                   "d.last_seen, d.last_code, d.requests, coalesce(y.offers, 0) AS offers_today,"
                   " b.reason AS ban FROM devices d LEFT JOIN daily y ON y.device=d.id AND y.day=?"
                   " LEFT JOIN bans b ON b.device=d.id ")

    def devices(self, now: float | None = None) -> list[Device]:
        """Every device seen, most recent first, with today's downloads and its ban."""
        day = day_of(time.time() if now is None else now)
        rows = self._all(self._DEV_SELECT + "ORDER BY d.last_seen DESC, d.id", (day,))
        return [Device(**r) for r in rows]

    def device(self, device: str, now: float | None = None) -> Device | None:
        day = day_of(time.time() if now is None else now)
        row = self._one(self._DEV_SELECT + "WHERE d.id=?", (day, device))
        return Device(**row) if row else None

    def bans(self) -> list[tuple[str, str, float]]:
        rows = self._all("SELECT device, reason, since FROM bans ORDER BY since, device")
        return [(r["device"], r["reason"], r["since"]) for r in rows]
