"""Fixtures for the delta-update tests (docs/delta.md).

`delta_small`: a synthetic pair of unix core images (1.0.0 -> 2.0.0, ~48 KB, with insertions,
deletions and pointer-like edits), its patch, and one damaged patch per class of bad input
(`BAD`: name -> the words the refusal must contain). `delta_small_board`: a board running the
pair's base image. `delta_corpus` / `delta_corpus_board`: the same for the real firmware pair
(ESP8266 MicroPython v1.9.4 -> v1.10 from shared/corpus, wrapped as core images); skipped when
the corpus is not there.

Device side a set is a dict {"patch": path, "bad": {name: path}, "expect": {name: words},
"old_version", "new_version", "size", "sha256"}; a board is its path (MPFOTA_FLASH is set).
"""

from __future__ import annotations

import hashlib
import random
import sys
import zlib
from pathlib import Path

import pytest
from mpfota_host import delta, deltacodec, deltamatch, image, paths, vboard
from mpfota_host import deltastream as ds

sys.path.insert(0, str(Path(__file__).resolve().parent / "host"))

import httpserver as hs  # noqa: E402

CORPUS = paths.REPO.parent / "shared" / "corpus" / "firmware"
CORPUS_OLD = "esp8266-v1.9.4.bin"
CORPUS_NEW = "esp8266-v1.10.bin"
CORPUS_SLOT = 640 * 1024
SMALL_SLOT = 128 * 1024
FS_SIZE = 256 * 1024

# Each damaged patch and the words its refusal carries (device and host messages both).
BAD = {
    "magic": "not an mpfota delta patch",
    "header_cut": "truncated",
    "truncated": "announces",
    "body_crc": "body CRC mismatch",
    "header_crc": "header CRC mismatch",
    "bad_deflate": "corrupt stream data",
    "bad_varint": "bad varint",
    "runs_overflow": "runs stream",
    "wrong_base": "another base",
    "too_long": "longer than announced",
    "too_short": "shorter than announced",
    "seek": "seek out of range",
    "wrong_result": "sha256",
}


def small_bodies() -> tuple[bytes, bytes]:
    """Old and new bodies that differ as firmware builds do: code moved, pointers shifted."""
    rng = random.Random(20240601)
    words = [rng.getrandbits(32) for _ in range(256)]
    old = bytearray()
    while len(old) < 48_000:
        if rng.random() < 0.5:  # "code": a few recurring words
            old += rng.choice(words).to_bytes(4, "little")
        else:  # "pointers" into the image
            old += (0x40200000 + rng.randrange(48_000)).to_bytes(4, "little")
    new = bytearray(old[:5000]) + rng.randbytes(700) + old[5000:20000] + old[20300:]
    for _ in range(300):  # shifted pointers
        at = rng.randrange(0, len(new) - 4) & ~3
        word = int.from_bytes(new[at : at + 4], "little")
        new[at : at + 4] = ((word + 0x2BC) & 0xFFFFFFFF).to_bytes(4, "little")
    new += rng.randbytes(1000)
    return bytes(old), bytes(new)


PAIR_KINDS = ("shift", "append", "identical", "shorter", "erased_runs")
_LOAD = 0x08000000  # where the synthetic images "run": pointers are _LOAD + offset


def firmware_like(seed: int, size: int, erased: bool = False) -> bytes:
    """An image like a linked firmware: recurring code words and absolute pointers into itself;
    with `erased`, long 0xFF runs as between the sections of a flash image."""
    rng = random.Random(seed)
    words = [rng.getrandbits(32) for _ in range(64)]
    out = bytearray()
    while len(out) < size:
        roll = rng.random()
        if erased and roll < 0.02:
            out += b"\xff" * rng.randrange(256, 4096)
        elif roll < 0.6:
            out += rng.choice(words).to_bytes(4, "little")
        else:
            out += (_LOAD + rng.randrange(size)).to_bytes(4, "little")
    return bytes(out[:size] if len(out) > size else out)


def relink(image_bytes: bytes, at: int, delta_bytes: int, fill: int) -> bytes:
    """The image rebuilt with `delta_bytes` inserted (> 0, bytes of value `fill`) or removed
    (< 0) at offset `at`, and every pointer-like word to an address after `at` moved with it,
    as the linker does when a function early in the image grows or shrinks."""
    words = bytearray()
    for i in range(0, len(image_bytes) - len(image_bytes) % 4, 4):
        w = int.from_bytes(image_bytes[i : i + 4], "little")
        if _LOAD + at <= w < _LOAD + len(image_bytes):
            w = (w + delta_bytes) & 0xFFFFFFFF
        words += w.to_bytes(4, "little")
    body = bytes(words) + image_bytes[len(words) :]
    if delta_bytes >= 0:
        return body[:at] + bytes([fill]) * delta_bytes + body[at:]
    return body[:at] + body[at - delta_bytes :]


def realistic_pair(kind: str, seed: int, size: int, at: int, amount: int) -> tuple[bytes, bytes]:
    """(old, new) for one kind of update a team ships (PAIR_KINDS); `at` and `amount` place and
    size the change (0 <= at < size, amount may be negative)."""
    old = firmware_like(seed, size, erased=kind == "erased_runs")
    at &= ~3
    removable = (size - at - 1) // 2  # never remove the whole image
    amount = max(amount, -removable)
    if kind == "shift" or kind == "erased_runs":
        new = relink(old, at, amount, seed & 0xFF)
    elif kind == "append":
        new = old + firmware_like(seed + 1, abs(amount) + 1)
    elif kind == "identical":
        new = old
    elif kind == "shorter":
        cut = min(abs(amount), removable)
        new = relink(old, at, -cut, 0)[: max(1, size - cut * 8)]
    else:
        raise ValueError(kind)
    return old, new


def _patch_fields(patch: bytes):
    return delta.fmt().parse_header(patch)


def _with_ctrl(old: bytes, new: bytes, edit) -> bytes:
    """The patch for old -> new with its control triples changed by edit(list)."""
    triples, diff, extra = deltamatch.match(old, new)
    triples = list(triples)
    edit(triples)
    runs, nonzero = delta.encode_runs(diff)
    raws = [delta.encode_ctrl(triples), runs, nonzero, extra]
    return delta.assemble(raws, len(triples), old, new)


def damaged(old: bytes, new: bytes, patch: bytes) -> dict[str, bytes]:
    """One bad patch per class in BAD, each derived from the good patch for old -> new."""
    f = delta.fmt()
    h = _patch_fields(patch)
    hs = f.HEADER_SIZE
    extra_at = h.offset(f.EXTRA)
    out: dict[str, bytes] = {}
    out["magic"] = b"XXXX" + patch[4:]
    out["header_cut"] = patch[:100]
    out["truncated"] = patch[:-200]
    body = bytearray(patch)
    body[extra_at + h.streams[f.EXTRA][1] // 2] ^= 0x5A
    out["body_crc"] = bytes(body)
    head = bytearray(patch)
    head[10] ^= 1  # from_size, without a new header CRC
    out["header_crc"] = bytes(head)
    bad = bytearray(patch)
    bad[extra_at] = 0xFF  # DEFLATE block type 3 does not exist
    out["bad_deflate"] = delta.reseal(bytes(bad))
    raws, n = delta.raw_streams(old, new)
    out["bad_varint"] = delta.assemble([b"\x80" * 6 + raws[0][6:], *raws[1:]], n, old, new)
    runs = bytearray(raws[1])
    deltacodec.put_varint(len(new) << 2 | 1, runs)  # one more change, past the end of the diff
    out["runs_overflow"] = delta.assemble([raws[0], bytes(runs), *raws[2:]], n, old, new)
    other = bytearray(old)
    other[len(other) // 2] ^= 0xFF
    out["wrong_base"] = delta.make_patch(bytes(other), new).data
    fixed = bytearray(patch[:hs])
    to_size = h.to_size
    fixed[44:48] = (to_size - 100).to_bytes(4, "little")
    out["too_long"] = delta.reseal(bytes(fixed) + patch[hs:])
    fixed[44:48] = (to_size + 100).to_bytes(4, "little")
    out["too_short"] = delta.reseal(bytes(fixed) + patch[hs:])
    fixed = bytearray(patch[:hs])
    fixed[48:80] = hashlib.sha256(b"something else").digest()
    out["wrong_result"] = delta.reseal(bytes(fixed) + patch[hs:])

    def far_seek(triples: list) -> None:
        i = next(k for k in range(len(triples) - 1) if triples[k + 1][0] > 0)
        x, y, z = triples[i]
        triples[i] = (x, y, z + 4 * len(old))

    out["seek"] = _with_ctrl(old, new, far_seek)
    assert set(out) == set(BAD)
    return out


class DeltaSet:
    """A pair of core images, their patch and its damaged variants, as files in a directory."""

    def __init__(self, directory: Path, old: bytes, new: bytes, bad: bool = True) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.old = old
        self.new = new
        self.patch = delta.make_patch(old, new)
        (directory / "old.img").write_bytes(old)
        (directory / "new.img").write_bytes(new)
        (directory / "patch.bin").write_bytes(self.patch.data)
        self.bad: dict[str, Path] = {}
        if bad:
            for name, data in damaged(old, new, self.patch.data).items():
                self.bad[name] = directory / f"bad-{name}.bin"
                self.bad[name].write_bytes(data)

    def version(self, data: bytes) -> str:
        return image.parse_header(data).version

    def to_device(self) -> dict:
        return {
            "patch": str(self.dir / "patch.bin"),
            "bad": {k: str(v) for k, v in self.bad.items()},
            "expect": dict(BAD),
            "old_version": self.version(self.old),
            "new_version": self.version(self.new),
            "size": len(self.new),
            "sha256": hashlib.sha256(self.new).hexdigest(),
        }


class DeltaBoard:
    """A virtual board whose slot 0 runs a pair's base image."""

    def __init__(self, path: Path, old: bytes, slot_size: int) -> None:
        vboard.init(path, slot_size=slot_size, fs_size=FS_SIZE, core_image=old)
        self.path = path

    def to_device(self) -> str:
        return str(self.path)

    def device_env(self) -> dict[str, str]:
        return {"MPFOTA_FLASH": str(self.path)}


@pytest.fixture(scope="session")
def delta_small(tmp_path_factory) -> DeltaSet:
    old, new = small_bodies()
    return DeltaSet(
        tmp_path_factory.mktemp("delta-small"),
        image.make_image(old, "1.0.0"),
        image.make_image(new, "2.0.0"),
    )


@pytest.fixture
def delta_small_board(tmp_path, delta_small) -> DeltaBoard:
    return DeltaBoard(tmp_path / "board", delta_small.old, SMALL_SLOT)


def corpus_images() -> tuple[bytes, bytes]:
    old, new = CORPUS / CORPUS_OLD, CORPUS / CORPUS_NEW
    if not (old.is_file() and new.is_file()):
        pytest.skip(f"firmware corpus not found in {CORPUS}")
    return (image.make_image(old.read_bytes(), "1.9.4"), image.make_image(new.read_bytes(), "1.10"))


@pytest.fixture(scope="session")
def delta_corpus(tmp_path_factory) -> DeltaSet:
    old, new = corpus_images()
    return DeltaSet(tmp_path_factory.mktemp("delta-corpus"), old, new, bad=False)


@pytest.fixture
def delta_corpus_board(tmp_path, delta_corpus) -> DeltaBoard:
    return DeltaBoard(tmp_path / "board", delta_corpus.old, CORPUS_SLOT)


# --- format 2 (streamed) -----------------------------------------------------------------------

# Each damaged streamed patch and the words its refusal carries.
STREAM_BAD = {
    "magic": "not an mpfota delta patch",
    "header_cut": "cut short",
    "header_crc": "header CRC mismatch",
    "cut_mid_sector": "cut short",
    "unit_crc": "CRC mismatch (corrupt patch)",
    "bad_deflate": "corrupt stream data",
    "bad_varint": "bad varint",
    "unit_header": "bad unit header",
    "wrong_base": "another base",
    "too_long": "longer than announced",
    "too_short": "shorter than announced",
    "seek": "seek out of range",
}


def damaged_stream(old: bytes, new: bytes, unit_max: int = 1024) -> dict[str, bytes]:
    """One bad format-2 patch per class in STREAM_BAD, each derived from the good one; the
    damage sits in the second unit, so that the first one is applied before the refusal."""
    f = ds.fmt()
    enc = ds.Encoder(old, new)
    units = ds.cut_units(enc, len(new), unit_max, ds.DEFAULT_WBITS)
    good = ds.assemble(old, new, units, ds.DEFAULT_WBITS)
    assert len(units) >= 3, "the pair must make a few units"
    hs, us = f.HEADER_SIZE, f.UNIT_SIZE
    mid = units[1]
    mid_at = hs + us + len(units[0].packed)  # where the second unit's header starts

    def rebuilt(**change) -> bytes:
        changed = list(units)
        changed[1] = ds.Unit(**{**mid.__dict__, **change})
        return ds.assemble(old, new, changed, ds.DEFAULT_WBITS)

    out = {"magic": b"XXXX" + good[4:], "header_cut": good[: hs // 2]}
    head = bytearray(good)
    head[10] ^= 1  # a reserved byte, without a new header CRC
    out["header_crc"] = bytes(head)
    out["cut_mid_sector"] = good[: mid_at + us + len(mid.packed) // 2]
    body = bytearray(good)
    body[mid_at + us + len(mid.packed) // 2] ^= 0x5A
    out["unit_crc"] = bytes(body)
    out["bad_deflate"] = rebuilt(packed=b"\xff" + mid.packed[1:])  # block type 3
    _, ops = enc.unit(mid.start, mid.end)
    out["bad_varint"] = rebuilt(packed=ds.deflate_raw(b"\x80" * 5 + ops, ds.DEFAULT_WBITS))
    unit_head = bytearray(good)
    unit_head[mid_at : mid_at + 2] = bytes(2)  # no packed bytes
    out["unit_header"] = bytes(unit_head)
    out["wrong_base"] = _for_another_base(old, new, units, unit_max)
    out["too_long"] = good + good[hs : hs + us]
    fixed = bytearray(good[:hs])
    to_size = int.from_bytes(fixed[48:52], "little")
    fixed[48:52] = (to_size + 4096).to_bytes(4, "little")
    fixed[hs - 4 :] = zlib.crc32(fixed[: hs - 4]).to_bytes(4, "little")
    out["too_short"] = bytes(fixed) + good[hs:]
    out["seek"] = rebuilt(old=len(old) + 100)
    assert set(out) == set(STREAM_BAD)
    return out


# Sound patches whose header names sizes the board's slots cannot hold, and the words of
# their refusal (the board refuses them from the header, before anything is written).
STREAM_OVERSIZED = {
    "result_too_big": "larger than the spare slot",
    "base_too_big": "larger than the running slot",
}


def oversized_stream(good: bytes) -> dict[str, bytes]:
    """The patch `good` with to_size, or from_size, set to 64 MiB (header CRC made anew)."""
    hs = ds.fmt().HEADER_SIZE
    out = {}
    for name, at in (("result_too_big", 48), ("base_too_big", 12)):
        head = bytearray(good[:hs])
        head[at : at + 4] = (64 << 20).to_bytes(4, "little")
        head[hs - 4 :] = zlib.crc32(head[: hs - 4]).to_bytes(4, "little")
        out[name] = bytes(head) + good[hs:]
    assert set(out) == set(STREAM_OVERSIZED)
    return out


def _for_another_base(old: bytes, new: bytes, units: list, unit_max: int) -> bytes:
    """A patch made for a base that differs from OLD in a few bytes that a later unit reads: a
    board running OLD applies the first units and refuses the one that reads them."""
    enc = ds.Encoder(old, new)
    for unit in units[1:]:
        for old_at, x, _, _, _ in enc.clipped(unit.start, unit.end):
            if x < 64:
                continue
            other = bytearray(old)
            for k in range(old_at + x // 2, old_at + x // 2 + 16):
                other[k] ^= 0x11
            data = ds.make_stream_patch(bytes(other), new, unit_max).data
            try:
                ds.apply_stream_patch(old, data)
            except ds.fmt().PatchError as exc:
                if "another base" in str(exc) and "unit 0:" not in str(exc):
                    return data
    raise AssertionError("no base change that the patch reads")


class DropFirstServer(hs.HTTPTestServer):
    """The test HTTP server plus /dropfirst/NAME?at=N&tag=T: the first answer for (NAME, T)
    stops after N body bytes (the link drops); every later one is /blob/NAME (Range and
    If-Range honoured), or with &norange=1 the whole blob (a server without Range), or with
    &then=OTHER /blob/OTHER (the file changed on the server)."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped: set[tuple[str, str]] = set()

    def _do_dropfirst(self, conn, req, args):
        key = (args[0], req.arg("tag", ""))
        if key not in self.dropped:  # the whole blob announced, with its validators; N sent
            self.dropped.add(key)
            blob = self._blob(args[0])
            head = "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nETag: %s\r\nLast-Modified: %s\r\n\r\n"
            head %= (len(blob.data), blob.etag, hs.LAST_MODIFIED)
            self._send(conn, head.encode() + blob.data[: int(req.arg("at", "100"))])
            return False
        if req.arg("then"):
            return self._do_blob(conn, req, [req.arg("then")])
        if req.arg("norange") == "1":
            blob = self._blob(args[0])
            headers = [("ETag", blob.etag), ("Last-Modified", hs.LAST_MODIFIED)]
            self._respond(conn, 200, blob.data, headers, reason="OK")
            return True
        return self._do_blob(conn, req, args)


@pytest.fixture(scope="session")
def delta_stream_server():
    server = DropFirstServer().start()
    yield server
    server.stop()


class StreamSet:
    """A pair of core images, its format-2 patch and the damaged ones, served over HTTP."""

    def __init__(self, server: DropFirstServer, old: bytes, new: bytes) -> None:
        self.server = server
        self.old, self.new = old, new
        self.patch = ds.make_stream_patch(old, new, unit_max=1024)
        server.add_blob("dstream", self.patch.data)
        # Another patch for the same pair (smaller units): "the file changed on the server".
        server.add_blob("dstream-other", ds.make_stream_patch(old, new, unit_max=512).data)
        self.bad = damaged_stream(old, new) | oversized_stream(self.patch.data)
        for name, data in self.bad.items():
            server.add_blob(f"dstream-bad-{name}", data)

    def to_device(self) -> dict:
        base = self.server.base
        h = ds.fmt().parse_header(self.patch.data)
        return {
            "base": base,
            "url": f"{base}/blob/dstream",
            "drop_url": f"{base}/dropfirst/dstream",
            "bad": {name: f"{base}/blob/dstream-bad-{name}" for name in self.bad},
            "expect": STREAM_BAD | STREAM_OVERSIZED,
            "patch_size": len(self.patch.data),
            "patch_md5": hashlib.md5(self.patch.data).hexdigest(),
            "units": h.units,
            "size": len(self.new),
            "sha256": hashlib.sha256(self.new).hexdigest(),
            "old_version": image.parse_header(self.old).version,
            "new_version": image.parse_header(self.new).version,
        }


@pytest.fixture(scope="session")
def delta_stream(delta_stream_server) -> StreamSet:
    old, new = small_bodies()
    return StreamSet(
        delta_stream_server, image.make_image(old, "1.0.0"), image.make_image(new, "2.0.0")
    )


@pytest.fixture
def delta_stream_board(tmp_path, delta_stream) -> DeltaBoard:
    return DeltaBoard(tmp_path / "board", delta_stream.old, SMALL_SLOT)


@pytest.fixture(scope="session")
def delta_stream_pairs(tmp_path_factory) -> list[dict]:
    """A few realistic pairs (PAIR_KINDS) as files: old, patch (format 2) and the new digest."""
    out = []
    root = tmp_path_factory.mktemp("delta-stream-pairs")
    for i, kind in enumerate(PAIR_KINDS):
        old, new = realistic_pair(kind, 100 + i, 20_000 + 3_000 * i, 700, 24 - 16 * i)
        (root / f"{kind}.old").write_bytes(old)
        (root / f"{kind}.patch").write_bytes(ds.make_stream_patch(old, new, unit_max=512).data)
        out.append(
            {
                "kind": kind,
                "old": str(root / f"{kind}.old"),
                "patch": str(root / f"{kind}.patch"),
                "sha256": hashlib.sha256(new).hexdigest(),
            }
        )
    return out
