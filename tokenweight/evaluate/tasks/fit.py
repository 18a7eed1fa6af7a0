"""Fit a prompt to a target length in the model's own tokens, with few tokenizations.

Every task builds its prompt from a count ``m`` of filler units (haystack pieces, list items,
coded words): ``measure(m)`` is the exact token count of that prompt, one tokenization of the
whole prompt. Token counts are not additive (BPE merges across unit boundaries, needles and
templates in between), so the exact answer needs measuring; but measuring every ``m`` (RULER grows
the haystack in fixed increments and re-tokenizes each time) costs O(n) tokenizations of an
O(n)-token prompt. Here an estimate of the cumulative token count of the units (each unit
tokenized once, then summed) gives a first guess that is usually off by a token or two, and a
bracketed interpolation search (regula falsi with a bisection safeguard) on the exact counts
settles it: typically 3-4 tokenizations per sample at any length.

Guarantee: the returned ``m`` satisfies ``measure(m) <= target`` and either ``m == hi`` or
``measure(m + 1) > target``, so the prompt is as long as possible without exceeding the target
(short of it by less than one unit's tokens). This holds even where ``measure`` is not monotone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


class TooShort(Exception):
    """``measure(lo)`` already exceeds the target; ``.minimum`` is that smallest length."""

    def __init__(self, minimum: int):
        super().__init__(minimum)
        self.minimum = minimum


def fit_length(
    measure: Callable[[int], int],
    target: int,
    lo: int,
    hi: int,
    estimate: Sequence[float] | np.ndarray | None = None,
    max_evals: int = 64,
) -> tuple[int, int]:
    """Largest ``m`` in ``[lo, hi]`` with ``measure(m) <= target``; returns ``(m, measure(m))``.

    Args:
        measure: exact token count of the prompt built from ``m`` units.
        target: the length to reach without exceeding it.
        lo, hi: the range of unit counts (``0 <= lo <= hi``).
        estimate: optional non-decreasing array ``[hi + 1]``: estimated tokens of the first ``m``
            units (a cumulative sum). Without it, the units' size is learned from measurements.
        max_evals: safety cap on calls to ``measure`` (the search needs ~log2(hi - lo) at worst).

    Raises:
        TooShort: when even ``measure(lo)`` exceeds ``target``.
    """
    if not 0 <= lo <= hi:
        raise ValueError(f"lo={lo}, hi={hi}: need 0 <= lo <= hi")
    x = np.arange(hi + 1, dtype=np.float64) if estimate is None else np.asarray(estimate, dtype=np.float64)
    if x.shape != (hi + 1,):
        raise ValueError(f"estimate has shape {x.shape}, expected ({hi + 1},)")
    cache: dict[int, int] = {}

    def f(m: int) -> int:
        if m not in cache:
            if len(cache) >= max_evals:
                raise RuntimeError(f"fit_length did not converge in {max_evals} tokenizations")
            cache[m] = int(measure(m))
        return cache[m]

    def invert(xt: float) -> int:
        """Largest m with x[m] <= xt (lo when none)."""
        return int(np.searchsorted(x, xt, side="right")) - 1

    a, fa = lo, f(lo)
    if fa > target:
        raise TooShort(fa)
    b: int | None = None
    fb = 0
    # tokens per unit of x: 1 when x estimates tokens; learned from a probe otherwise
    slope = 1.0
    if estimate is None and a < hi:
        p = a + 1
        fp = f(p)
        slope = max(fp - fa, 1) / 1.0
        if fp <= target:
            a, fa = p, fp
        else:
            b, fb = p, fp
    widths = [hi - lo + 1]
    while a < hi and (b is None or b > a + 1):
        upper = hi if b is None else b - 1
        if b is None:
            guess = invert(x[a] + (target - fa) / slope)
        else:
            widths.append(b - a)
            if len(widths) >= 3 and widths[-1] > widths[-3] // 2:
                guess = (a + b) // 2  # interpolation is stalling on one side: bisect
            else:
                span = fb - fa
                guess = invert(x[a] + (target - fa) * (x[b] - x[a]) / span) if span > 0 else (a + b) // 2
        guess = min(max(guess, a + 1), upper)
        v = f(guess)
        if v <= target:
            if b is None and x[guess] > x[a] and v > fa:
                slope = (v - fa) / (x[guess] - x[a])
            a, fa = guess, v
        else:
            b, fb = guess, v
    return a, fa
