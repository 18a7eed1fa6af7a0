"""Log-probability and argmax hit of target tokens at chosen positions, without full logits.

Episode recall and the likelihood tasks need, at some positions of a forward pass, ``log p`` of a
target token and whether it is the model's argmax. The full ``[b, n, V]`` logits of a long
sequence do not fit (32k tokens × Llama-3's 128k vocabulary is 16 GiB in float32), so this follows
:func:`tokenweight.scoring.token_nll`'s rule: the model's own forward runs with its output layer
replaced (:func:`tokenweight.logits.replaced_output_layer`, for every model scoring's
``_split_model`` accepts), and the replacement projects only the chosen positions, in chunks of
scoring's ``_head_chunk`` size (a few MB of logits on CPU, about 1 GiB on a GPU), post-processed as
the model does (:func:`tokenweight.scoring.head_logits`: Gemma-2's soft-capping, ...). A model
whose output layer cannot be replaced exactly runs unchanged, with full logits.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def logprobs_at(model, keep: Tensor, targets: Tensor, **forward) -> tuple[Tensor, Tensor]:
    """``(logp, hit)`` of ``targets`` at the positions ``keep`` of one forward pass.

    Args:
        model: a HF causal LM (on any device; ``keep``, ``targets`` and ``forward``'s tensors on it).
        keep: ``[b, L]`` bool, the positions whose next-token distribution is needed; ``K`` of them.
        targets: ``[K]`` token ids, one per kept position in row-major order.
        forward: the forward's inputs (``input_ids``, ``attention_mask``, ``position_ids``,
            ``past_key_values``, ``use_cache``); :func:`tokenweight.documents.prediction_kwargs`
            is added.

    Returns:
        ``logp`` ``[K]`` float32 (log-softmax in float32 of the model's logits) and ``hit`` ``[K]``
        bool (the target is the argmax; ties go to the lowest id, as ``argmax``).
    """
    from tokenweight.documents import prediction_kwargs
    from tokenweight.logits import replaced_output_layer
    from tokenweight.scoring import _split_model, head_logits

    forward = {**forward, **prediction_kwargs(model)}  # a mixture of experts: no router loss
    split = _split_model(model)
    if split is None:  # this model's output layer cannot be replaced: its full logits
        out = _scores(model(**forward).logits[keep], targets, lambda z: z.float())
    else:
        head, post = split

        def at_kept(hidden: Tensor) -> Tensor:  # the output layer's replacement: [b, L, d] -> [K, 2]
            return _scores(hidden[keep], targets, lambda h: head_logits(head, h, post), head.out_features)

        with replaced_output_layer(model, at_kept, post):
            out = model(**forward).logits
    return out[:, 0], out[:, 1].bool()


def _scores(rows: Tensor, targets: Tensor, logits_of, vocab: int | None = None) -> Tensor:
    """``[K, 2]`` float32: log p of each target and whether it is the argmax, from ``rows`` ``[K, ·]``
    (hidden states or logits; ``logits_of`` turns a chunk of them into float32 logits) in chunks."""
    from tokenweight.scoring import _head_chunk

    if rows.shape[0] != targets.shape[0]:
        raise RuntimeError(f"model returned {rows.shape[0]} rows for {targets.shape[0]} kept positions")
    out = torch.empty(rows.shape[0], 2, dtype=torch.float32, device=rows.device)
    targets = targets.to(rows.device)
    chunk = _head_chunk(vocab or rows.shape[-1], rows.device)
    for i in range(0, rows.shape[0], chunk):
        lp = torch.log_softmax(logits_of(rows[i : i + chunk]), dim=-1)
        t = targets[i : i + chunk]
        out[i : i + chunk, 0] = lp.gather(1, t[:, None])[:, 0]
        out[i : i + chunk, 1] = (lp.argmax(-1) == t).float()
    return out
