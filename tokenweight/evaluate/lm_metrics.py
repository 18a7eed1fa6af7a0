"""Perplexity by position bucket and short-context perplexity.

Why by position: token weighting is meant to make a model use *far* context, so its effect (and
its cost) shows up as a function of where a token sits in a long sequence. A uniform average over a
long sequence is dominated by the many positions where a short context suffices; splitting it into
buckets ``[0, w), [w, 2w), ...`` makes the long-range part visible. The first bucket is also the
*short-context perplexity*: the perplexity of the first ``w`` tokens of each held-out sequence is
exactly what a model with native window ``w`` is asked at training time, so it measures what
re-weighting the loss may cost on short-context modelling.

Alignment (the same as :func:`tokenweight.token_nll`): entry ``j`` of an ``nll`` tensor
``[b, n-1]`` is the NLL of the token at position ``t = j + 1``. Position 0 (BOS) is never scored.
A bucket ``[lo, hi)`` holds the tokens at positions ``lo <= t < hi``.

All sums are accumulated in float64 so that the perplexity of a large validation set does not
depend on the batch size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def default_edges(n: int, window: int) -> list[int]:
    """Bucket edges ``[0, w, 2w, ..., n]`` (the last bucket ends at ``n`` and may be shorter).

    Args:
        n: sequence length (> 0).
        window: bucket width ``w`` (> 0), normally the model's native context.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    edges = list(range(0, n, window)) + [n]
    return edges


def check_edges(edges: Sequence[int], name: str = "edges") -> list[int]:
    """Validate bucket edges: at least two, non-negative, strictly increasing integers."""
    out = [int(e) for e in edges]
    if len(out) < 2:
        raise ValueError(f"{name} must hold at least 2 edges (one bucket), got {list(edges)}")
    if out[0] < 0 or any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"{name} must be non-negative and strictly increasing, got {out}")
    return out


def _ppl(nll_sum: float, count: int) -> float | None:
    """``exp(mean NLL)``; ``None`` (JSON null) for an empty bucket, ``inf`` on overflow."""
    if count == 0:
        return None
    mean = nll_sum / count
    return math.exp(mean) if mean < 700 else math.inf


class PositionPerplexity:
    """Accumulates token NLLs by position bucket over batches of sequences.

    Usage::

        acc = PositionPerplexity(edges=default_edges(n, w), window=w)
        for batch in batches:
            acc.update(token_nll(model, ids, mask), target_mask)
        acc.result()  # {"overall": ..., "short": ..., "by_position": [...]}

    Args:
        edges: bucket edges over token positions (see :func:`check_edges`). Tokens at positions
            at or beyond the last edge count in ``overall`` only.
        window: ``w`` of the short-context perplexity (positions ``1 ... w-1``).
    """

    def __init__(self, edges: Sequence[int], window: int):
        if window < 2:
            raise ValueError(f"window must be >= 2 (the first scored position is 1), got {window}")
        self.edges = check_edges(edges)
        self.window = int(window)
        nb = len(self.edges) - 1
        self._sum = [0.0] * nb
        self._cnt = [0] * nb
        self._all = [0.0, 0]
        self._short = [0.0, 0]

    @staticmethod
    def _masked_sum(nll: torch.Tensor, mask: torch.Tensor, lo: int, hi: int) -> tuple[float, int]:
        """Sum and count of ``nll`` entries ``lo <= j < hi`` where ``mask`` is set."""
        lo, hi = max(lo, 0), min(hi, nll.shape[1])
        if hi <= lo:
            return 0.0, 0
        m = mask[:, lo:hi]
        return float(nll[:, lo:hi].double()[m].sum()), int(m.sum())

    def update(self, nll: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add a batch.

        Args:
            nll: ``[b, n-1]`` per-token NLL, entry ``j`` scores position ``j+1``.
            mask: ``[b, n-1]`` bool, True where the target token is real (not padding);
                None means all entries count.
        """
        if nll.ndim != 2:
            raise ValueError(f"nll must be 2-D [b, n-1], got shape {tuple(nll.shape)}")
        if mask is None:
            mask = torch.ones_like(nll, dtype=torch.bool)
        elif mask.shape != nll.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} must equal nll shape {tuple(nll.shape)}")
        mask = mask.bool()
        s, c = self._masked_sum(nll, mask, 0, nll.shape[1])
        self._all[0] += s
        self._all[1] += c
        s, c = self._masked_sum(nll, mask, 0, self.window - 1)
        self._short[0] += s
        self._short[1] += c
        for i, (lo, hi) in enumerate(zip(self.edges, self.edges[1:])):
            # position t = j + 1 lies in [lo, hi)  <=>  lo - 1 <= j < hi - 1
            s, c = self._masked_sum(nll, mask, lo - 1, hi - 1)
            self._sum[i] += s
            self._cnt[i] += c

    def result(self) -> dict:
        """JSON-ready summary: perplexity, mean NLL (nats/token) and token count per group."""

        def entry(s: float, c: int) -> dict:
            return {"ppl": _ppl(s, c), "nll": (s / c if c else None), "tokens": c}

        return {
            "overall": entry(*self._all),
            "short": {**entry(*self._short), "window": self.window},
            "by_position": [
                {"start": lo, "end": hi, **entry(s, c)}
                for lo, hi, s, c in zip(self.edges, self.edges[1:], self._sum, self._cnt)
            ],
        }
