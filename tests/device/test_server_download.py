# The virtual board updates through `mpfota serve` (tests/fixtures_server.py: board_fota), with
# the engine's mpfota.download.fetch and a libfota2 query: straight from the server, and through
# its 302 to a real nginx (resumed with Range + If-Range across the redirect).
import vb

TIMEOUT = 90
LATEST = {"code": 27, "msg": "\u5df2\u662f\u6700\u65b0\u7248\u672c"}  # 已是最新版本


def _url(base, fx, version=None):
    # The URL libfota2 builds for a custom server: <url>imei=..&project_key=..&firmware_name=..
    # &version=<core>.<X>.<Z>, with opts.url = base + "/upgrade?".
    import board
    from mpfota import version as ver

    if version is None:
        version = ver.report_version(board.core_version(), fx["script"])
    return "%s/upgrade?imei=%s&project_key=%s&firmware_name=%s&version=%s" % (
        base, board.imei(), fx["project"], fx["firmware"], version)


async def _text(url):
    from mpfota import http

    resp = await http.request("GET", url, bytearray(1024))
    try:
        return resp.status, (await resp.read(16384)).decode()
    finally:
        await resp.aclose()


async def test_update_through_server_then_latest(vboard, board_fota):
    vb.boot()
    import json

    import board
    import vpartition
    from mpfota import confirm, download

    img = board_fota["images"]["core-2.0.0"]
    url = _url(board_fota["base"], board_fota)
    assert "version=1.0.0.001.000" in url
    r = await download.fetch(url, md5=img["md5"], sha256=img["sha256"], length=img["size"])
    assert (r.status, r.size) == (200, img["size"])
    assert vpartition.boot_record() == (1, "new")
    vb.reboot()
    assert board.core_version() == "2.0.0"
    confirm.confirm()
    # The board now reports core 2.0.0: the server says "already the latest" (code 27) and
    # nothing is written.
    r = await download.fetch(_url(board_fota["base"], board_fota))
    assert r.status == 404 and r.size == 0, (r.status, r.body)
    assert json.loads(r.body) == LATEST, r.body
    assert vpartition.boot_record() == (1, "valid"), "nothing switched"


async def test_package_chosen_by_installed_core(vboard, board_fota):
    vb.boot()
    import vpartition
    from mpfota import download

    # A board on core 1.5.0 gets the package made for 1.5.0 (its digests verify) ...
    other = board_fota["images"]["core-2.0.0-from-1.5"]
    r = await download.fetch(_url(board_fota["base"], board_fota, "1.5.0.001.000"),
                             md5=other["md5"], sha256=other["sha256"], switch=False)
    assert (r.status, r.size) == (200, other["size"])
    assert vpartition.boot_record() is None
    # ... this board, on 1.0.0, the one made for 1.0.0; a core with no package: code 27.
    img = board_fota["images"]["core-2.0.0"]
    r = await download.fetch(_url(board_fota["base"], board_fota), md5=img["md5"])
    assert (r.status, r.size) == (200, img["size"])
    r = await download.fetch(_url(board_fota["base"], board_fota, "1.7.0.001.000"))
    assert r.status == 404 and '"code": 27' in r.body


async def test_redirect_to_nginx_with_resume(vboard, board_fota):
    vb.boot()
    import vpartition
    from mpfota import download, journal

    img = board_fota["images"]["core-2.0.0"]
    url = _url(board_fota["redirect_base"], board_fota)

    def stop_early(done, total):
        if done >= 5 * 4096 + 100:
            raise OSError(104)  # the link drops

    try:
        await download.fetch(url, progress=stop_early, retries=0, checkpoint=8192)
    except OSError:
        pass
    offset = journal.get("dl")["offset"]
    assert offset > 0 and offset % 8192 == 0
    # The same URL again: the engine asks the FOTA server with Range + If-Range, follows the
    # 302 to nginx with both headers, and nginx answers 206 from the saved offset.
    r = await download.fetch(url, md5=img["md5"], sha256=img["sha256"], checkpoint=8192)
    assert (r.status, r.size) == (200, img["size"])
    assert vpartition.boot_record() == (1, "new")
    status, log = await _text(board_fota["nginx"] + "/_access.log")
    assert status == 200
    hits = [line for line in log.splitlines() if line.startswith("GET /fota/")]
    assert len(hits) == 2, log
    assert " 200 range=- " in hits[0], hits[0]
    # (nginx writes the quote of the ETag as \x22)
    assert " 206 range=bytes=%d- if_range=\\x22" % offset in hits[1], hits[1]
    assert "sent=%d" % (img["size"] - offset) in hits[1], hits[1]
