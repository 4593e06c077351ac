# A download whose file really changes on the server between the drop and the resume
# (tests/fixtures_changing.py: a new release is published right after the first request). The
# resume asks for the rest with If-Range naming the old file; the server answers 200 with the
# whole new file; the engine starts again from 0. Nothing mixed: what is installed is exactly
# the new file. docs/reliability.md.
import vb

TIMEOUT = 90
IDENTITY = {"project": "DEMO", "version": "001.000.000"}


def _headers(req):
    return dict((k.lower(), v) for k, v in req["headers"])


async def _requests(base, tag):
    import json

    from mpfota import http

    resp = await http.request("GET", base + "/_requests?tag=" + tag, bytearray(1024))
    return [_headers(r) for r in json.loads(await resp.read(16384))]


def _slot_sha256(size):
    # SHA-256 of the first `size` bytes of the slot the board switched to.
    import binascii
    import hashlib

    import board

    _, spare = board.ota_slots()
    h = hashlib.sha256()
    buf = bytearray(4096)
    for pos in range(0, size, 4096):
        spare.readblocks(pos // 4096, buf)
        h.update(memoryview(buf)[:min(4096, size - pos)])
    return binascii.hexlify(h.digest()).decode()


async def test_raw_image_changed_between_drop_and_resume(vboard, changing_server):
    vb.boot()
    import board
    import vpartition
    from mpfota import download, journal

    srv = changing_server
    old, new = srv["old"]["image"], srv["new"]["image"]
    url = srv["base"] + old["path"] + "?tag=raw"

    def drop(done, total):
        if done >= 5 * 4096 + 100:
            raise OSError(104)  # the link drops (or the power goes)

    try:
        await download.fetch(url, progress=drop, retries=0, checkpoint=8192)
    except OSError:
        pass
    else:
        raise AssertionError("the first download should have been cut")
    offset = journal.get("dl")["offset"]
    assert offset >= 8192, offset
    r = await download.fetch(url, sha256=new["sha256"], checkpoint=8192)
    assert (r.status, r.size) == (200, new["size"]), (r.status, r.size)
    seen = await _requests(srv["base"], "raw")
    assert len(seen) == 2, seen
    assert seen[1].get("range") == "bytes=%d-" % offset
    assert seen[1].get("if-range") == old["etag"], "the resume must name the file it continues"
    assert _slot_sha256(new["size"]) == new["sha256"], "the slot holds a mix of two files"
    assert vpartition.boot_record() == (1, "new")
    vb.reboot()
    assert board.core_version() == srv["versions"]["image"][1]


async def test_raw_image_changed_before_the_first_checkpoint(vboard, changing_server):
    # The link drops early, before any resume record is due: the retry in the same call still
    # names the file it continues (If-Range from the first answer), so the changed file is
    # fetched whole and nothing is mixed.
    vb.boot()
    import vpartition
    from mpfota import download, http, journal

    srv = changing_server
    old, new = srv["old"]["image"], srv["new"]["image"]
    url = srv["base"] + old["path"] + "?tag=early"
    dropped = []

    def drop(done, total):
        if done >= 3 * 4096 and not dropped:
            dropped.append(done)
            raise http.HTTPError(http.ERR_CLOSE, "link dropped (test)")

    r = await download.fetch(url, sha256=new["sha256"], progress=drop)
    assert dropped and journal.get("dl") is None, "no resume record was due"
    assert (r.status, r.size) == (200, new["size"]), (r.status, r.size)
    seen = await _requests(srv["base"], "early")
    assert len(seen) == 2, seen
    assert seen[1].get("range") == "bytes=%d-" % (3 * 4096)
    assert seen[1].get("if-range") == old["etag"], "the retry must name the file it continues"
    assert _slot_sha256(new["size"]) == new["sha256"], "the slot holds a mix of two files"
    assert vpartition.boot_record() == (1, "new")


async def test_package_changed_between_drop_and_resume(vboard, changing_server):
    vb.boot()
    import board
    import vpartition
    from mpfota import http
    from mpfota.download import fetch

    srv = changing_server
    old, new = srv["old"]["package"], srv["new"]["package"]
    dropped = []

    def drop_once(done, total):
        if not dropped and done > 45000:  # inside the core section, past a checkpoint
            dropped.append(done)
            raise http.HTTPError(http.ERR_CLOSE, "link dropped (test)")

    r = await fetch(srv["base"] + old["path"] + "?tag=pkg", package=IDENTITY, progress=drop_once,
                    checkpoint=8192)  # no whole-file digest: that would restart from 0 anyway
    assert dropped
    assert (r.status, r.size) == (200, new["size"]), (r.status, r.size)
    assert r.manifest.to["core"] == srv["versions"]["package"][1]
    seen = await _requests(srv["base"], "pkg")
    assert len(seen) == 2, seen
    assert seen[1].get("range", "").startswith("bytes="), seen[1]
    assert seen[1].get("if-range") == old["etag"], "the resume must name the file it continues"
    assert vpartition.boot_record() == (1, "new")
    vb.reboot()
    assert board.core_version() == srv["versions"]["package"][1]
