# Torn flash operations (boards/unix/simflash.py, docs/reliability.md): the operation the power
# cut interrupts is applied only partly, in the shape each model describes, reproducibly.
import simflash

N = 4096


def _flash(tmp, torn, cut_after=1, fill=b"\xff"):
    with open(tmp, "wb") as f:
        f.write(fill * (2 * N))
    return simflash.SimFlash(tmp, 2 * N, cut_after=cut_after, torn=torn)


def _data():
    return bytes((i * 7 + 3) & 0xFF for i in range(N))


def _after(f, addr=0):
    buf = bytearray(N)
    f._f.seek(addr)
    f._f.readinto(buf)
    return bytes(buf)


def _program(tmp, torn):
    f = _flash(tmp, torn)
    try:
        f.program(0, _data())
    except simflash.PowerCut:
        pass
    else:
        raise AssertionError("the power should have failed during the program")
    try:
        f.program(N, b"\x00")
    except simflash.PowerCut:
        pass
    else:
        raise AssertionError("after a cut every operation must fail")
    out = _after(f)
    assert _after(f, N) == b"\xff" * N, "a torn program changed bytes outside its range"
    f.close()
    return out


def _erase(tmp, torn):
    f = _flash(tmp, torn, fill=b"\x5a")
    try:
        f.erase(0)
    except simflash.PowerCut:
        pass
    else:
        raise AssertionError("the power should have failed during the erase")
    out = _after(f)
    assert _after(f, N) == b"\x5a" * N, "a torn erase changed another sector"
    f.close()
    return out


def test_torn_program_prefix(tmp_path):
    tmp = tmp_path + "/f.bin"
    data = _data()
    out = _program(tmp, "prefix:11")
    k = 0
    while k < N and out[k] == data[k]:
        k += 1
    assert 0 < k < N, k
    assert out == data[:k] + b"\xff" * (N - k)
    assert _program(tmp, "prefix:11") == out, "the same seed must tear the same way"
    assert _program(tmp, "prefix:12") != out


def test_torn_program_random_half(tmp_path):
    tmp = tmp_path + "/f.bin"
    data = _data()
    out = _program(tmp, "half:5")
    written = sum(1 for i in range(N) if out[i] == data[i] and data[i] != 0xFF)
    assert all(out[i] in (data[i], 0xFF) for i in range(N))
    assert N // 3 < written < 2 * N // 3, written
    assert _program(tmp, "half:5") == out


def test_torn_program_half_programmed_bits(tmp_path):
    tmp = tmp_path + "/f.bin"
    data = _data()
    out = _program(tmp, "bits:9")
    # Only bits the program clears may be 0; some of them are still 1.
    assert all(~out[i] & data[i] & 0xFF == 0 for i in range(N))
    partial = sum(1 for i in range(N) if out[i] not in (data[i], 0xFF))
    assert partial > N // 4, partial
    assert _program(tmp, "bits:9") == out


def test_torn_erase_models(tmp_path):
    tmp = tmp_path + "/f.bin"
    out = _erase(tmp, "prefix:3")
    k = out.index(b"\x5a")
    assert 0 < k and out == b"\xff" * k + b"\x5a" * (N - k)
    out = _erase(tmp, "half:3")
    pages = [out[p:p + 256] for p in range(0, N, 256)]
    assert all(p in (b"\xff" * 256, b"\x5a" * 256) for p in pages)
    assert b"\xff" * 256 in pages and b"\x5a" * 256 in pages
    out = _erase(tmp, "bits:3")
    garbage = [i for i in range(N) if out[i] != 0xFF]
    assert garbage, "a partly erased sector keeps some garbage"
    assert all(out[i] | 0x5A == out[i] for i in garbage), "an erase only sets bits"
    assert _erase(tmp, "bits:3") == out


def test_only_the_cut_operation_is_torn(tmp_path):
    tmp = tmp_path + "/f.bin"
    f = _flash(tmp, "prefix:1", cut_after=2)
    f.program(0, _data())  # operation 1: whole
    try:
        f.erase(N)
    except simflash.PowerCut:
        pass
    assert _after(f) == _data()
    f.close()
    f = _flash(tmp, "bits:1", cut_after=0)  # never cut: never torn
    f.program(0, _data())
    assert _after(f) == _data()
    f.close()


def test_torn_setting_is_checked(tmp_path):
    assert simflash.parse_torn("") is None
    assert simflash.parse_torn("half:42") == ("half", 42)
    for bad in ("shred:1", "prefix:x"):
        try:
            simflash.parse_torn(bad)
        except ValueError:
            pass
        else:
            raise AssertionError("accepted MPFOTA_TORN=%s" % bad)
