"""A power cut after flash operation N leaves the flash exactly as after N operations; a torn
cut leaves operation N partly applied."""

from mpdevice import DeviceFailure, run_function


def _flash_after(board, ops: int, cut: int = 0, torn: str = "") -> tuple[bytes, bool]:
    env = board.device_env()
    env["MPFOTA_TORN"] = torn
    if cut:
        env["CUT"] = str(cut)
    try:
        run_function("test_flash", "cut_sequence", {"ops": ops}, env=env)
        cut_happened = False
    except DeviceFailure as exc:
        assert "PowerCut" in str(exc)
        cut_happened = True
    return board.flash(), cut_happened


def test_cut_after_n_equals_first_n_operations(make_vboard):
    total = 12
    for n in range(1, total):
        uncut = make_vboard(f"ref{n}")
        expected, cut = _flash_after(uncut, n)
        assert not cut
        cutb = make_vboard(f"cut{n}")
        got, cut = _flash_after(cutb, total, cut=n)
        assert cut, f"power should have been cut after operation {n}"
        assert got == expected, f"flash after a cut at {n} differs from the first {n} operations"
        # the operation after the cut really would have changed the flash
        more, _ = _flash_after(make_vboard(f"more{n}"), n + 1)
        assert more != expected


def test_torn_cut_applies_the_cut_operation_partly(make_vboard):
    # MPFOTA_TORN reaches the flash of a real boot: the cut program lands partly (neither before
    # nor after it), the same seed tears it the same way, and a between-operations cut does not.
    n = 4  # operation 4 programs 16 bytes of 0x03
    before, _ = _flash_after(make_vboard("before"), n - 1)
    after, _ = _flash_after(make_vboard("after"), n)
    for model in ("prefix", "half", "bits"):
        torn = [_flash_after(make_vboard(f"{model}{i}"), 12, cut=n, torn=f"{model}:77")[0]
                for i in range(2)]
        assert torn[0] == torn[1], f"{model}: the same seed must tear the same way"
        assert torn[0] not in (before, after), f"{model}: the cut operation was not torn"
        changed = [i for i in range(len(after)) if torn[0][i] != before[i]]
        assert changed and all(after[i] != before[i] for i in changed), model
