# Packages through download.fetch (the engine's HTTP download): the first bytes tell a package
# from a raw core image; a package is installed, resumed inside its core section after a dropped
# connection, checked against whole-file digests; a bad one switches nothing.
import vb

TIMEOUT = 90
IDENTITY = {"project": "DEMO", "version": "001.000.000"}


def _url(kit, name, tag=None):
    return kit["base"] + kit["packages"][name]["path"] + ("?tag=" + tag if tag else "")


def _nothing_switched():
    import os

    import vpartition
    from mpfota import scripts

    assert vpartition.boot_record() is None
    assert scripts.status() == "valid" and scripts.staged() is None
    try:
        os.stat("/.mpfota/stage")
        raise AssertionError("no staged files may remain")
    except OSError:
        pass


async def test_a_package_url_installs_the_package(vboard, package_kit):
    vb.boot()
    import vpartition
    from mpfota import scripts
    from mpfota.download import fetch
    seen = []
    r = await fetch(_url(package_kit, "both"), package=IDENTITY,
                    progress=lambda done, total: seen.append((done, total)))
    size = package_kit["packages"]["both"]["size"]
    assert (r.status, r.size) == (200, size)
    assert r.manifest.to == {"core": "2.0.0", "script": "001.000.001"}
    assert seen[-1] == (size, size)
    assert vpartition.boot_record() == (1, "new")
    assert scripts.staged()["version"] == "001.000.001"


async def test_a_raw_image_url_still_installs_the_image(vboard, update_server):
    vb.boot()
    import vpartition
    from mpfota.download import fetch
    img = update_server["images"]["core-2.0.0"]
    r = await fetch(update_server["base"] + img["path"], md5=img["md5"], length=img["size"])
    assert (r.status, r.size, r.manifest) == (200, img["size"], None)
    assert vpartition.boot_record() == (1, "new")


async def test_whole_file_digests_and_length(vboard, package_kit):
    entry = package_kit["packages"]["scripts"]
    with open(entry["file"], "rb") as f:
        data = f.read()
    vb.boot()
    import hashlib

    from mpfota.download import fetch
    from mpfota.errors import FotaError
    md5 = vb.md5hex(data)
    for kw, word in (({"md5": "0" * 32}, "md5"), ({"sha256": "1" * 64}, "sha256"),
                     ({"length": len(data) + 1}, "expected")):
        try:
            await fetch(_url(package_kit, "scripts"), package=IDENTITY, **kw)
        except FotaError as e:
            assert e.code == -9 and word in e.msg, e
        else:
            raise AssertionError("%s must be checked" % word)
        _nothing_switched()
    sha = hashlib.sha256(data).digest()
    import binascii

    r = await fetch(_url(package_kit, "scripts"), package=IDENTITY, md5=md5,
                    sha256=binascii.hexlify(sha).decode(), length=len(data))
    assert r.manifest.to["script"] == "001.000.001"


async def test_a_bad_package_switches_nothing(vboard, package_kit):
    vb.boot()
    from mpfota import package
    from mpfota.download import fetch
    for name, reason in (("signature-other-key", "signature"), ("digest-core", "digest"),
                         ("layout", "layout"), ("truncated-scripts", "truncated")):
        kw = dict(IDENTITY)
        if reason == "signature":
            kw["key"] = package_kit["pub_pem"]
        try:
            await fetch(_url(package_kit, name), package=kw, retries=0)
        except package.PackageError as e:
            assert e.reason == reason, (name, e)
        else:
            raise AssertionError(name + " must be refused")
        _nothing_switched()


async def test_dropped_connection_resumes_inside_the_core(vboard, package_kit):
    vb.boot()
    import json

    import board
    from mpfota import http
    from mpfota.download import fetch
    dropped = []

    def drop_once(done, total):
        if not dropped and done > 30000:
            dropped.append(done)
            raise http.HTTPError(http.ERR_CLOSE, "link dropped (test)")

    url = _url(package_kit, "both", "pkgresume")
    r = await fetch(url, package=IDENTITY, progress=drop_once)
    assert r.status == 200 and dropped
    resp = await http.request("GET", package_kit["base"] + "/_requests?tag=pkgresume",
                              bytearray(1024))
    seen = json.loads(await resp.read(8192))
    assert len(seen) == 2
    ranges = [dict((k.lower(), v) for k, v in req["headers"]).get("range") for req in seen]
    assert ranges[0] is None
    start = int(ranges[1][len("bytes="):-1])
    core_at = r.manifest.core.offset
    assert start > core_at and (start - core_at) % 4096 == 0, (start, core_at)
    vb.reboot()
    assert board.core_version() == "2.0.0"


async def _core_delta_rebuilds_the_core(package_kit, kind, streamed):
    vb.boot()
    import os

    import board
    from mpfota import confirm, delta, scripts
    from mpfota.download import fetch

    r = await fetch(_url(package_kit, kind), package=IDENTITY)
    assert r.status == 200 and r.manifest.core.type == "core-delta"
    assert bool(r.manifest.core.fields.get("streamed")) is streamed
    try:
        os.stat(delta.PATCH_PATH)
        raise AssertionError("no patch file is left behind")
    except OSError:
        pass
    assert scripts.staged() is not None
    assert vb.reboot() == 1
    assert board.core_version() == "2.0.0"
    assert confirm.status() == "pending"


async def test_a_core_delta_package_rebuilds_the_core(vboard, package_kit):
    # core-delta + scripts: the patch is stored, checked against the running slot, applied into
    # the spare slot and verified (then removed); at the next boot the new core and the new
    # scripts run.
    await _core_delta_rebuilds_the_core(package_kit, "core-delta", False)


async def test_a_streamed_core_delta_package_rebuilds_the_core(vboard, package_kit):
    # The same with a format-2 patch: applied as the section arrives, nothing stored.
    await _core_delta_rebuilds_the_core(package_kit, "core-delta-streamed", True)


async def test_a_streamed_core_delta_of_the_running_core_installs_the_scripts(vboard,
                                                                               package_kit):
    vb.boot()
    import vpartition
    from mpfota import scripts
    from mpfota.download import fetch

    r = await fetch(_url(package_kit, "same-core-delta-streamed-scripts"), package=IDENTITY)
    assert r.status == 200
    assert vpartition.boot_record() is None  # no core switch
    assert scripts.staged() is not None


def test_the_download_engine_knows_the_package_magic():
    from mpfota import download, package

    assert download._PACKAGE_MAGIC == package.MAGIC
