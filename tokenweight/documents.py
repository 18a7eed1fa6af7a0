"""Packed sequences: several documents in one row, each attending only to itself.

A packed row of ``n`` tokens holds whole documents (or chunks of long ones) back to back; its
*document lengths* ``[l_0, l_1, ...]`` (``sum <= n``; the rest of the row is right padding) say
where each one starts. Every rule of the method is applied per document, so that a packed row
gives exactly what its documents give when run one by one:

- attention: a token sees only the earlier tokens of its own document (block-diagonal causal mask);
- positions restart at 0 at every document (RoPE sees the same positions as alone);
- the first token of a document is not a target (nothing of its own document precedes it), so the
  prediction that crosses a boundary is never scored nor trained;
- short windows (scoring, self-scoring, LongPPL's windows) restart at every document start, and a
  document of at most ``w`` tokens has no long-range tokens (its long and short contexts coincide).

How a forward pass is told (:func:`forward_kwargs`): on sdpa through a 4D boolean mask
``[b, 1, n, n]`` (True where attention is allowed: sdpa's own mask format, one byte per entry, and
independent of the compute dtype under autocast), on eager through the same mask as an additive
float mask (0 / the dtype's minimum: eager adds a boolean mask as 0/1 numbers, silently wrong);
transformers 5.x passes a prepared 4D mask through unchanged; both with ``position_ids``; on
flash-attention 2 through ``position_ids`` alone, which transformers turns into the
variable-length kernel's ``cu_seqlens`` (its flattening convention, as
``DataCollatorWithFlattening`` produces: no attention mask, positions restarting at 0), so no
``[n, n]`` mask is ever built.

A forward pass that only reads the model's predictions (scoring, evaluation, heat maps) also takes
:func:`prediction_kwargs`: a mixture-of-experts model's router loss is switched off there, since
it would be computed from that mask (and fail on it).

Pure functions on tensors; ``doc_lengths`` is a list (one entry per row) of lists of ints.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "check_doc_lengths",
    "segment_ids",
    "document_positions",
    "document_starts",
    "target_mask",
    "block_causal_mask",
    "forward_kwargs",
    "model_forward_kwargs",
    "prediction_kwargs",
    "attn_implementation",
    "segments",
]


def check_doc_lengths(doc_lengths: list[list[int]], n: int) -> None:
    """ValueError unless every row's document lengths are positive ints summing to at most ``n``."""
    for row, lengths in enumerate(doc_lengths):
        if not lengths or any((not isinstance(x, int)) or x < 1 for x in lengths):
            raise ValueError(f"row {row}: document lengths must be positive integers, got {lengths!r}")
        if sum(lengths) > n:
            raise ValueError(f"row {row}: document lengths {lengths!r} sum to {sum(lengths)} > n = {n}")


def segments(doc_lengths: list[list[int]]) -> list[tuple[int, int, int]]:
    """``(row, start, length)`` of every document of the batch, in row order."""
    out = []
    for row, lengths in enumerate(doc_lengths):
        start = 0
        for length in lengths:
            out.append((row, start, int(length)))
            start += int(length)
    return out


def segment_ids(doc_lengths: list[list[int]], n: int, device=None) -> Tensor:
    """[b, n] long: the document index of every position within its row, -1 for padding."""
    check_doc_lengths(doc_lengths, n)
    out = torch.full((len(doc_lengths), n), -1, dtype=torch.long)
    for row, lengths in enumerate(doc_lengths):
        start = 0
        for k, length in enumerate(lengths):
            out[row, start : start + length] = k
            start += length
    return out.to(device) if device is not None else out


def document_positions(doc_lengths: list[list[int]], n: int, device=None) -> Tensor:
    """[b, n] long: the position of every token within its document (0 at each start; padding
    continues the last document's count, as a right-padded single document would)."""
    check_doc_lengths(doc_lengths, n)
    out = torch.arange(n, dtype=torch.long).repeat(len(doc_lengths), 1)
    for row, start, length in segments(doc_lengths):
        end = n if start + length == sum(doc_lengths[row]) else start + length
        out[row, start:end] = torch.arange(end - start)
    return out.to(device) if device is not None else out


def document_starts(doc_lengths: list[list[int]], n: int, device=None) -> Tensor:
    """[b, n] bool: True at the first token of every document."""
    check_doc_lengths(doc_lengths, n)
    out = torch.zeros(len(doc_lengths), n, dtype=torch.bool)
    for row, start, _ in segments(doc_lengths):
        out[row, start] = True
    return out.to(device) if device is not None else out


def target_mask(doc_lengths: list[list[int]], n: int, device=None) -> Tensor:
    """[b, n-1] bool, aligned like the labels of a causal LM (entry ``j`` is target ``j+1``): True
    where the target is a token of the same document as its context (not a document's first token,
    not padding)."""
    seg = segment_ids(doc_lengths, n)
    starts = document_starts(doc_lengths, n)
    out = (seg[:, 1:] >= 0) & ~starts[:, 1:]
    return out.to(device) if device is not None else out


def block_causal_mask(doc_lengths: list[list[int]], n: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """[b, 1, n, n] additive mask: 0 where query ``i`` may attend key ``j`` (same document,
    ``j <= i``), ``finfo(dtype).min`` elsewhere. A padding query attends to itself only (a row of
    all-masked scores would give NaN in sdpa)."""
    seg = segment_ids(doc_lengths, n, device=device)
    causal = torch.ones(n, n, dtype=torch.bool, device=seg.device).tril()
    allowed = (seg[:, :, None] == seg[:, None, :]) & causal & (seg[:, :, None] >= 0)
    allowed |= torch.eye(n, dtype=torch.bool, device=seg.device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=seg.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def forward_kwargs(
    doc_lengths: list[list[int]], n: int, attn_implementation: str, dtype: torch.dtype = torch.float32, device=None
) -> dict:
    """The ``attention_mask``/``position_ids`` arguments of a document-masked forward pass.

    ``flash_attention_2`` (and other variable-length kernels whose name starts with ``flash``):
    ``position_ids`` only, and the batch must have been flattened into one row (``b == 1``), as
    transformers' flattening convention requires. ``sdpa``: a boolean 4D mask (True = attend) and
    ``position_ids``. Every other implementation (eager): an additive 4D mask in ``dtype`` (the
    model's compute dtype) and ``position_ids``.
    """
    positions = document_positions(doc_lengths, n, device=device)
    if attn_implementation.startswith("flash"):
        if len(doc_lengths) != 1:
            raise ValueError(
                f"flash-attention's variable-length path needs the packed batch flattened into one row, "
                f"got {len(doc_lengths)} rows"
            )
        return {"attention_mask": None, "position_ids": positions}
    mask = block_causal_mask(doc_lengths, n, dtype, device=device)
    if attn_implementation == "sdpa":
        mask = mask == 0
    return {"attention_mask": mask, "position_ids": positions}


def attn_implementation(model) -> str:
    """The attention implementation of a transformers model (``config._attn_implementation``;
    ``sdpa`` when it does not say)."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None) or "sdpa"


def model_forward_kwargs(model, doc_lengths: list[list[int]], n: int, device=None) -> dict:
    """:func:`forward_kwargs` for ``model``: its attention implementation and, for an additive
    mask, the dtype of its floating-point parameters (flash-attention takes no mask)."""
    impl = attn_implementation(model)
    if impl.startswith("flash"):
        return forward_kwargs(doc_lengths, n, impl, device=device)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return forward_kwargs(doc_lengths, n, impl, dtype=dtype, device=device)


def prediction_kwargs(model) -> dict:
    """The extra arguments of a forward pass (or ``generate``) that only reads ``model``'s predictions:
    ``{"output_router_logits": False}`` when its config (or its text config) has that setting, else
    ``{}`` (a model without routers need not take the argument).

    A mixture-of-experts model (Mixtral, Qwen3-MoE, ...) saved with ``output_router_logits=True``
    (as one trained with its router loss is) computes its load-balancing loss in every forward,
    from its router logits and the ``attention_mask`` it was given, and that fails whenever the two
    differ in shape: a 4D document mask, or a 2D mask that covers a KV cache (likelihood scoring,
    generation). Its predictions do not depend on that loss, so every forward that only reads them
    (scoring, evaluation, heat maps, the output-layer probe) switches it off; training forwards,
    which want it, do not use this.
    """
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if any(hasattr(c, "output_router_logits") for c in (config, text)):
        return {"output_router_logits": False}
    return {}
