"""A power cut after flash operation N leaves the flash exactly as after N operations."""

from mpdevice import DeviceFailure, run_function


def _flash_after(board, ops: int, cut: int = 0) -> tuple[bytes, bool]:
    env = board.device_env()
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
