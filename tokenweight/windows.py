"""Short-context windows: which windows a short-context score runs, and which targets each scores.

The rules of a short context (docs/METHOD.md), with no model and no tensor, in one place for
every caller (the scorers of :mod:`tokenweight.scoring`, the score cache, self-scoring in
training, the CLI's checks):

- :func:`check_window`: a short context is a ``window >= 2`` and a ``stride`` in ``[1, window)``;
  :func:`default_stride` / :func:`resolve_stride` / :func:`window_stride` give the stride when none
  is given.
- :func:`window_starts` / :func:`plan_windows`: a short-context model must not see further back
  than ``window`` tokens. A banded attention mask does not achieve that (every layer widens the
  receptive field by the band), so the sequence is cut into separate windows: starts ``0, s, 2s,
  ...`` and a last window aligned to the end of the sequence. Window 0 scores positions ``1 …
  window-1``; window ``k >= 1`` scores only the positions that no earlier window scored (its last
  ``stride`` positions, fewer for the end-aligned last window), so every scored token sees at least
  ``window - stride`` tokens of context. When ``(n - window) % stride == 0`` these are exactly the
  windows of the paper's reference implementation.
- :func:`truncated_windows`: the short context of Fang et al. (LongPPL, LongCE): raw slices of
  ``trunc_len + sliding_window`` tokens every ``sliding_window`` tokens, each scoring its last
  ``sliding_window`` targets, the last one cut at the end.
- :func:`windows_per_pass`: how many windows one forward pass stacks when no batch size is given.
"""

from __future__ import annotations

from collections import defaultdict

#: tokens per forward pass of stacked short windows when no batch size is given: large enough to
#: keep a GPU busy, small enough for the activations of a small CPU model
TOKENS_PER_PASS = 16384


def windows_per_pass(window: int) -> int:
    """Default number of ``window``-token windows stacked into one forward pass."""
    return max(1, TOKENS_PER_PASS // window)


def check_window(window: int, stride: int) -> None:
    """The one rule of a short context: ``window >= 2`` and ``1 <= stride < window`` (ValueError)."""
    if not isinstance(window, int) or window < 2:
        raise ValueError(f"window must be an integer >= 2, got {window!r}")
    if not isinstance(stride, int) or not 1 <= stride < window:
        raise ValueError(f"stride must be an integer in [1, window) = [1, {window}), got {stride!r}")


def default_stride(n: int, window: int) -> int:
    """The recommended stride ``(1 - w/n)·w``, rounded, in ``[1, window)`` (docs/METHOD.md).

    It gives ``n/w`` extra windows (6144 for 32768/8192, the paper's setting). For ``n <= window``
    the stride is irrelevant (one window covers the sequence) and this returns 1.
    """
    return int(min(window - 1, max(1, round((1 - window / n) * window))))


def resolve_stride(n: int, window: int, stride: int | None = None) -> int:
    """``stride``, or the recommended one for ``n``/``window`` when None; ValueError when the pair
    is not a valid short context (``window >= 2``, ``1 <= stride < window``)."""
    stride = default_stride(n, window) if stride is None else stride
    check_window(window, stride)
    return stride


def window_stride(window: int, stride: int | None = None) -> int:
    """``stride``, or ``round(0.75·w)`` when no sequence length decides it (ValueError when invalid):
    docs/METHOD.md's ``(1 - w/n)·w`` at the paper's ``n = 4w`` (6144 for w = 8192). It depends on
    the window alone, so a sequence's scores never depend on what it is batched or padded with."""
    return resolve_stride(4 * window, window, stride) if isinstance(window, int) else check_window(window, 1)


def window_starts(n: int, window: int, stride: int) -> list[int]:
    """Start positions of the short-context windows for a sequence of ``n`` tokens.

    ``0, stride, 2·stride, …`` while the window fits, then one window aligned to the end (``n -
    window``) unless the last one already ends there. ``n <= window`` gives ``[0]`` (full context).
    With ``(n - window) % stride == 0`` this is the reference implementation's ``range(0, n-w+1, s)``.
    """
    check_window(window, stride)
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] != n - window:
        starts.append(n - window)
    return starts


def plan_windows(lengths: list[int], window: int, stride: int, skip_first_window: bool) -> dict[int, list[tuple]]:
    """Windows to run, grouped by window length.

    Returns {window_length: [(row, start, first_target, end), ...]} where the window covers tokens
    ``[start, start + window_length)`` of ``row`` and scores the targets ``first_target … end-1``
    (absolute positions). Grouping by length lets every group run without an attention mask.
    """
    groups: dict[int, list[tuple]] = defaultdict(list)
    for row, length in enumerate(lengths):
        if length < 2:
            continue
        prev_end = 0
        for k, start in enumerate(window_starts(length, window, stride)):
            end = min(start + window, length)
            first = start + 1 if k == 0 else prev_end
            prev_end = end
            if k == 0 and skip_first_window:
                continue
            groups[end - start].append((row, start, first, end))
    return groups


def truncated_windows(n: int, trunc_len: int, sliding_window: int) -> list[tuple[int, int, int]]:
    """Fang et al.'s short-context windows (LongPPL and LongCE) for a sequence of ``n`` tokens.

    ``(start, first, end)`` per window: the window is the raw slice ``[start, end)`` and scores the
    targets ``first … end-1``, where ``start = 0, S, 2S, …`` while ``start < n - T``, ``first =
    start + T`` and ``end = min(start + T + S, n)`` (``T = trunc_len``, ``S = sliding_window``;
    ``PKU-ML/LongPPL``'s ``find_key_token`` and ``finetune.py``'s ``loss_weight``). So target ``p >=
    T`` sees the ``T + (p - T) % S`` tokens from ``((p - T) // S)·S`` on; targets before ``T`` are in
    no window. Unlike :func:`window_starts`, the last window is cut at the end of the sequence
    (it is not aligned to it) and windows are never given a BOS.
    """
    for name, v in (("trunc_len", trunc_len), ("sliding_window", sliding_window)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    return [(s, s + trunc_len, min(s + trunc_len + sliding_window, n)) for s in range(0, n - trunc_len, sliding_window)]
