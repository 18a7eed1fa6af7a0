"""tokenweight.windows: where the short-context windows start (the paper's reference layout and any length)."""

from __future__ import annotations

from tokenweight import window_starts


def test_window_starts_match_reference_when_divisible():
    assert window_starts(32, 8, 6) == [0, 6, 12, 18, 24]
    assert window_starts(32768, 8192, 6144) == list(range(0, 32768 - 8192 + 1, 6144))
    assert len(window_starts(32768, 8192, 6144)) == 32768 // 8192 + 1


def test_window_starts_any_length():
    assert window_starts(30, 8, 6) == [0, 6, 12, 18, 22]  # last window aligned to the end
    assert window_starts(8, 8, 3) == [0]
    assert window_starts(5, 8, 3) == [0]
    assert window_starts(9, 8, 7) == [0, 1]
