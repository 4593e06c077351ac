"""`mpfota serve`: the reference third-party FOTA server, and `mpfota server ...` to run it.

A device asks `GET <any path>?<query>` with the LuatOS query strings:

    libfota2:       imei=<id>&project_key=<k>&firmware_name=<fw>&version=<core>.<X>.<Z>
                    (or mac=<id>, uid=<id> in place of imei)
    old update.lua: project_key=<k>&imei=<id>&device_key=<sn>&firmware_name=<fw>
                    &core_version=<n>&dfota=1&version=<A.B.C>[&need_oss_url=1]

and gets either the package (200 with the file as the body, 206 for a Range, or a 302 to a
static store with --redirect-base) or, when there is no upgrade, an answer >= 300 whose body is
the IoT platform's JSON, e.g. {"code": 27, "msg": "\\u5df2\\u662f\\u6700\\u65b0\\u7248\\u672c"}.
`/files/<name>` serves stored package files directly (Range too), `/healthz` answers "ok",
`/status` (with --status-page) is a read-only HTML page of releases, devices and bans.

The modules: serverrules (the checks, in order), serverhttp (FotaServer: aiohttp), serverdb
(the state: SQLite or PostgreSQL), serverstatus (the page), serverpublish (publish's checks);
this one is the command line. The rules and the state they use: docs/server.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from .errors import UserError
from .helptext import examples
from .serverdb import Store, is_database_url, version_rules
from .serverhttp import FotaServer
from .serverpublish import (
    check_core,
    check_replace,
    file_sha256,
    package_metadata,
    publish_warnings,
    release_fields,
)
from .serverrules import (  # noqa: F401 - re-exported: the rules' home used to be this module
    DAILY_LIMIT,
    FIELD_MAX,
    ID_OK,
    MESSAGES,
    UNSATISFIABLE,
    Check,
    decide,
    device_version,
    parse_check,
    parse_range,
    range_start,
)

# --- command line -----------------------------------------------------------------------

DEFAULT_DATA = os.environ.get("MPFOTA_SERVER_DATA", "mpfota-server")

SERVE_EPILOG = """examples:
  mpfota server publish --project KEY --firmware DEMO_LuatOS-SoC_ESP32 --version 001.000.001 pkg.bin
  mpfota serve --port 8080
      devices (libfota2): opts.url = "http://HOST:8080/upgrade?", opts.project_key = "KEY"
  mpfota serve --redirect-base http://cdn.example/fota/    302 to a static copy of DATA/files
  mpfota serve --host 0.0.0.0 --daily-limit 10 --data /srv/fota
  mpfota serve --status-page                      read-only HTML at http://HOST:8080/status
  mpfota serve --db postgresql://fota@db/fota --data /srv/fota   several instances, one state

Answers: 200 (or 206) with the package when there is an upgrade; otherwise 4xx/5xx with the
IoT platform's JSON: 27 latest, 21 banned, 40 cyclic ban, 3 invalid device, 17 no permission,
25 invalid project, 26 invalid firmware, 43 please wait. See docs/server.md.
"""

ADMIN_EPILOG = """examples:
  mpfota server publish app.pkg                 an mpfota package names its project, firmware,
                                                versions and base core itself (mpfota pack)
  mpfota server publish --project KEY --firmware FW --version 001.000.002 luatos.bin
  mpfota server publish --project KEY --firmware FW --version 1.0.1 --core 22 \\
      --from-core 17 pkg_from_v0017.bin        one package per installed core (seed 002)
  mpfota server publish --project KEY --firmware FW --version 1.0.1 --from-core 19
      (no file: announced; devices on core 19 get code 43 "please wait" until published)
  mpfota server releases
  mpfota server devices
  mpfota server unban 861234567890123          lift a ban (21 or the cyclic 40)
  mpfota server allow --project KEY 861234567890123 861234567890124
  mpfota server allow --project KEY            list the project's allow-list
  mpfota server key 861234567890123 SERIAL      the device must send device_key=SERIAL
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the reference FOTA server (LuatOS protocol)",
                       description="Serve FOTA packages to LuatOS-style clients (libfota2, "
                                   "update.lua, mpfota) with the IoT platform's rules.",
                       epilog=SERVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _data_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free)")
    p.add_argument("--redirect-base", metavar="URL",
                   help="answer upgrades with 302 to URL + file name (a static copy of "
                        "DATA/files: nginx, object storage, a CDN) instead of the body; stock "
                        "LuatOS boards do not follow the redirect (their HTTP client does not "
                        "follow Location in FOTA mode): use it for mpfota boards")
    p.add_argument("--daily-limit", type=int, default=DAILY_LIMIT, metavar="N",
                   help=f"downloads served in full per device and day before the cyclic "
                        f"ban, code 40 (default {DAILY_LIMIT}; 0: no limit)")
    p.add_argument("--status-page", action="store_true",
                   help="serve a read-only HTML status page at /status (it lists device ids: "
                        "keep it behind the operator's network or proxy)")
    p.add_argument("--quiet", action="store_true", help="no per-request log lines")
    p.set_defaults(func=cmd_serve)

    a = sub.add_parser("server", help="administer the FOTA server's releases and devices",
                       description="Releases, devices, bans and allow-lists of `mpfota serve` "
                                   "(works while the server runs).",
                       epilog=ADMIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    asub = a.add_subparsers(dest="action", metavar="ACTION", required=True)

    pub = asub.add_parser(
        "publish", help="add a package to a release (creating the release)",
        **examples("mpfota server publish app.pkg",
                   "mpfota server publish --project KEY --firmware FOTA2_DEMO_LuatOS-SoC_UNIX "
                   "--version 001.000.001 --core 2.0.0 --from-core 1.0.0 core.pkg"))
    _data_arg(pub)
    pub.add_argument("--project",
                     help="project_key the devices send (default: the package's PROJECT)")
    pub.add_argument("--firmware", help="firmware_name the devices send")
    pub.add_argument("--version",
                     help="script VERSION A.B.C the devices report after the update")
    pub.add_argument("--core", help="core version the package brings (a newer core is an "
                                    "upgrade even with the same script version)")
    pub.add_argument("--from-core",
                     help="installed core this package applies to (default * : any)")
    pub.add_argument("--replace", action="store_true",
                     help="replace the package already published for this release and core")
    pub.add_argument("--opaque", action="store_true",
                     help="with --core: the file is a vendor package whose header this tool "
                          "cannot read (the core version is not checked)")
    pub.add_argument("file", nargs="?",
                     help="the package file (omit: announce, not ready); an mpfota package "
                          "(mpfota pack) supplies the fields its manifest has")
    pub.set_defaults(func=cmd_publish)

    rel = asub.add_parser("releases", help="list releases and their packages",
                          **examples("mpfota server releases --data /srv/fota"))
    _data_arg(rel)
    rel.set_defaults(func=cmd_releases)

    ret = asub.add_parser("retract", help="withdraw a release", **examples(
        "mpfota server retract --project KEY --firmware FW --version 001.000.001"))
    _data_arg(ret)
    ret.add_argument("--project", required=True)
    ret.add_argument("--firmware", required=True)
    ret.add_argument("--version", required=True)
    ret.set_defaults(func=cmd_retract)

    dev = asub.add_parser("devices", help="list the devices seen",
                          **examples("mpfota server devices", "mpfota server devices --json"))
    _data_arg(dev)
    dev.add_argument("--json", action="store_true", help="JSON lines")
    dev.set_defaults(func=cmd_devices)

    for name, helptext, func in (("ban", "ban devices (code 21)", cmd_ban),
                                 ("unban", "lift bans (21 and the cyclic 40)", cmd_unban),
                                 ("forget", "drop devices' registration, counters and bans",
                                  cmd_forget)):
        s = asub.add_parser(name, help=helptext,
                            **examples(f"mpfota server {name} 867361302685621"))
        _data_arg(s)
        s.add_argument("devices", nargs="+", metavar="ID", help="imei / mac / uid")
        s.set_defaults(func=func)

    key = asub.add_parser("key", help="require a device_key from a device (or no longer)",
                          **examples("mpfota server key 867361302685621 SN0123456789",
                                     "mpfota server key --remove 867361302685621"))
    _data_arg(key)
    key.add_argument("--remove", action="store_true", help="no longer require a key")
    key.add_argument("device", metavar="ID", help="imei / mac / uid")
    key.add_argument("key", nargs="?", help="the device_key it sends (update.lua: its serial)")
    key.set_defaults(func=cmd_key)

    for name, helptext, func in (
            ("allow", "add devices to a project's allow-list (none given: list it)", cmd_allow),
            ("disallow", "remove devices from a project's allow-list", cmd_disallow)):
        s = asub.add_parser(name, help=helptext, **examples(
            f"mpfota server {name} --project KEY 867361302685621"))
        _data_arg(s)
        s.add_argument("--project", required=name == "disallow")
        s.add_argument("devices", nargs="*", metavar="ID")
        s.set_defaults(func=func)


def _data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=DEFAULT_DATA, metavar="DIR",
                   help="data directory: fota.db and files/ (default $MPFOTA_SERVER_DATA or "
                        "./mpfota-server)")
    p.add_argument("--db", default=os.environ.get("MPFOTA_SERVER_DB"), metavar="URL",
                   help="keep the state in PostgreSQL (postgresql://USER@HOST/NAME) instead "
                        "of DATA/fota.db, for several server instances (default "
                        "$MPFOTA_SERVER_DB); package files stay in DATA/files")


def _store(args: argparse.Namespace) -> Store:
    if args.db and not is_database_url(args.db):
        raise UserError(f"--db {args.db[:60]!r}: expected postgresql://USER@HOST/NAME")
    try:
        return Store(args.data, args.db)
    except Exception as e:  # noqa: BLE001 - sqlite3, psycopg, OS errors: one line
        where = "the database" if args.db else f"the server data in {args.data}"
        cause = " ".join(str(e).split())[:300]
        raise UserError(f"cannot open {where}: {e.__class__.__name__}: {cause}") from e


def cmd_serve(args: argparse.Namespace) -> int:
    version_rules()
    redirect = args.redirect_base
    if redirect and not urlsplit(redirect).scheme.startswith("http"):
        raise UserError(f"--redirect-base {redirect!r}: expected an http(s):// URL")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: expected 0..65535")
    if args.daily_limit < 0:
        raise UserError(f"--daily-limit {args.daily_limit}: expected 0 (no limit) or more")
    _store(args).close()  # a bad --data or --db: one line before anything listens
    try:
        srv = FotaServer(args.data, host=args.host, port=args.port, redirect_base=redirect,
                         daily_limit=args.daily_limit, db=args.db, status=args.status_page,
                         log=(lambda line: None) if args.quiet else None)
        srv.start()
    except OSError as exc:
        raise UserError(f"cannot serve from {args.data} on {args.host}:{args.port}: "
                        f"{exc.strerror or exc}") from None
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    state = " and PostgreSQL" if args.db else ""
    print(f"mpfota serve: {srv.base} (data {Path(args.data).resolve()}{state})"
          + (f", downloads redirected to {srv.redirect_base}" if redirect else ""),
          file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        srv.stop()
        for s, h in old.items():
            signal.signal(s, h)
    print("mpfota serve: stopped", file=sys.stderr)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    if args.file and not Path(args.file).is_file():
        raise UserError(f"{args.file}: no such file")
    meta = package_metadata(args.file) if args.file else {}
    rel = release_fields(args.project, args.firmware, args.version, args.core, args.from_core,
                         meta, FIELD_MAX)
    if rel.core and args.file:
        check_core(args.file, rel.core, args.opaque)
    store = _store(args)
    sha = file_sha256(args.file) if args.file else None
    change = check_replace(store, rel, sha, args.replace)
    for warning in publish_warnings(store, rel):
        print(f"warning: {warning}", file=sys.stderr)
    try:
        pkg = store.publish(rel.project, rel.firmware, rel.version, core=rel.core,
                            from_core=rel.from_core, file=args.file)
    except ValueError as e:
        raise UserError(str(e)) from e
    state = f"{pkg.file} ({pkg.size} bytes, sha256 {pkg.sha256})" if pkg.file else "not ready (43)"
    verb = {"new": "published", "same": "already published", "replace": "replaced"}[change]
    print(f"{verb} {rel.project} {rel.firmware} {rel.version} from core {pkg.from_core}: "
          f"{state}")
    return 0


def cmd_releases(args: argparse.Namespace) -> int:
    pkgs = _store(args).packages()
    if not pkgs:
        print("no releases")
    for p in pkgs:
        core = f" core {p.core}" if p.core else ""
        file = f"{p.file} {p.size}B sha256 {p.sha256}" if p.file else "(not ready: 43)"
        print(f"#{p.release} {p.project} {p.firmware} {p.version}{core} from {p.from_core}: "
              f"{file}")
    return 0


def cmd_retract(args: argparse.Namespace) -> int:
    if not _store(args).retract(args.project, args.firmware, args.version):
        raise UserError(f"no release {args.project} {args.firmware} {args.version}")
    print(f"retracted {args.project} {args.firmware} {args.version}")
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    devices = _store(args).devices()
    for d in devices:
        if args.json:
            print(json.dumps(d.__dict__, ensure_ascii=False))
            continue
        seen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.last_seen))
        ban = f" BANNED({d.ban})" if d.ban else ""
        print(f"{d.id} project={d.project} fw={d.firmware} v={d.version} last={seen} "
              f"code={'-' if d.last_code is None else d.last_code} requests={d.requests} "
              f"offers_today={d.offers_today}{ban}")
    if not devices and not args.json:
        print("no devices seen")
    return 0


def cmd_ban(args: argparse.Namespace) -> int:
    store = _store(args)
    for d in args.devices:
        store.ban(d, "admin")
        print(f"banned {d}")
    return 0


def cmd_unban(args: argparse.Namespace) -> int:
    store = _store(args)
    for d in args.devices:
        print(f"{'unbanned' if store.unban(d) else 'was not banned:'} {d}")
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    store = _store(args)
    for d in args.devices:
        print(f"{'forgot' if store.forget(d) else 'not seen:'} {d}")
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    if not ID_OK.fullmatch(args.device):
        raise UserError(f"not a device id: {args.device!r}")
    if args.remove == bool(args.key):
        raise UserError("give the device's KEY, or --remove without one")
    if args.key and (len(args.key) > FIELD_MAX or not args.key.isprintable()):
        raise UserError(f"the key: expected printable text up to {FIELD_MAX} characters")
    had = _store(args).set_key(args.device, args.key)
    if args.key:
        print(f"{args.device} must send device_key (set)")
    else:
        print(f"{args.device}: {'no key required now' if had else 'had no key'}")
    return 0


def cmd_allow(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.devices:
        if not args.project:
            raise UserError("--project is required to add devices")
        bad = [d for d in args.devices if not ID_OK.fullmatch(d)]
        if bad:
            raise UserError(f"not a device id: {bad[0]!r}")
        store.allow(args.project, args.devices)
        print(f"allowed under {args.project}: {' '.join(args.devices)}")
        return 0
    for project, device in store.allow_list(args.project):
        print(f"{project} {device}")
    return 0


def cmd_disallow(args: argparse.Namespace) -> int:
    n = _store(args).disallow(args.project, args.devices)
    print(f"removed {n} from the allow-list of {args.project}")
    return 0
