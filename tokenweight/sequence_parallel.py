"""The token-weighted loss of sequence shards: weights of the whole sequence, loss of the shard.

Under sequence parallelism (DeepSpeed Ulysses through HF ``Trainer``/``accelerate``, or any engine
that splits every sequence into contiguous shards over a process group of ``K`` ranks) a rank holds
tokens ``[r·L, (r+1)·L)`` of every row and computes the outputs of those positions only. The
paper's weights are defined on the whole sequence: dense and sparse normalise per sequence, top-κ is
a top-κ of the sequence, tie-breaking keys come from its tokens. A shard alone would weigh
differently, so :func:`sharded_loss`:

1. runs the model on its shard (``input_ids``, global ``position_ids``) with the output layer
   replaced by the chunked NLL of the pre-shifted targets ``shift_labels`` (entry ``t`` is the label
   of the token after the one at global position ``position_ids[t]``; the sequence's last entry is
   -100), as DeepSpeed's ``UlyssesSPDataLoaderAdapter`` and HF's context-parallel buffers hand them over;
2. gathers, over the group, the per-token NLL (detached), the targets' mask, the token ids and the
   token-aligned ``short_nll`` column (``b·n`` numbers each: nothing next to the activations), puts
   them in sequence order by the shards' global ``position_ids`` (so any layout works: Ulysses'
   contiguous shards, torch context parallelism's load-balanced chunks), computes
   the weights exactly as one process does on the whole sequence (:class:`TokenWeighting` ``.weigh``
   on the gathered batch: same scheme, same keys), and keeps its shard's slice;
3. returns the shard's ``Σ w·nll`` with its local count; the caller divides by the count of every
   shard of every micro-batch and process (``scored_tokens`` of the shards, summed over the world),
   so the gradients summed over the group are exactly those of one process with the whole sequence.

Short-context NLL under sequence parallelism: the batch's ``short_nll`` column (sharded like
``input_ids``, since it is token-aligned) or a :class:`~tokenweight.short_nll.FrozenScorer` run on the
gathered sequence. Self-scoring (the live model on short windows) is refused: its attention is the
engine's, split over the group. Packed documents (``doc_lengths`` or restarting positions) are
refused too: Ulysses' attention drops attention masks.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import Tensor, nn

from tokenweight.short_nll import SHORT_NLL_COLUMN, FrozenScorer
from tokenweight.token_weighting import (
    IGNORE_INDEX,
    TokenBatch,
    TokenWeighting,
    WeightedLoss,
    nll_output_layer,
    router_aux_loss,
    unwrap,
)

__all__ = ["gather_shards", "sharded_loss"]


def gather_shards(x: Tensor, group) -> Tensor:
    """``[b, L]`` shards of the ranks of ``group`` -> ``[b, K·L]`` in rank order (no gradient)."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.detach().contiguous(), group=group)
    return torch.cat(parts, dim=1)


@contextlib.contextmanager
def unsharded_attention():
    """transformers' own attention functions within: DeepSpeed's Ulysses replaces
    ``ALL_ATTENTION_FUNCTIONS[impl]`` process-wide (its "local" override) with an all-to-all over
    the group, which a frozen scorer run on the gathered sequence must not go through."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    saved = dict(ALL_ATTENTION_FUNCTIONS._local_mapping)
    ALL_ATTENTION_FUNCTIONS._local_mapping.clear()
    try:
        yield
    finally:
        ALL_ATTENTION_FUNCTIONS._local_mapping.update(saved)


def _check(tw: TokenWeighting, batch) -> None:
    if "shift_labels" not in batch or "position_ids" not in batch:
        raise ValueError(
            "a sequence shard needs 'shift_labels' and global 'position_ids' (DeepSpeed's UlyssesSPDataLoaderAdapter "
            "makes them): give the collator position_ids (PadCollator(return_position_ids=True))"
        )
    if batch.get("doc_lengths") is not None:
        raise ValueError("packed rows (doc_lengths) under sequence parallelism are not supported: train unpacked rows")
    if tw.scheme.needs_short and tw.short is not None and not isinstance(tw.short, FrozenScorer):
        raise ValueError(
            f"{tw.short!r} under sequence parallelism is not supported (self-scoring runs the live model, whose "
            "attention is split over the group): use frozen scoring (--scorer frozen, FrozenScorer, a short_nll column)"
        )


def sharded_loss(tw: TokenWeighting, model: nn.Module, batch, group) -> tuple[WeightedLoss, Tensor]:
    """``(WeightedLoss of this shard, its differentiable nll [b, L])`` (module docstring).

    ``batch``: the shard (``input_ids``, ``position_ids``, ``shift_labels`` ``[b, L]``; optional
    ``attention_mask`` and ``short_nll``, sharded alike); ``group``: the sequence-parallel process
    group (every rank of it must call this with its shard of the same rows). ``weights``,
    ``short_nll`` and ``mask`` of the result are the shard's slices.
    """
    _check(tw, batch)
    ids, targets, pos = batch["input_ids"], batch["shift_labels"].long(), batch["position_ids"]
    b, length = ids.shape
    if targets.shape != ids.shape:
        raise ValueError(f"shift_labels has shape {tuple(targets.shape)}, input_ids {tuple(ids.shape)}")
    pos = pos.expand(b, -1) if pos.shape[0] == 1 else pos
    lm = unwrap(model)
    mask = targets != IGNORE_INDEX
    with nll_output_layer(lm.get_output_embeddings(), targets.masked_fill(~mask, IGNORE_INDEX), tw.chunk_size,
                          model=lm, loss_kernel=tw.loss_kernel, aligned=True):  # fmt: skip
        outputs = model(input_ids=ids, position_ids=pos, use_cache=False)
    nll = outputs["logits"] if isinstance(outputs, dict) else outputs[0]  # [b, L]
    aux = router_aux_loss(lm, outputs)
    weights = short = None
    if tw.scheme.needs_short:
        # the shards in sequence order, whatever the engine's layout (Ulysses: contiguous by rank;
        # torch's context parallelism: load-balanced chunks): placed by their global positions
        positions = gather_shards(pos, group)
        order = positions.argsort(dim=1)
        n = order.shape[1]
        if not torch.equal(positions.gather(1, order), torch.arange(n, device=pos.device).expand(b, -1)):
            raise ValueError(
                "the shards' position_ids are not one sequence's 0..n-1 (packed rows?): sequence parallelism takes "
                "unpacked rows"
            )

        def whole(x: Tensor) -> Tensor:  # [b, L] shard -> [b, n] in sequence order
            return gather_shards(x, group).gather(1, order)

        full = {"input_ids": whole(ids)}  # as one process sees the rows
        long, full_mask = whole(nll)[:, : n - 1], whole(mask)[:, : n - 1]
        full["labels"] = torch.cat(
            [full["input_ids"][:, :1], torch.where(full_mask, full["input_ids"][:, 1:], -100)], 1
        )
        for key in ("attention_mask", SHORT_NLL_COLUMN):
            if batch.get(key) is not None:
                full[key] = whole(batch[key])
        with unsharded_attention():  # a FrozenScorer runs on the whole rows, as on one process
            w_full, s_full = tw.weigh(lm, TokenBatch.of(full), long, full_mask)
        weights = torch.nn.functional.pad(w_full, (0, 1)).gather(1, pos)  # this shard's targets
        short = torch.nn.functional.pad(s_full, (0, 1)).gather(1, pos)
    return tw.result(nll, mask, aux, weights, short), nll
