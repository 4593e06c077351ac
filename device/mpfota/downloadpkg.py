# The package side of mpfota.download.fetch, loaded only when a body turns out to be an update
# package (docs/package-format.md): a raw image never loads it, nor the package parser.
from mpfota import package
from mpfota.errors import FOTA_ERROR, FotaError


class Fetch:
    # The update package found in the body: its installer, the first answer's validator, and
    # the whole-file digests when the caller asked for md5 / sha256 (then a retry starts again
    # from byte 0, so that every byte is hashed in one pass). kw: keyword arguments for the
    # Installer (download.fetch's `package`).
    def __init__(self, slot, validator, kw, progress, md5, sha256):
        slot.forget()  # power-cut resume does not apply to packages
        self.inst = package.Installer(slot=slot, progress=progress, **(kw or {}))
        self.validator = validator
        self.want = (md5, sha256)
        self.hashed = None

    def size(self):
        return self.inst.manifest.size

    async def feed(self, resp, offset, head=None):
        src = resp
        if self.want[0] or self.want[1]:
            self.hashed = src = _Hashed(resp, head or b"", self.want)
        if head is None:
            await self.inst.feed(src, offset)
            return
        if len(head) < package.HEADER_SIZE:
            raise package.PackageError(package.TRUNCATED, "package of %d bytes" % len(head))
        await self.inst.feed(src, 0, header=head)

    def resume_offset(self):
        return 0 if self.hashed is not None else self.inst.resume_offset()

    def abort(self):
        self.inst.abort()

    def finish(self, length, switch):
        m = self.inst.manifest
        try:
            if length is not None and m.size != length:
                raise FotaError(FOTA_ERROR, "package of %d bytes, expected %d" % (m.size, length))
            if self.hashed is not None:
                self.hashed.check()
        except FotaError:
            self.inst.abort()
            raise
        return self.inst.commit(switch)


class _Hashed:
    # A response whose body bytes are hashed on the way (the whole package file).
    def __init__(self, resp, head, want):
        import hashlib

        self.resp = resp
        self.want = want
        self.md5 = hashlib.md5(head) if want[0] else None
        self.sha = hashlib.sha256(head) if want[1] else None

    async def readinto(self, mv, n=None):
        n = await self.resp.readinto(mv, n)
        if n:
            if self.md5:
                self.md5.update(mv[:n])
            if self.sha:
                self.sha.update(mv[:n])
        return n

    def check(self):
        import binascii

        for name, h, want in (("md5", self.md5, self.want[0]), ("sha256", self.sha, self.want[1])):
            if h is not None:
                got = binascii.hexlify(h.digest()).decode()
                if got != want.lower():
                    raise FotaError(FOTA_ERROR, "package %s %s, expected %s" % (name, got, want))
