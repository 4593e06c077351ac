# mpfota update packages: parse a package stream in fixed memory, check it, install it.
# The format is docs/package-format.md; the host side is host_tools/mpfota_host/package.py.
#
#   from mpfota import package
#   m = await package.install(stream, project="DEMO", version="001.000.000")
#   m = package.install_file("/update.pkg", project="DEMO", version="001.000.000")
#
# `stream` is anything with a coroutine `readinto(mv, n=None) -> count` (at most n bytes, default
# len(mv), into the start of mv; 0 at the end): the HTTP client's
# Response, or FileStream(open(path, "rb")). One 4 KiB buffer serves the whole package: the
# manifest, the signature, the core section (it is the slot writer's sector buffer) and the
# script files. Everything is checked (manifest CRC, signature when a key is provisioned, the
# device's project, firmware name and layout, versions, anti-rollback counter, sizes) before the
# first byte is written; sections are checked (MD5, SHA-256, read-back, bootable image) before
# anything is switched. A bad package raises PackageError (code -9, a `reason`, a cause) and is
# logged; nothing is switched.
#
# The parsing and checking functions at the top (parse_header, parse_manifest, parse_entry,
# check_path, check_target) are pure: they also run under CPython.
import binascii
import json
import struct

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from mpfota import version as _ver
from mpfota.errors import ALREADY_RUNNING, BASE, DIGEST, FOTA_ERROR, IMAGE, FotaError

MAGIC = b"MPFP"
FORMAT = const(1)
HEADER_SIZE = const(16)
MANIFEST_MAX = const(4096)
SIGNATURE_MAX = const(512)
MAX_SECTIONS = const(4)
MAX_FILES = const(128)
MAX_PATH = const(64)
ENTRY_SIZE = const(6)
ENTRY_FILE = const(1)
BUF_SIZE = const(4096)
_STREAMED_DELTA = b"MPFD\x02"  # a format-2 delta patch (mpfota.deltastream MAGIC + VERSION)
_DELTA_CHUNK = const(512)

SECTION_TYPES = ("core", "core-delta", "scripts")
SUPPORTED = ("core", "core-delta", "scripts")

# PackageError.reason values (docs/package-format.md, "Errors").
FORMAT_ERROR = "format"
TOO_LARGE = "manifest_too_large"
TRUNCATED = "truncated"
OVERFLOW = "overflow"
SIGNATURE = "signature"
PROJECT = "project"
FIRMWARE = "firmware"
LAYOUT = "layout"
ROLLBACK = "rollback"
DOWNGRADE = "downgrade"
CURRENT = "current"
CYCLIC = "cyclic"
UNSUPPORTED = "unsupported"
PENDING = "pending"
SPACE = "space"
IDENTITY = "identity"
USER_DATA = "user_data"

_HEAD = "<4sBBHHHI"  # magic, format, flags, manifest length, signature length, reserved, CRC
_ENTRY = "<BBI"  # kind, path length, size


class PackageError(FotaError):
    def __init__(self, reason, msg):
        super().__init__(FOTA_ERROR, msg, reason)

    def __str__(self):
        return "%d %s: %s" % (self.code, self.reason, self.msg)


# --- pure parsing ------------------------------------------------------------------------------


def is_package(first_bytes):
    # True when a stream starting with these bytes is a package (not a raw core image).
    return bytes(first_bytes[:4]) == MAGIC


def parse_header(head):
    # (manifest length, signature length, crc) from the 16-byte header.
    if len(head) < HEADER_SIZE:
        raise PackageError(TRUNCATED, "package header is %d of %d bytes" % (len(head), HEADER_SIZE))
    magic, fmt, flags, mlen, slen, reserved, crc = struct.unpack_from(_HEAD, head)
    if magic != MAGIC:
        raise PackageError(FORMAT_ERROR, "not an mpfota package (magic %r)" % (magic,))
    if fmt != FORMAT:
        raise PackageError(UNSUPPORTED, "package format %d (this client reads %d)" % (fmt, FORMAT))
    if flags or reserved:
        raise PackageError(UNSUPPORTED, "package header uses flags this client does not know")
    if mlen > MANIFEST_MAX:
        raise PackageError(TOO_LARGE, "manifest too large: %d bytes (at most %d)"
                           % (mlen, MANIFEST_MAX))
    if mlen == 0:
        raise PackageError(FORMAT_ERROR, "empty manifest")
    if slen > SIGNATURE_MAX:
        raise PackageError(FORMAT_ERROR, "signature of %d bytes (at most %d)"
                           % (slen, SIGNATURE_MAX))
    return mlen, slen, crc


def header_crc(head, manifest):
    # CRC-32 of header bytes 0..11 and the manifest (the value stored in header bytes 12..15).
    return binascii.crc32(manifest, binascii.crc32(bytes(head[:12]))) & 0xFFFFFFFF


class Section:
    def __init__(self, d, offset):
        self.type = d["type"]
        self.size = d["size"]
        self.md5 = d["md5"]
        self.sha256 = d["sha256"]
        self.offset = offset  # from the start of the package
        self.fields = d  # everything, including fields of other section types

    def __repr__(self):
        return "<section %s %d bytes at %d>" % (self.type, self.size, self.offset)


class Manifest:
    # Validated manifest: project, firmware_name, frm / to ({"core", "script"}: str or absent),
    # counter, sections (in stream order), keep (script paths never overwritten), size (of the
    # whole package), raw (the dict as read).
    def section(self, kind):
        for s in self.sections:
            if s.type == kind:
                return s
        return None

    @property
    def core(self):
        return self.section("core") or self.section("core-delta")

    @property
    def scripts(self):
        return self.section("scripts")


def _bad(msg):
    raise PackageError(FORMAT_ERROR, "manifest: " + msg)


def _str(d, key, limit, required=True):
    v = d.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not 1 <= len(v) <= limit:
        _bad("%s must be a string of 1 to %d characters" % (key, limit))
    return v


def _uint(d, key, default=None, limit=0xFFFFFFFF):
    v = d.get(key, default)
    if type(v) is not int or not 0 <= v <= limit:
        _bad("%s must be an integer from 0 to %d" % (key, limit))
    return v


def _hexdigest(d, key, n):
    v = d.get(key)
    if not isinstance(v, str) or len(v) != n:
        _bad("%s must be %d hex digits" % (key, n))
    v = v.lower()
    for ch in v:
        if ch not in "0123456789abcdef":
            _bad("%s must be %d hex digits" % (key, n))
    d[key] = v
    return v


def _versions(d, key):
    v = d.get(key, {})
    if not isinstance(v, dict):
        _bad("%s must be an object" % key)
    out = {}
    core = _str(v, "core", 32, False)
    if core is not None:
        out["core"] = core
    script = v.get("script")
    if script is not None:
        why = _ver.check(script)
        if why:
            _bad("%s.script: %s" % (key, why))
        out["script"] = script
    return out


def check_path(path):
    # A script path from a package: relative, "/"-separated, no "." / ".." / empty parts, not
    # inside mpfota's own folder. Returns the path; PackageError otherwise.
    if isinstance(path, (bytes, bytearray, memoryview)):
        try:
            path = bytes(path).decode()
        except UnicodeError:
            raise PackageError(FORMAT_ERROR, "script path is not UTF-8")
    if not isinstance(path, str) or not 1 <= len(path.encode()) <= MAX_PATH:
        raise PackageError(FORMAT_ERROR, "script path must be 1 to %d bytes" % MAX_PATH)
    for ch in path:
        if ch < " " or ch in "\\:*?\"<>|\x7f":
            raise PackageError(FORMAT_ERROR, "script path %r has a forbidden character" % path)
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise PackageError(FORMAT_ERROR, "script path %r is not a plain relative path" % path)
    if path.split("/")[0] == ".mpfota":
        raise PackageError(FORMAT_ERROR, "script path %r is inside /.mpfota" % path)
    return path


def parse_manifest(raw, signature_length=0):
    # Manifest from its bytes (JSON); PackageError with the cause when anything is malformed.
    try:
        d = json.loads(bytes(raw))
    except (ValueError, UnicodeError):
        raise PackageError(FORMAT_ERROR, "manifest is not valid JSON")
    if not isinstance(d, dict):
        _bad("not a JSON object")
    if d.get("format") != FORMAT:
        from mpfota.brief import brief  # the value may be anything JSON holds

        raise PackageError(UNSUPPORTED, "manifest format %s (this client reads %d)"
                           % (brief(d.get("format")), FORMAT))
    m = Manifest()
    m.raw = d
    m.project = _str(d, "project", 64)
    m.firmware_name = _str(d, "firmware_name", 128)
    m.frm = _versions(d, "from")
    m.to = _versions(d, "to")
    m.counter = _uint(d, "counter", 0)
    secs = d.get("sections")
    if not isinstance(secs, list) or not 1 <= len(secs) <= MAX_SECTIONS:
        _bad("sections must be a list of 1 to %d sections" % MAX_SECTIONS)
    offset = HEADER_SIZE + len(raw) + signature_length
    m.sections = []
    m.keep = []
    seen = []
    for s in secs:
        if not isinstance(s, dict):
            _bad("a section is not an object")
        kind = s.get("type")
        if kind not in SECTION_TYPES:
            from mpfota.brief import brief

            raise PackageError(UNSUPPORTED, "unknown section type %s" % brief(kind))
        group = "core" if kind in ("core", "core-delta") else kind
        if group in seen:
            _bad("more than one %s section" % group)
        seen.append(group)
        size = _uint(s, "size")
        if size == 0:
            _bad("%s section is empty" % kind)
        _hexdigest(s, "md5", 32)
        _hexdigest(s, "sha256", 64)
        if kind == "core-delta":
            _hexdigest(s, "base_sha256", 64)
        if kind == "scripts":
            files = _uint(s, "files", None, MAX_FILES)
            if files == 0:
                _bad("scripts section holds no file")
            _uint(s, "unpacked")
            keep = s.get("keep", [])
            if not isinstance(keep, list) or len(keep) > MAX_FILES:
                _bad("keep must be a list of paths")
            for p in keep:
                m.keep.append(check_path(p))
        m.sections.append(Section(s, offset))
        offset += size
    m.size = offset
    if m.core is not None and "core" not in m.to:
        _bad("a core section needs to.core")
    if m.scripts is not None and "script" not in m.to:
        _bad("a scripts section needs to.script")
    return m


def parse_entry(head):
    # (path length, file size) from a 6-byte script entry header.
    kind, plen, size = struct.unpack_from(_ENTRY, head)
    if kind != ENTRY_FILE:
        raise PackageError(FORMAT_ERROR, "unknown script entry kind %d" % kind)
    if not 1 <= plen <= MAX_PATH:
        raise PackageError(FORMAT_ERROR, "script path length %d (1 to %d)" % (plen, MAX_PATH))
    return plen, size


def check_target(m, device):
    # Does package manifest `m` fit this device? `device`: {"project", "firmware_name", "core",
    # "script" (current VERSION or None), "min_counter"}. Raises PackageError with the reason.
    if m.project != device["project"]:
        raise PackageError(PROJECT, "package for project %s, this device runs %s"
                           % (m.project, device["project"]))
    dev_base, dev_layout = _ver.split_layout(device["firmware_name"])
    pkg_base, pkg_layout = _ver.split_layout(m.firmware_name)
    if dev_base != pkg_base:
        raise PackageError(FIRMWARE, "package for firmware %s, this device is %s"
                           % (m.firmware_name, device["firmware_name"]))
    if dev_layout != pkg_layout:
        raise PackageError(LAYOUT, "package for partition layout _%s, this device has layout _%s"
                           " (a firmware never takes a package of another layout)"
                           % (pkg_layout, dev_layout))
    if m.counter < device["min_counter"]:
        raise PackageError(ROLLBACK, "anti-rollback: package counter %d is below this device's "
                           "minimum %d" % (m.counter, device["min_counter"]))
    for s in m.sections:
        if s.type not in SUPPORTED:
            raise PackageError(UNSUPPORTED, "%s sections are not supported by this client yet"
                               % s.type)
    core = device["core"]
    script = device["script"]
    if (m.scripts is not None or "script" in m.frm or "script" in m.to) and script is None:
        raise PackageError(IDENTITY, "the running script VERSION is unknown (pass version=)")
    if "core" in m.frm and m.frm["core"] != core:
        raise PackageError(BASE, "package built for core %s, this device runs core %s"
                           % (m.frm["core"], core))
    if "script" in m.frm and m.frm["script"] != script:
        raise PackageError(BASE, "package built for script %s, this device runs %s"
                           % (m.frm["script"], script))
    new_core = m.to.get("core")
    if m.core is not None:
        c = _ver.compare_core(new_core, core)
        if c is not None and c < 0:
            raise PackageError(DOWNGRADE, "core %s is older than the running core %s"
                               % (new_core, core))
        if c == 0 and m.scripts is None:
            raise PackageError(CURRENT, "this device already runs core %s" % core)
    if m.scripts is not None:
        new = m.to["script"]
        if m.core is None and new_core is not None and new_core != core:
            raise PackageError(BASE, "script set %s needs core %s, this device runs core %s"
                               % (new, new_core, core))
        if not _ver.is_upgrade(script, new):
            if m.core is not None and new_core != core:
                raise PackageError(CYCLIC, "cyclic upgrade refused: the package pairs script %s, "
                                   "not newer than the running %s, with core %s (seed 001 §7.3: "
                                   "the device would report an old version and be offered this "
                                   "package again)" % (new, script, new_core))
            if new == script:
                raise PackageError(CURRENT, "this device already runs script %s" % script)
            raise PackageError(DOWNGRADE, "script %s is not an upgrade of %s (A2 == A1 and "
                               "C2 > C1, or A2 > A1 and C2 >= C1)" % (new, script))
    elif "script" in m.to and m.to["script"] != script:
        raise PackageError(BASE, "core package made for script %s, this device runs %s"
                           % (m.to["script"], script))


# --- device side -------------------------------------------------------------------------------

def min_counter():
    # The persisted anti-rollback minimum (0 when none was ever recorded): journal "min".
    from mpfota import journal

    n = journal.get("min")
    return n if isinstance(n, int) else 0


def _raise_counter(n):
    from mpfota import journal

    if n > min_counter():
        journal.put("min", n)


def provisioned_key():
    # The public key provisioned on this board, or None: a module `mpfota_key` (frozen into the
    # firmware; KEY = PEM or DER), else /.mpfota/pubkey.pem or /.mpfota/pubkey.der.
    from mpfota import rsa

    try:
        import mpfota_key

        return rsa.load_public_key(mpfota_key.KEY)
    except ImportError:
        pass
    for name in ("/.mpfota/pubkey.pem", "/.mpfota/pubkey.der"):
        try:
            with open(name, "rb") as f:
                data = f.read()
        except OSError:
            continue
        return rsa.load_public_key(data)
    return None


def _luatos_globals():
    # PROJECT and VERSION as the application set them in lsys (the LuatOS globals), if it did.
    import sys

    m = sys.modules.get("lsys")
    if m is None:
        return {}
    return {"PROJECT": getattr(m, "PROJECT", None), "VERSION": getattr(m, "VERSION", None)}


def _layout():
    import board

    f = getattr(board, "layout", None)
    if f is None:
        return "1"  # one partition layout per board until the board says otherwise
    return f() if callable(f) else f


def _change(m, what):
    # "1.0.0 -> 2.0.0", "any -> 2.0.0" or "unchanged", for log lines.
    if what not in m.to:
        return "unchanged"
    return "%s -> %s" % (m.frm.get(what, "any"), m.to[what])


class FileStream:
    # A file (or any object with a blocking readinto) as a package stream.
    def __init__(self, f):
        self.f = f

    async def readinto(self, mv, n=None):
        return self.f.readinto(mv, n if n is not None else len(mv)) or 0


class Installer:
    """Parses one package from a stream and installs it.

        inst = Installer(project="DEMO", version="001.000.000")
        await inst.feed(stream)          # header, manifest, signature, checks, sections
        inst.commit()                    # anti-rollback, stage the scripts, switch the core

    After a dropped connection, feed() again with a stream that starts at resume_offset()
    (an HTTP Range request) continues: the core section from its last written sector, the
    script section from its start, anything before the sections from byte 0.

    project, version (the running script VERSION), firmware_name: the device. project and
    version default to lsys.PROJECT / lsys.VERSION (when the app imported lsys), then to the
    installed script set's record; firmware_name to the record's, then to
    PROJECT_LuatOS-SoC_<bsp>_<layout> (layout: board.layout() when the board has it, else 1).
    key: a public key (PEM, DER or rsa.PublicKey); default: the provisioned one. keep: paths of
    user files a new script set never overwrites. slot: the mpfota.slot.Slot to write the core
    into (its sector buffer is used for everything); buf: a 4096-byte buffer otherwise.
    """

    def __init__(self, project=None, version=None, firmware_name=None, key=None, keep=(),
                 slot=None, buf=None, progress=None):
        self.project = project
        self.version = version
        self.firmware_name = firmware_name
        self.key = key
        self.keep = list(keep)
        self.slot = slot
        if slot is not None:
            buf = slot.buf
        self.buf = buf if buf is not None else bytearray(BUF_SIZE)
        if len(self.buf) != BUF_SIZE:
            raise ValueError("the package buffer must be %d bytes" % BUF_SIZE)
        self.mv = memoryview(self.buf)
        self.progress = progress
        self.stager = None
        self._restart()

    def _restart(self):
        self.manifest = None
        self.core_same = False  # the core section is the running image: nothing to switch
        self.pos = 0  # bytes of the package consumed
        self.index = 0  # section being read
        self.done = False

    # -- reading --

    async def _read(self, stream, mv):
        # Exactly len(mv) bytes, else PackageError(TRUNCATED).
        got = 0
        n = len(mv)
        while got < n:
            k = await stream.readinto(mv[got:])
            if not k:
                raise PackageError(TRUNCATED, "package ends at byte %d; %d more expected"
                                   % (self.pos + got, n - got))
            got += k
        self.pos += n
        self._progress()

    def _progress(self):
        if self.progress and self.manifest is not None:
            self.progress(self.pos, self.manifest.size)

    async def feed(self, stream, offset=0, header=None):
        # Read the package from `stream`, which starts at package byte `offset` (0, or
        # resume_offset() after an interruption). `header`: the first 16 bytes when the caller
        # has already read them from `stream` (to tell a package from a raw image).
        # Raises PackageError for a bad package, or whatever the stream raises.
        from mpfota import log

        if offset == 0:
            self._restart()
        elif offset != self.resume_offset():
            raise ValueError("resume at %d, expected %d" % (offset, self.resume_offset()))
        else:
            self._rewind()
        try:
            if self.manifest is None:
                await self._head(stream, header)
            while self.index < len(self.manifest.sections):
                s = self.manifest.sections[self.index]
                if s.type == "core":
                    await self._core(stream, s)
                elif s.type == "core-delta":
                    await self._delta(stream, s)
                else:
                    await self._scripts(stream, s)
                self.index += 1
            await self._end(stream)
        except PackageError as e:
            log.error("fota", "package refused (%s): %s" % (e.reason, e.msg))
            self.abort()
            raise
        self.done = True
        return self.manifest

    def resume_offset(self):
        # Where a new stream must start to continue after an interruption.
        m = self.manifest
        if m is None or self.done:
            return 0
        if self.index >= len(m.sections):
            return m.size
        s = m.sections[self.index]
        if s.type == "core" and self.slot is not None:
            return s.offset + self.slot.drop_partial()
        return s.offset

    def _rewind(self):
        m = self.manifest
        if self.index < len(m.sections):
            s = m.sections[self.index]
            self.pos = s.offset
            if s.type == "core":
                self.pos += self.slot.drop_partial()
        else:
            self.pos = m.size

    async def _head(self, stream, header):
        import hashlib
        from mpfota import log, rsa

        mv = self.mv
        if header is not None:
            mv[:HEADER_SIZE] = header[:HEADER_SIZE]
            self.pos = HEADER_SIZE
        else:
            await self._read(stream, mv[:HEADER_SIZE])
        mlen, slen, crc = parse_header(mv[:HEADER_SIZE])
        head = bytes(mv[:12])
        await self._read(stream, mv[:mlen])
        raw = bytes(mv[:mlen])
        if header_crc(head, raw) != crc:
            raise PackageError(DIGEST, "manifest CRC-32 does not match the header")
        try:
            key = rsa.load_public_key(self.key) if self.key is not None else provisioned_key()
        except ValueError as e:  # fail closed: a key is there but unusable
            raise PackageError(SIGNATURE, "the public key cannot be used (%s)" % e)
        sig = None
        if slen:
            await self._read(stream, mv[:slen])
            sig = bytes(mv[:slen])
        if key is not None:
            if sig is None:
                raise PackageError(SIGNATURE, "package is not signed and this device requires "
                                   "a signature")
            if not rsa.verify(key, hashlib.sha256(raw).digest(), sig, prehashed=True):
                raise PackageError(SIGNATURE, "bad signature: the manifest was not signed by "
                                   "the provisioned key")
            log.info("fota", "package signature verified")
        elif sig is not None:
            log.warn("fota", "package is signed but no public key is provisioned: not checked")
        m = parse_manifest(raw, slen)
        self._precheck(m)
        self.manifest = m
        log.info("fota", "package for %s, %d bytes: core %s, script %s" % (
            m.firmware_name, m.size, _change(m, "core"), _change(m, "script")))

    def device(self):
        # The facts check_target() compares a manifest with.
        import board
        from mpfota import scripts

        cur = scripts.installed() or {}
        g = _luatos_globals()
        project = self.project or g.get("PROJECT") or cur.get("project")
        if not project:
            raise PackageError(IDENTITY, "the device's PROJECT is unknown (pass project=, or "
                               "set lsys.PROJECT)")
        name = self.firmware_name or cur.get("firmware_name") or _ver.firmware_name(
            project, board.bsp(), _layout())
        script = self.version or g.get("VERSION") or cur.get("version")
        return {"project": project, "firmware_name": name, "core": board.core_version(),
                "script": script, "min_counter": min_counter()}

    def _precheck(self, m):
        # Everything that can be known before writing: refuse now, with nothing erased.
        import os

        from mpfota.slot import unconfirmed

        what = unconfirmed()
        if what:
            raise PackageError(PENDING, "the running %s is not confirmed yet" % what)
        check_target(m, self.device())
        if m.core is not None:
            if self.slot is None:
                from mpfota.slot import Slot

                self.slot = Slot(self.buf)
            cap = self.slot.capacity
            if m.core.size > cap:
                raise PackageError(SPACE, "core section of %d bytes does not fit the slot (%d)"
                                   % (m.core.size, cap))
            if m.core.type == "core-delta" and not m.core.fields.get("streamed"):
                st = os.statvfs("/")
                if m.core.size + 2 * st[0] > st[0] * st[4]:
                    raise PackageError(SPACE, "the core-delta section (%d bytes) needs that much "
                                       "free space in the filesystem" % m.core.size)
        s = m.scripts
        if s is not None:
            st = os.statvfs("/")
            free = st[0] * st[4]
            need = s.fields["unpacked"] + 2 * st[0]
            if need > free:
                raise PackageError(SPACE, "script set needs %d bytes, %d free" % (need, free))

    async def _core(self, stream, s):
        slot = self.slot
        if self.pos == s.offset:
            slot.restart()
        start = slot.written
        try:
            got = await slot.pour(stream, s.size, self._section_progress(s, start))
        except FotaError as e:
            if e.code != ALREADY_RUNNING:
                raise
            await self._skip_core(stream, s, slot.mv[:slot.fill])
            return
        self.pos += got - start
        if got < s.size:
            raise PackageError(TRUNCATED, "package ends inside the core section (%d of %d "
                               "bytes)" % (got, s.size))
        try:
            slot.verify(s.size, s.md5, s.sha256)
        except FotaError as e:
            raise PackageError(e.reason or IMAGE, "core section: " + e.msg)
        self._check_core_version()

    async def _skip_core(self, stream, s, head):
        # The core section is the image the board runs (the door refused it before writing):
        # read past it, still checking its digests, and install the rest without a switch.
        import hashlib

        md5 = hashlib.md5(head)
        sha = hashlib.sha256(head)
        self.pos = s.offset + len(head)
        left = s.size - len(head)
        mv = self.mv
        while left:
            d = mv[:left if left < BUF_SIZE else BUF_SIZE]
            await self._read(stream, d)
            md5.update(d)
            sha.update(d)
            left -= len(d)
        for name, h, want in (("md5", md5, s.md5), ("sha256", sha, s.sha256)):
            got = binascii.hexlify(h.digest()).decode()
            if got != want:
                raise PackageError(DIGEST, "core section %s %s, expected %s" % (name, got, want))
        self._same_core()

    def _same_core(self):
        from mpfota import log

        self.slot.restart()
        self.core_same = True
        log.info("fota", "package core is the running image: only its scripts are installed")

    def _section_progress(self, s, start):
        # progress(done, total) of the whole package while the slot takes the core section.
        if not self.progress:
            return None
        base = s.offset
        size = self.manifest.size
        return lambda done, _total: self.progress(base + done, size)

    def _check_core_version(self):
        # The manifest's to.core is a claim the version rules judged; the image's own header
        # says what will boot. They must agree, or the rules judged the wrong version (and a
        # core+scripts set would be dropped at boot as "the core update did not take").
        want = self.manifest.to["core"]
        got = self.slot.image_version()
        if got is None:
            from mpfota import log

            log.warn("fota", "the core image names no version: taking the manifest's", want)
        elif got != want:
            raise PackageError(IMAGE, "the manifest names core %s but the image's header says %s"
                               % (want, got))

    async def _delta(self, stream, s):
        # A core-delta section: stored in delta.PATCH_PATH (its digests checked), then the new
        # core is rebuilt from the running slot into the spare one and verified (mpfota.delta);
        # commit() switches it like a full core section. The patch file is removed either way.
        # A format-2 patch (its first bytes say) is applied as it arrives instead.
        import hashlib
        import os

        from mpfota import delta

        self.pos = s.offset
        md5 = hashlib.md5()
        sha = hashlib.sha256()
        mv = self.mv
        first = memoryview(bytearray(min(s.size, len(_STREAMED_DELTA))))  # the format: magic
        await self._read(stream, first)
        if bytes(first) == _STREAMED_DELTA:
            await self._delta_streamed(stream, s, first, md5, sha)
            return
        md5.update(first)
        sha.update(first)
        left = s.size - len(first)
        try:
            os.mkdir("/.mpfota")
        except OSError:
            pass
        try:
            with open(delta.PATCH_PATH, "wb") as f:
                f.write(first)
                while left:
                    d = mv[:left if left < BUF_SIZE else BUF_SIZE]
                    await self._read(stream, d)
                    md5.update(d)
                    sha.update(d)
                    f.write(d)
                    left -= len(d)
        except OSError as e:
            raise PackageError(SPACE, "cannot store the core-delta section: %r" % (e,))
        try:
            self._delta_digests(md5, sha, s)
            try:
                self._delta_base(delta.read_header(delta.PATCH_PATH, self.buf).from_sha256, s)
                delta.apply(delta.PATCH_PATH, self.slot, switch=False)
            except PackageError:
                raise
            except FotaError as e:
                if e.code != ALREADY_RUNNING:
                    raise PackageError(e.reason or IMAGE, "core-delta section: " + e.msg)
                self._same_core()
                return
            self._check_core_version()
        finally:
            try:
                os.remove(delta.PATCH_PATH)
            except OSError:
                pass

    async def _delta_streamed(self, stream, s, d, md5, sha):
        # Feed the section through deltastream's Applier into the slot as it arrives (no
        # file), yielding once per sector; the section's digests and the manifest's base are
        # checked before commit() can switch. A dropped connection starts the section again.
        # Its own read buffer: self.buf is the slot's sector buffer, which the apply fills.
        import asyncio

        from mpfota import deltafetch
        from mpfota.deltastream import PatchError

        slot = self.slot
        slot.restart()
        ap = deltafetch.applier(slot)
        chunk = memoryview(bytearray(_DELTA_CHUNK))
        left = s.size
        same = False  # the door found the running image: read past the rest
        try:
            while True:
                md5.update(d)
                sha.update(d)
                left -= len(d)
                off = 0
                while off < len(d) and not same:
                    off += ap.feed(d[off:])
                    if ap.h is not None and ap.unit == 0 and ap.out_at == 0:
                        self._delta_base(ap.h.from_sha256, s)
                    try:
                        while ap.step():
                            await asyncio.sleep(0)
                    except FotaError as e:
                        if e.code != ALREADY_RUNNING:
                            raise
                        same = True
                if not left:
                    break
                d = chunk[:left if left < _DELTA_CHUNK else _DELTA_CHUNK]
                await self._read(stream, d)
            self._delta_digests(md5, sha, s)
            if same:
                self._same_core()
                return
            ap.end()
            slot.verify(ap.h.to_size, sha256=binascii.hexlify(ap.h.to_sha256).decode())
        except PatchError as e:
            raise PackageError(BASE if e.wrong_base else IMAGE,
                               "core-delta section: delta: %s" % e)
        except FotaError as e:
            raise PackageError(e.reason or IMAGE, "core-delta section: " + e.msg)
        self._check_core_version()

    def _delta_base(self, from_sha256, s):
        if binascii.hexlify(from_sha256).decode() != s.fields["base_sha256"]:
            raise PackageError(BASE, "the patch's base differs from the manifest's base_sha256")

    def _delta_digests(self, md5, sha, s):
        for name, h, want in (("md5", md5, s.md5), ("sha256", sha, s.sha256)):
            got = binascii.hexlify(h.digest()).decode()
            if got != want:
                raise PackageError(DIGEST, "core-delta section %s %s, expected %s"
                                   % (name, got, want))

    async def _scripts(self, stream, s):
        import hashlib

        from mpfota import scripts

        if self.stager is None:
            self.stager = scripts.Stager()
        st = self.stager
        st.begin(self.manifest.keep + list(self.keep))
        self.pos = s.offset
        md5 = hashlib.md5()
        sha = hashlib.sha256()
        mv = self.mv
        left = s.size
        files = 0
        unpacked = 0
        want_files = s.fields["files"]
        want_bytes = s.fields["unpacked"]
        while left:
            if left < ENTRY_SIZE:
                raise PackageError(OVERFLOW, "script entry header crosses the end of the section")
            h = mv[:ENTRY_SIZE]
            await self._read(stream, h)
            md5.update(h)
            sha.update(h)
            plen, size = parse_entry(h)
            left -= ENTRY_SIZE
            if plen + size > left:
                raise PackageError(OVERFLOW, "script entry of %d bytes runs past the end of the "
                                   "section (%d left)" % (plen + size, left))
            p = mv[:plen]
            await self._read(stream, p)
            md5.update(p)
            sha.update(p)
            path = check_path(p)
            left -= plen + size
            files += 1
            unpacked += size
            if files > want_files or unpacked > want_bytes:
                raise PackageError(OVERFLOW, "script section holds more than the manifest says "
                                   "(%d files, %d bytes)" % (want_files, want_bytes))
            if path in st.files:
                raise PackageError(FORMAT_ERROR, "script %s appears twice" % path)
            try:
                st.open(path)
            except ValueError as e:
                raise PackageError(USER_DATA, "the script set would replace user data: %s" % e)
            except OSError as e:
                raise PackageError(SPACE, "cannot stage %s: %r" % (path, e))
            try:
                while size:
                    k = size if size < BUF_SIZE else BUF_SIZE
                    d = mv[:k]
                    await self._read(stream, d)
                    md5.update(d)
                    sha.update(d)
                    st.write(d)
                    size -= k
                st.close()
            except OSError as e:
                raise PackageError(SPACE, "cannot stage %s: %r" % (path, e))
        if files != want_files or unpacked != want_bytes:
            raise PackageError(FORMAT_ERROR, "script section holds %d files / %d bytes, the "
                               "manifest says %d / %d" % (files, unpacked, want_files, want_bytes))
        got = binascii.hexlify(md5.digest()).decode()
        if got != s.md5:
            raise PackageError(DIGEST, "scripts section md5 %s, expected %s" % (got, s.md5))
        got = binascii.hexlify(sha.digest()).decode()
        if got != s.sha256:
            raise PackageError(DIGEST, "scripts section sha256 %s, expected %s" % (got, s.sha256))

    async def _end(self, stream):
        n = await stream.readinto(self.mv[:1])
        if n:
            raise PackageError(OVERFLOW, "bytes after the last section (the manifest says the "
                               "package is %d bytes)" % self.manifest.size)

    def abort(self):
        # Forget a failed install: the staged files are removed; nothing was switched.
        if self.stager is not None:
            self.stager.abort()

    def commit(self, switch=True):
        # Everything is verified: stage the script set for the next boot, switch the core slot
        # (when `switch`; on ESP32 set_boot() checks the image there, and a refusal un-stages
        # the scripts), raise the anti-rollback minimum. Returns the manifest.
        from mpfota import log, scripts

        m = self.manifest
        if not self.done:
            raise PackageError(FORMAT_ERROR, "commit() before the whole package was read")
        if m.scripts is not None:
            scripts.commit(self.stager.files, m.to["script"], m.project, m.firmware_name,
                           keep=m.keep + self.keep, core=m.to.get("core") if m.core else None)
        if m.core is not None and switch and not self.core_same:
            try:
                self.slot.switch(m.to["core"])
            except FotaError as e:
                if m.scripts is not None:
                    scripts.discard()
                log.error("fota", "package refused (%s): core section: %s" % (e.reason, e.msg))
                raise PackageError(e.reason or IMAGE, "core section: " + e.msg)
        _raise_counter(m.counter)
        log.info("fota", "package installed: core %s, script %s - reset to apply"
                 % (m.to.get("core", "unchanged"), m.to.get("script", "unchanged")))
        return m


async def install(stream, switch=True, **kw):
    # Read, check and install a whole package from `stream`; returns its Manifest.
    # Keyword arguments as Installer's. Raises PackageError (logged) for a bad package.
    inst = Installer(**kw)
    try:
        await inst.feed(stream)
        return inst.commit(switch)
    except Exception:
        inst.abort()
        raise


def install_file(path, switch=True, **kw):
    # install() from a package file on the device's filesystem.
    import asyncio

    with open(path, "rb") as f:
        return asyncio.run(install(FileStream(f), switch, **kw))
