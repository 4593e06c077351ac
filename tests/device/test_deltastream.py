# Streamed delta updates (format 2) on the virtual board: the patch applied as it arrives over
# HTTP (a real server on loopback) into the spare slot through the door, resumed with Range
# after a dropped connection and from the last checkpoint after a power cut, other tasks
# running during the apply, every class of bad patch refused with nothing switched, and the
# viper inner loop against its Python twin (fixtures: tests/fixtures_delta.py).
import vb

TIMEOUT = 120


def _slot_sha256(size):
    import binascii
    import hashlib

    import board

    _, spare = board.ota_slots()
    buf = bytearray(4096)
    digest = hashlib.sha256()
    pos = 0
    while pos < size:
        k = min(size - pos, 4096)
        spare.readblocks(pos // 4096, buf)
        digest.update(memoryview(buf)[:k])
        pos += k
    return binascii.hexlify(digest.digest()).decode()


async def _seen(base, tag):
    # The requests the server recorded with ?tag=...
    import json

    from mpfota import http

    resp = await http.request("GET", base + "/_requests?tag=" + tag, bytearray(1024))
    try:
        return json.loads(await resp.read(16384))
    finally:
        await resp.aclose()


def _range(req):
    for k, v in req["headers"]:
        if k.lower() == "range":
            return v
    return None


def _stored_bytes(os, path):
    # Bytes in all files under path.
    total = 0
    for name, kind, *_ in os.ilistdir(path):
        full = path.rstrip("/") + "/" + name
        total += _stored_bytes(os, full) if kind == 0x4000 else os.stat(full)[6]
    return total


async def test_streamed_apply_end_to_end(delta_stream, delta_stream_board):
    vb.boot()
    import os

    import board
    import vpartition
    from mpfota import confirm, deltafetch

    seen = []
    stored = _stored_bytes(os, "/")
    h = await deltafetch.fetch(delta_stream["url"], version=delta_stream["new_version"],
                               progress=lambda done, total: seen.append(done))
    assert h.to_size == delta_stream["size"]
    assert seen == sorted(seen) and seen[-1] == h.to_size
    assert vpartition.boot_record() == (1, "new")
    # Nothing staged on the filesystem: only the journal's few hundred bytes changed.
    assert abs(_stored_bytes(os, "/") - stored) < 1024 < delta_stream["patch_size"]
    assert vb.reboot() == 1
    assert board.core_version() == delta_stream["new_version"]
    assert confirm.status() == "pending"


async def test_other_tasks_run_during_the_apply(delta_stream, delta_stream_board):
    # A periodic "timer" task and a busy task both run while the patch is applied: each sees
    # the slot part-written several times (the apply yields at least once per sector).
    vb.boot()
    import asyncio

    from mpfota import deltafetch
    from mpfota.slot import Slot

    slot = Slot()
    size = delta_stream["size"]
    timer_saw = set()
    task_saw = set()
    running = [True]

    async def timer():
        while running[0]:
            if 0 < slot.flushed < size:
                timer_saw.add(slot.flushed)
            await asyncio.sleep_ms(0)

    async def busy():
        while running[0]:
            if 0 < slot.written < size:
                task_saw.add(slot.written)
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(timer()), asyncio.create_task(busy())]
    await deltafetch.fetch(delta_stream["url"], slot=slot, switch=False)
    running[0] = False
    for t in tasks:
        await t
    assert slot.verified
    assert len(timer_saw) >= 3, timer_saw
    assert len(task_saw) >= 3, task_saw


async def test_dropped_connection_resumes_with_range(delta_stream, delta_stream_board):
    # The first answer stops mid-patch; the apply goes on from the next patch byte with a
    # Range request, its place kept in RAM (not even at a unit boundary).
    vb.boot()
    from mpfota import deltafetch

    cut = delta_stream["patch_size"] // 2 + 7
    url = delta_stream["drop_url"] + "?tag=drop&at=%d" % cut
    h = await deltafetch.fetch(url, switch=False, retries=1)
    assert _slot_sha256(h.to_size) == delta_stream["sha256"]
    seen = await _seen(delta_stream["base"], "drop")
    assert len(seen) == 2
    assert _range(seen[0]) is None
    assert _range(seen[1]) == "bytes=%d-" % cut


async def test_a_server_without_range_is_read_past_the_applied_part(delta_stream,
                                                                     delta_stream_board):
    vb.boot()
    from mpfota import deltafetch

    cut = delta_stream["patch_size"] // 3
    url = delta_stream["drop_url"] + "?tag=norange&norange=1&at=%d" % cut
    h = await deltafetch.fetch(url, switch=False, retries=1)
    assert _slot_sha256(h.to_size) == delta_stream["sha256"]
    seen = await _seen(delta_stream["base"], "norange")
    assert [_range(r) for r in seen] == [None, "bytes=%d-" % cut]


async def test_a_patch_changed_on_the_server_starts_over(delta_stream, delta_stream_board):
    # The resumed request names the first answer's ETag (If-Range); the server has another
    # file now and sends it whole: the apply starts again from its byte 0, nothing mixed.
    vb.boot()
    from mpfota import deltafetch

    cut = delta_stream["patch_size"] // 2
    url = delta_stream["drop_url"] + "?tag=changed&then=dstream-other&at=%d" % cut
    h = await deltafetch.fetch(url, switch=False, retries=1)
    assert _slot_sha256(h.to_size) == delta_stream["sha256"]
    seen = await _seen(delta_stream["base"], "changed")
    assert len(seen) == 2 and _range(seen[1]) == "bytes=%d-" % cut
    assert any(k.lower() == "if-range" for k, _ in seen[1]["headers"])


async def test_power_cut_resumes_from_the_last_checkpoint(delta_stream, delta_stream_board):
    # The power goes mid-apply (the progress callback raises); the next call finds the apply
    # state in the journal, re-hashes the slot's prefix and asks only for the rest.
    vb.boot()
    import vpartition
    from mpfota import deltafetch, journal

    url = delta_stream["url"] + "?tag=cut"

    def power_cut(done, total):
        if done > total // 2:
            raise OSError(5)

    try:
        await deltafetch.fetch(url, progress=power_cut, checkpoint=4096)
    except OSError:
        pass
    else:
        raise AssertionError("the cut did not happen")
    rec = journal.get("dl")
    assert rec and rec["key"] == url and rec["offset"] % 4096 == 0 and rec["offset"] > 0, rec
    patch_at = rec["validator"][0]
    assert 0 < patch_at < delta_stream["patch_size"]
    assert vpartition.boot_record() is None
    h = await deltafetch.fetch(url, version=delta_stream["new_version"], checkpoint=4096)
    assert h.to_size == delta_stream["size"]
    assert vpartition.boot_record() == (1, "new")
    assert journal.get("dl") is None
    seen = await _seen(delta_stream["base"], "cut")
    assert [_range(r) for r in seen] == [None, "bytes=%d-" % patch_at]


async def test_resume_records_wait_for_the_time_gate(delta_stream, delta_stream_board):
    # With the time gate (fetch's default) a record needs CHECKPOINT_MS since the last one as
    # well as the byte interval: a fast apply writes none (each is a journal write), a slow
    # one does.
    vb.boot()
    import time

    from mpfota import deltafetch, deltastream, http, journal
    from mpfota.slot import Slot

    slot = Slot()
    ap = deltafetch.applier(slot, "gate", 4096, deltafetch.CHECKPOINT_MS)
    records = []
    waited = [None]

    def progress(done, total):
        # after each unit; the first one ends on a sector boundary (a resume point), 24 KiB in
        records.append(journal.get("dl"))
        if waited[0] is None:
            waited[0] = len(records)
            time.sleep_ms(deltafetch.CHECKPOINT_MS + 100)  # a slow link from here on

    resp = await http.request("GET", delta_stream["url"], bytearray(512))
    try:
        await deltastream.apply_stream(ap, resp, progress)
    finally:
        await resp.aclose()
    slot.verify(ap.h.to_size)
    fast, slow = records[:waited[0]], records[waited[0]:]
    assert fast and all(r is None for r in fast), fast
    assert any(r is not None and r["key"] == "gate" for r in slow), slow
    slot.forget()


async def test_download_fetch_applies_a_streamed_patch(delta_stream, delta_stream_board):
    # The engine's route (libfota2, update, fota): download.fetch sees the patch's first bytes
    # and hands it to deltafetch; after a power cut the same call resumes the apply.
    vb.boot()
    import vpartition
    from mpfota import deltafetch, download, journal

    url = delta_stream["url"] + "?tag=route"

    def power_cut(done, total):
        if done > total // 2:
            raise OSError(5)

    try:
        await download.fetch(url, progress=power_cut)
    except OSError:
        pass
    else:
        raise AssertionError("the cut did not happen")
    assert journal.get("dl") is None  # cut before its first 64 KiB resume point
    try:
        await deltafetch.fetch(url, progress=power_cut, checkpoint=4096)
    except OSError:
        pass
    patch_at = journal.get("dl")["validator"][0]
    r = await download.fetch(url, version=delta_stream["new_version"])
    assert r.status == 200 and r.size == delta_stream["size"]
    assert vpartition.boot_record() == (1, "new")
    seen = await _seen(delta_stream["base"], "route")
    # sniffed, asked again, cut; asked, cut after a checkpoint; resumed by download.fetch
    assert [_range(q) for q in seen] == [None, None, None, "bytes=%d-" % patch_at]


async def test_patch_file_digests_are_checked_before_the_switch(delta_stream,
                                                               delta_stream_board):
    # Aliyun's job carries the patch file's digest: a wrong one refuses the rebuilt image.
    vb.boot()
    import vpartition
    from mpfota import deltafetch
    from mpfota.errors import FotaError

    try:
        await deltafetch.fetch(delta_stream["url"], md5="0" * 32)
    except FotaError as e:
        assert "patch file md5" in e.msg, e.msg
    else:
        raise AssertionError("a wrong patch digest was accepted")
    assert vpartition.boot_record() is None
    await deltafetch.fetch(delta_stream["url"], md5=delta_stream["patch_md5"],
                           size=delta_stream["patch_size"])
    assert vpartition.boot_record() == (1, "new")


async def _refused(delta_stream, name):
    vb.boot()
    import board
    import vpartition
    from mpfota import deltafetch, journal
    from mpfota.errors import FotaError

    flash = vpartition.board().flash
    before = flash.erases + flash.programs
    try:
        await deltafetch.fetch(delta_stream["bad"][name], retries=0)
    except FotaError as e:
        assert e.code == -9, e
        assert delta_stream["expect"][name] in e.msg, (name, e.msg)
        if name == "wrong_base":
            assert "unit 0:" not in e.msg and e.reason == "base", e.msg  # found mid-stream
    else:
        raise AssertionError("bad patch %s was applied" % name)
    written = flash.erases + flash.programs - before  # flash operations of the attempt
    assert vpartition.boot_record() is None, "nothing may be switched"
    assert journal.get("dl") is None, "a refused patch leaves no resume record"
    assert board.core_version() == delta_stream["old_version"]
    assert vb.reboot() == 0
    return written


async def test_refuses_bad_magic(delta_stream, delta_stream_board):
    await _refused(delta_stream, "magic")


async def test_refuses_header_cut(delta_stream, delta_stream_board):
    await _refused(delta_stream, "header_cut")


async def test_refuses_header_crc(delta_stream, delta_stream_board):
    await _refused(delta_stream, "header_crc")


async def test_refuses_cut_mid_sector(delta_stream, delta_stream_board):
    await _refused(delta_stream, "cut_mid_sector")


async def test_refuses_unit_crc(delta_stream, delta_stream_board):
    await _refused(delta_stream, "unit_crc")


async def test_refuses_bad_deflate(delta_stream, delta_stream_board):
    await _refused(delta_stream, "bad_deflate")


async def test_refuses_bad_varint(delta_stream, delta_stream_board):
    await _refused(delta_stream, "bad_varint")


async def test_refuses_unit_header(delta_stream, delta_stream_board):
    await _refused(delta_stream, "unit_header")


async def test_refuses_wrong_base_mid_stream(delta_stream, delta_stream_board):
    await _refused(delta_stream, "wrong_base")


async def test_refuses_too_long(delta_stream, delta_stream_board):
    await _refused(delta_stream, "too_long")


async def test_refuses_too_short(delta_stream, delta_stream_board):
    await _refused(delta_stream, "too_short")


async def test_refuses_seek(delta_stream, delta_stream_board):
    await _refused(delta_stream, "seek")


async def test_refuses_a_result_larger_than_the_slot_before_writing(delta_stream,
                                                                     delta_stream_board):
    # Refused from the header: no sector erased or programmed (the whole spare slot used to
    # be written before the door found the overflow).
    assert await _refused(delta_stream, "result_too_big") == 0


async def test_refuses_a_base_larger_than_the_running_slot_before_writing(delta_stream,
                                                                          delta_stream_board):
    assert await _refused(delta_stream, "base_too_big") == 0


def _apply_file(old_path, patch_path):
    # The Applier alone (no board): base and patch from files, output hashed.
    import binascii
    import hashlib

    import deflate
    from mpfota import deltastream

    with open(old_path, "rb") as f:
        old = memoryview(f.read())
    digest = hashlib.sha256()
    sector = memoryview(bytearray(4096))

    class Sink:
        fill = 0

        def space(self):
            return sector[self.fill:]

        def advance(self, n):
            self.fill += n
            if self.fill == 4096:
                self.finish()

        def finish(self):
            digest.update(sector[:self.fill])
            self.fill = 0

        def checkpoint(self, state):
            pass

    sink = Sink()

    def read_old(pos, mv):
        mv[:] = old[pos:pos + len(mv)]

    ap = deltastream.Applier(sink, read_old,
                             lambda src, w: deflate.DeflateIO(src, deflate.RAW, w))
    buf = bytearray(1460)
    mv = memoryview(buf)
    with open(patch_path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            off = 0
            while off < n:
                off += ap.feed(mv[off:n])
                while ap.step():
                    pass
    ap.end()
    sink.finish()
    return binascii.hexlify(digest.digest()).decode()


def python_twin():
    # deltastream's Python interpreter (_work_py): the module a board with viper imports drops
    # it, so it is loaded again here from the module's source, with KEEP_TWIN set.
    from mpfota import deltastream

    ns = {"__name__": "deltastream_twin", "KEEP_TWIN": True}
    with open(deltastream.__file__) as f:
        exec(f.read(), ns)
    return ns["_work_py"]


def test_realistic_pairs_viper_and_python(delta_stream_pairs):
    from mpfota import deltastream

    viper = deltastream.work
    assert not hasattr(deltastream, "_work_py"), "the unix port has viper: no twin kept"
    twin = python_twin()
    try:
        for pair in delta_stream_pairs:
            for kernel in (viper, twin):
                deltastream.work = kernel
                got = _apply_file(pair["old"], pair["patch"])
                assert got == pair["sha256"], (pair["kind"], kernel)
    finally:
        deltastream.work = viper


# Entries of every kind: (zeros, code, count, bytes), the bytes written with the entry (a short
# run) or, for a long run, where the diff reaches them. The cache of short runs after each is
# in the comment (most recent first).
_ENTRIES = (
    (2, 2, 2, b"\x10\x20"),  # 2 zeros, a 2-byte run: [1020]
    (1, 4, 2, b""),  # 1 zero, cached run 0 again: [1020]
    (0, 1, 1, b"\x05"),  # a 1-byte run: [05 1020]
    (3, 5, 2, b""),  # cached run 1: [1020 05]
    (0, 0, 6, bytes(range(1, 7))),  # a long run, its bytes streamed: cache unchanged
    (0, 0, 4, b"\xa1\xb2\xc3\xd4"),  # a 4-byte run, short: [A1B2C3D4 1020 05]
    (2, 6, 1, b""),  # cached run 2: [05 A1B2C3D4 1020]
    (300, 0, 0, b""),  # 300 zeros (a two-byte varint), no run
)
_DIFF = (
    b"\0\0\x10\x20" + b"\0\x10\x20" + b"\x05" + b"\0\0\0\x10\x20" + bytes(range(1, 7))
    + b"\xa1\xb2\xc3\xd4" + b"\0\0\x05" + bytes(300)
)
# Ops (x, y, z): the first ends inside the long run and seeks back, the second reads the rest
# of the diff, the last is literal bytes only.
_OPS = ((20, 4, -7), (len(_DIFF) - 20, 0, 3), (0, 3, 0))


def _varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)
    return out


def _unit_stream():
    # The decoded stream of a unit made of _OPS and _ENTRIES, in the order the apply reads it
    # (entries when the diff needs the next one), and the output it must give over _BASE.
    stream = bytearray()
    want = bytearray()
    entries = iter(_ENTRIES)
    zeros = nonzero = 0
    streamed = b""
    d = 0
    old = 0
    for n, (x, y, z) in enumerate(_OPS):
        stream += _varint(x) + _varint(y) + _varint(z << 1 if z >= 0 else (-z << 1) - 1)
        for _ in range(x):
            if not zeros and not nonzero:
                zeros, code, nonzero, data = next(entries)
                stream += _varint(zeros << 3 | code)
                if not code:
                    stream += _varint(nonzero)
                streamed = data if code == 0 and nonzero > 4 else b""
                if not streamed:
                    stream += data
            if zeros:
                zeros -= 1
            else:
                if streamed:
                    stream.append(streamed[len(streamed) - nonzero])
                nonzero -= 1
            want.append((_BASE[old] + _DIFF[d]) & 0xFF)
            old += 1
            d += 1
        lit = bytes(range(0x41 + 8 * n, 0x41 + 8 * n + y))
        stream += lit
        want += lit
        old += z
    return bytes(stream), bytes(want)


_BASE = bytes((0xF0 + 7 * i) & 0xFF for i in range(len(_DIFF) + 10))


def _interpret(kernel, stream, out_len, step, feed, base=_BASE):
    # Run the interpreter over `stream` in output slices of `step` bytes, more() giving `feed`
    # decoded bytes at a time (ops, entries and short runs cut at every place). Returns the
    # output, or the error code.
    import array

    from mpfota import deltastream as ds

    out = bytearray(out_len)
    st = array.array("I", [0] * ds.ST_LEN)
    st[18] = out_len  # _OPS
    st[19] = len(base)  # _BASE_SIZE
    raw = bytearray(ds.RAW_TAIL + 32)
    fed = [0]
    view = [None]

    def read(pos, i, n):
        view[0][i:i + n] = base[pos:pos + n]

    def more():
        # the kept tail ends at raw[RAW_TAIL]: the next bytes go after it
        chunk = stream[fed[0]:fed[0] + feed]
        raw[ds.RAW_TAIL:ds.RAW_TAIL + len(chunk)] = chunk
        fed[0] += len(chunk)
        return len(chunk)

    at = 0
    while at < out_len:
        k = min(step, out_len - at)
        view[0] = memoryview(out)[at:at + k]
        st[20] = 0  # _I
        st[21] = k  # _K
        st[22] = 0  # _AVAIL
        r = kernel(view[0], raw, st, read, more)
        if r:
            return r
        at += k
    assert st[0] == st[1] and fed[0] == len(stream) and not st[2] and not st[3] and not st[18]
    return bytes(out)


def test_interpreter_viper_and_python():
    from mpfota import deltastream

    stream, want = _unit_stream()
    for kernel in (deltastream.work, python_twin()):
        for step in (1, 3, 7, 4096):
            for feed in (1, 2, 5, 20):
                got = _interpret(kernel, stream, len(want), step, feed)
                assert got == want, (kernel, step, feed)


def test_interpreter_refusals_viper_and_python():
    # Each bad stream gives the same error code from both: a varint of more than 4 bytes (op
    # header, entry), an entry covering nothing (a cached run never set), an op longer than the
    # unit or of no bytes, a base range outside the base, a stream that ends inside an op; and
    # a position taken below 0 by ops without base bytes and brought back is read from where
    # Python's integers say.
    from mpfota import deltastream as ds

    cases = (
        (b"\x80\x80\x80\x80\x01\x00\x00", 8, -1),
        (b"\x04\x00\x00" + b"\x80\x80\x80\x80\x01", 8, -1),
        (b"\x04\x00\x00\x04", 8, -2),
        (b"\x09\x00\x00", 8, -3),
        (b"\x00\x00\x00", 8, -3),
        (b"\x04\x00" + _varint(2 * (len(_BASE) - 3)) + b"\x20\x00" + b"\x04\x00\x00", 8, -4),
        (b"\x04\x00\x00\x20\x00\x04\x00", 8, -5),
        (b"\x00\x01" + _varint(2 * 5 - 1) + b"L" + b"\x00\x01" + _varint(2 * 6) + b"M"
         + b"\x03\x00\x00" + b"\x18\x00", 5, b"LM" + _BASE[1:4]),
    )
    for stream, out_len, want in cases:
        for kernel in (ds.work, python_twin()):
            for feed in (1, 32):
                got = _interpret(kernel, stream, out_len, 4096, feed)
                assert got == want, (stream, kernel, feed, got)


def test_the_routes_know_the_streamed_patch_magic():
    # download and package sniff a format-2 patch without importing its parser.
    from mpfota import deltastream, download, package

    magic = deltastream.MAGIC + bytes([deltastream.VERSION])
    assert download._DELTA_MAGIC == magic and package._STREAMED_DELTA == magic


def test_checkpoints_come_with_the_next_unit_and_the_blocks_go_at_the_end(delta_stream_pairs):
    # A checkpoint is about a unit ending on a sector boundary, but it is given only once the
    # next unit's bytes are all in (its decoder made, the last one dropped: a resume record's
    # transient objects find that hole free), with nothing written past the boundary yet.
    # After the last unit the unit buffer and the decoder are let go.
    import deflate
    from mpfota import deltastream

    pair = delta_stream_pairs[0]
    with open(pair["old"], "rb") as f:
        old = memoryview(f.read())
    with open(pair["patch"], "rb") as f:
        patch = f.read()
    sector = memoryview(bytearray(4096))
    fed = [0]
    seen = []

    class Sink:
        fill = 0
        written = 0

        def space(self):
            return sector[self.fill:]

        def advance(self, n):
            self.fill = (self.fill + n) % 4096
            self.written += n

        def checkpoint(self, state):
            seen.append((state, fed[0], self.written))

    def read_old(pos, mv):
        mv[:] = old[pos:pos + len(mv)]

    sink = Sink()
    ap = deltastream.Applier(sink, read_old,
                             lambda src, w: deflate.DeflateIO(src, deflate.RAW, w), 512)
    one = memoryview(patch)
    while fed[0] < len(patch):  # a byte at a time: fed[0] is exactly what feed() has taken
        fed[0] += 1
        assert ap.feed(one[fed[0] - 1:fed[0]]) == 1
        while ap.step():
            pass
    ap.end()
    assert len(seen) >= 2, seen
    for (patch_at, out_at, unit), given, written in seen:
        assert out_at % 4096 == 0 and out_at == written, (out_at, written)
        assert given > patch_at + deltastream.UNIT_SIZE, (patch_at, given)
    assert ap.src is None and ap.dec is None


def test_fetch_takes_the_large_blocks_when_called(delta_stream, delta_stream_board):
    # Before its coroutine runs (and before its frame is made): the unit buffer, the
    # decoded-bytes buffer and the room for the first decoder, a decoder's state and window.
    import gc

    vb.boot()
    from mpfota import deltafetch

    gc.collect()
    before = gc.mem_alloc()
    coro = deltafetch.fetch(delta_stream["url"])
    taken = gc.mem_alloc() - before
    coro.close()
    assert taken >= 4096 + 528 + 1024 + 1024, taken
