# The one journal: every piece of update state the board persists, in one record.
#
# The record is a JSON object whose sections are the engine's state machines (docs/engine.md
# "The journal" has the state table):
#   "dl"      the download in progress (resume point: key, slot, offset, CRC, validator);
#   "core"    the core switch (slot switched to, slot switched from, version, armed);
#   "scripts" the script-set journal (staged / swapping / pending / reverting / valid);
#   "min"     the anti-rollback counter of signed packages.
#
# On the filesystem it is /.mpfota/journal: "MPFJ", a 4-byte sequence number, the CRC-32 of
# the sequence number and the body, then the body. Each change writes the whole record to a
# new file and renames it over the old one (littlefs renames atomically), so a power cut
# leaves the old record or the new one. The CRC catches damage the rename cannot prevent (a
# file overwritten from outside, a bad block): such a record is reported by damaged() and read
# as empty, and the modules that act on it then delete nothing (docs/reliability.md).
import binascii
import json
import os

ROOT = "/.mpfota"
PATH = ROOT + "/journal"
_MAGIC = b"MPFJ"
_HEAD = 12  # magic, sequence number, CRC-32

_seq = 0  # sequence number of the record last read
_damage = None  # why the record on flash does not verify, or None


def _u32(b, at):
    return int.from_bytes(b[at:at + 4], "little")


def load():
    # The whole record (a dict; empty when there is none or when it does not verify).
    global _seq, _damage
    try:
        with open(PATH, "rb") as f:
            raw = f.read()
    except OSError:
        _seq, _damage = 0, None
        return {}
    _damage = _check(raw)
    if _damage is not None:
        if len(raw) >= 8:  # keep counting up from what the damaged header may still say
            _seq = max(_seq, _u32(raw, 4))
        return {}
    _seq = _u32(raw, 4)
    try:
        rec = json.loads(raw[_HEAD:])
    except ValueError:
        rec = None
    if not isinstance(rec, dict):
        _damage = "its body is not a record"
        return {}
    return rec


def _check(raw):
    # Why `raw` is not a sound record, or None.
    if len(raw) < _HEAD or raw[:4] != _MAGIC:
        return "no journal header (%d bytes)" % len(raw)
    if binascii.crc32(raw[4:8] + raw[_HEAD:]) != _u32(raw, 8):
        return "CRC mismatch (%d bytes)" % len(raw)
    return None


def seq():
    # The sequence number of the record read last (0: none yet).
    return _seq


def damaged():
    # Why the record read last does not verify (a string), or None.
    return _damage


def scar():
    # Why a damaged record was replaced (kept until heal()): the script sets it described
    # are still where the damage left them, and nothing may clean them up.
    return load().get("scar")


def save(rec):
    # Write the whole record (write, then rename). A damaged record is replaced: from here on
    # the journal is sound again.
    global _seq, _damage
    if _damage is not None:
        rec["scar"] = _damage
    try:
        os.mkdir(ROOT)
    except OSError:
        pass
    _seq += 1
    seq = _seq.to_bytes(4, "little")
    body = json.dumps(rec).encode()
    tmp = PATH + ".tmp"
    with open(tmp, "wb") as f:
        f.write(_MAGIC)
        f.write(seq)
        f.write(binascii.crc32(seq + body).to_bytes(4, "little"))
        f.write(body)
    os.rename(tmp, PATH)
    _damage = None


def get(section):
    return load().get(section)


def put(section, value, heal=False):
    # Set one section (None removes it), keeping the others. heal: also forget the scar (a new
    # script set was staged over whatever damage left), in the same write.
    rec = load()
    if heal:
        rec.pop("scar", None)
    if value is None:
        if section not in rec and _damage is None:
            return
        rec.pop(section, None)
    else:
        rec[section] = value
    save(rec)
