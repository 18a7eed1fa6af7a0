"""Effective-context exposure balancing (EXACT, Zhu et al., arXiv 2605.10544): weights from where
each target sits, not from a scorer.

In training with document masks, a target's *effective context* is the visible prefix of its own
document: ``e = p`` for the token at position ``p`` of its document (``p`` tokens precede it). Most
targets of a corpus of short and medium documents have a short ``e``; EXACT gives the targets of
the long tail a fixed extra share of the supervision, spread over the tail's logarithmic buckets by
inverse frequency. Our definition (docs/METHOD.md, "Exposure balancing", has every choice made):

- scored targets ``t`` of a unit (a row, or with groups a document: the same unit as every other
  scheme's normalisation), ``T`` of them, effective contexts ``e_t >= 1``;
- the tail: ``e_t >= τ`` (default the base window ``w``: the contexts a short-context model never
  saw); bucket ``k(e) = floor(log_β e)`` (β = 2);
- extra mass ``α·T``, split equally over the tail buckets present (``K`` of them), and within a
  bucket equally over its ``c_k`` targets: ``u_t = 1 + α·T / (K·c_k)`` in the tail, ``1`` elsewhere
  (so a rare bucket's targets get more each, every bucket the same total);
- multiplied into any other scheme's weights ``v_t`` (1 for the exposure scheme alone) and
  L1-normalised to mean 1 over the unit: ``w_t = v_t·u_t · T / Σ v·u``; a unit without tail
  targets keeps ``v``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["effective_context", "exposure_factors", "apply_exposure", "bucket_histogram", "length_histogram"]


def effective_context(n: int, doc_lengths: list[list[int]] | None = None, device=None) -> Tensor:
    """``[b, n-1]`` long (``b = len(doc_lengths)``, else ``[1, n-1]``): the visible same-document
    prefix of every target (entry ``j`` is token ``j+1``): ``j + 1`` in an unpacked row, the token's
    position within its document in a packed one (0 at a document's first token, which is no target)."""
    if doc_lengths is None:
        return torch.arange(1, n, device=device)[None]
    from tokenweight.documents import document_positions

    return document_positions(doc_lengths, n, device=device)[:, 1:]


def exposure_factors(prefix: Tensor, mask: Tensor, alpha: float, tail: int, base: float = 2.0) -> Tensor:
    """``u [b, T]`` float32 (the module docstring) of rows of targets: ``prefix`` effective contexts,
    ``mask`` the scored targets (unscored: 0, never counted)."""
    if not (isinstance(alpha, float | int) and alpha >= 0 and math.isfinite(alpha)):
        raise ValueError(f"exposure α must be a finite number >= 0, got {alpha!r}")
    if isinstance(tail, bool) or not isinstance(tail, int) or tail < 1:
        raise ValueError(f"exposure tail τ must be an integer >= 1, got {tail!r}")
    if not base > 1:
        raise ValueError(f"exposure bucket base must be > 1, got {base!r}")
    prefix = prefix.to(mask.device).expand_as(mask)
    in_tail = mask & (prefix >= tail)
    # bucket of every tail target; exact for powers of the base (a float log would put 8 in bucket 2.999...)
    bucket = torch.floor(torch.log(prefix.clamp(min=1).double()) / math.log(base) + 1e-9).long()
    bucket = torch.where(in_tail, bucket, -1)
    width = int(bucket.max()) + 2 if bucket.numel() else 1
    counts = torch.zeros(mask.shape[0], width, dtype=torch.float64, device=mask.device)
    counts.scatter_add_(1, bucket + 1, in_tail.double())
    counts[:, 0] = 0  # column 0 collects the non-tail targets
    buckets_present = (counts > 0).sum(1, keepdim=True).clamp(min=1).double()
    per_target = counts.gather(1, bucket + 1)
    t = mask.sum(1, keepdim=True).double()
    extra = torch.where(in_tail, alpha * t / (buckets_present * per_target.clamp(min=1)), 0.0)
    return torch.where(mask, 1.0 + extra, 0.0).float()


def apply_exposure(v: Tensor, prefix: Tensor, mask: Tensor, alpha: float, tail: int, base: float = 2.0) -> Tensor:
    """``v [b, T]`` (weights of scored targets) times :func:`exposure_factors`, L1-normalised to mean
    1 over each row's scored targets; rows without tail targets keep ``v``."""
    u = exposure_factors(prefix, mask, alpha, tail, base)
    w = torch.where(mask, v * u, 0.0).double()
    total = w.abs().sum(1, keepdim=True)
    scaled = w * mask.sum(1, keepdim=True) / total.clamp(min=torch.finfo(torch.float64).tiny)
    has_tail = (mask & (prefix.to(mask.device).expand_as(mask) >= tail)).any(1, keepdim=True)
    return torch.where(has_tail & (total > 0), scaled, v.double()).float()


def bucket_histogram(prefix: Tensor, mask: Tensor, base: float = 2.0) -> dict[int, int]:
    """Scored targets per bucket ``floor(log_β e)`` (the exposure histogram a report draws)."""
    e = prefix.to(mask.device).expand_as(mask)[mask].clamp(min=1).double()
    bucket = torch.floor(torch.log(e) / math.log(base) + 1e-9).long()
    values, counts = torch.unique(bucket, return_counts=True)
    return {int(k): int(c) for k, c in zip(values.tolist(), counts.tolist())}


def length_histogram(doc_lengths, base: float = 2.0) -> dict[int, int]:
    """The exposure histogram of documents of the given token lengths: targets per bucket
    ``floor(log_β e)`` over every document's targets ``e = 1 … L-1`` (what :func:`bucket_histogram`
    gives for the same documents as rows), computed per bucket, not per token."""
    if not base > 1:
        raise ValueError(f"exposure bucket base must be > 1, got {base!r}")
    lengths = [int(x) for x in doc_lengths if int(x) > 1]
    out: dict[int, int] = {}
    if not lengths:
        return out
    top = max(lengths) - 1
    k = 0
    while math.ceil(base**k) <= top:
        lo, hi = math.ceil(base**k), math.ceil(base ** (k + 1)) - 1  # the integers of bucket k
        count = sum(max(0, min(length - 1, hi) - lo + 1) for length in lengths)
        if count:
            out[k] = count
        k += 1
    return out
