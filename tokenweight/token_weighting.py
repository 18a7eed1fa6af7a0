"""The token-weighting component: one batch in; the weighted loss, its normaliser, NLL and weights out.

Every way of training with tokenweight calls :class:`TokenWeighting`: a user's own PyTorch loop,
any ``transformers.Trainer`` (:class:`tokenweight.train.trainer.TokenWeightingMixin`, TRL's
``SFTTrainer`` included) and our own ``tokenweight train``/``pretrain``. One step, docs/METHOD.md::

    out = TokenWeighting("dense:0.75", short=FrozenScorer(scorer, window=8192))(model, batch)
    out.loss().backward()             # Σ w·nll / scored tokens (+ an MoE's router loss)

1. **One forward of the model itself** (so DDP/FSDP/ZeRO hooks run as usual), with its output
   layer swapped for the chunked NLL (:func:`nll_output_layer`): the ``[b, n, V]`` logits never
   exist, and the family's logit post-processing (Gemma-2's soft-cap, Granite's and Cohere's
   scales) is applied inside, so the NLL and its gradients are the model's own.
2. **Masks**: a target counts when its label is not -100 and, in a packed row, it is not a
   document's first token; padding (labelled -100 by every collator) and prompt tokens of a
   completion-only loss count nowhere: not in the loss, not in T, not in the normaliser.
3. **Short-context NLL** from a source (:mod:`tokenweight.short_nll`) or the batch's ``short_nll``
   column; **weights** ``= scheme(nll.detach(), short, mask)``, constants. Sparse schemes break ties
   with keys drawn from each sequence's own tokens and the seed (:func:`tie_keys`), so a sequence
   gets the same weights in any batch, after a resume, and on any number of processes: no row index.
4. **The loss as a sum with its normaliser** (:class:`WeightedLoss`): ``loss_sum = Σ w·nll`` over the
   scored tokens and ``count`` = their number, so a caller normalises locally (``out.loss()``) or
   globally (``out.loss(num_items=tokens of the whole accumulated, multi-process batch)``), plus
   every other term of the model's own loss: an MoE's router auxiliary loss times its coefficient,
   exactly as ``model(labels=...)`` adds it.

A batch is a mapping (what a collator returns): ``input_ids [b, n]`` (integer tensor), optional
``labels [b, n]`` (-100 = ignored; default ``input_ids`` with -100 where ``attention_mask`` is 0),
``attention_mask [b, n]`` (1 = token, right padding), packed-document information as
``doc_lengths`` (``[b, D]`` zero-padded tensor or lists, :mod:`tokenweight.documents`) or as
``position_ids`` restarting at 0 at every document (HF's and TRL's padding-free flattening), and
``short_nll [b, n]`` (token-aligned, :func:`tokenweight.short_nll.column_short_nll`). Other keys are
ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tokenweight.choices import DEFAULT_CHUNK_SIZE, LOSS_KERNELS, WEIGHT_NORMS
from tokenweight.documents import (
    attn_implementation,
    check_doc_lengths,
    model_forward_kwargs,
    segment_ids,
    segments,
    target_mask,
)
from tokenweight.errors import UsageError
from tokenweight.exposure import effective_context
from tokenweight.logits import LogitPostprocessing, logit_postprocessing, output_layer_problem, replaced_output_layer
from tokenweight.loss import chunked_nll, weighted_nll_loss
from tokenweight.short_nll import SHORT_NLL_COLUMN, column_short_nll
from tokenweight.weighting import WeightingScheme

__all__ = [
    "IGNORE_INDEX",
    "LOSS_KERNELS",
    "WEIGHT_NORMS",
    "NonFiniteLossError",
    "TokenBatch",
    "TokenWeighting",
    "WeightedLoss",
    "check_trainable",
    "nll_output_layer",
    "scored_tokens",
    "tie_keys",
]

IGNORE_INDEX = -100


class NonFiniteLossError(UsageError):
    """The training NLL became NaN/inf at a scored token: names the rows (and the caller the step)."""


def check_trainable(model: nn.Module, name: str | None = None) -> None:
    """``UsageError`` (one line naming the model and the alternative) when the chunked loss cannot
    be ``model``'s own loss: its output layer is not an ``nn.Linear``, or its forward changes the
    output layer's result in a way :func:`tokenweight.logits.logit_postprocessing` has no rule for
    (checked once per model with a forward of four tokens: :func:`tokenweight.logits.output_layer_problem`)."""
    problem = output_layer_problem(model)
    if problem is None:
        return
    config = getattr(model, "config", None)
    what = f"model {name!r}" if name else f"this {type(model).__name__}"
    kind = getattr(config, "model_type", None)
    raise UsageError(
        f"{what}{f' (model type {kind!r})' if kind else ''} cannot be trained with the chunked token-weighted "
        f"loss: {problem}; train a model of a supported family (docs/TRAINING.md, 'Model families': Llama, "
        "Qwen, Mistral, Gemma, Phi-3, OLMo, GPT-NeoX, Granite, Cohere, ...), or use this one only to score "
        "(tokenweight score, eval)"
    )


@contextlib.contextmanager
def nll_output_layer(
    head: nn.Linear,
    targets: Tensor,
    chunk_size: int,
    model: nn.Module | None = None,
    loss_kernel: str = "chunked",
    aligned: bool = False,
):
    """Make ``head(hidden [b, n, d])`` return the chunked NLL ``[b, n-1]`` of ``targets [b, n-1]``
    (``aligned``: ``[b, n]`` of pre-shifted ``targets [b, n]``, as a sequence shard's ``shift_labels``).

    The NLL at position ``t`` is that of ``targets[:, t]`` predicted from ``hidden[:, t]``. With
    ``model`` (whose output layer ``head`` is), the model's logit post-processing is applied inside
    the chunked loss and switched off in the model's forward (:func:`tokenweight.logits.replaced_output_layer`),
    so the forward returns the model's own NLL. The instance-level ``forward`` (and every switched
    setting) is restored on exit, also on error. ``loss_kernel="cce"``: the same NLL from
    Cut-Cross-Entropy's fused kernel (:func:`tokenweight.loss_kernels.cce_nll`; ``chunk_size`` unused).
    """
    if loss_kernel not in LOSS_KERNELS:
        raise ValueError(f"loss_kernel must be one of {', '.join(LOSS_KERNELS)}, got {loss_kernel!r}")
    post = logit_postprocessing(model.config) if model is not None else LogitPostprocessing()

    extra = 0 if aligned else 1  # hidden positions beyond the targets: the last one predicts nothing

    def forward(hidden: Tensor) -> Tensor:
        if hidden.shape[:-1] != (targets.shape[0], targets.shape[1] + extra):
            raise ValueError(f"output layer got hidden states {tuple(hidden.shape)} for targets {tuple(targets.shape)}")
        hidden = hidden[:, : targets.shape[1]]
        if loss_kernel == "cce":
            from tokenweight.loss_kernels import cce_nll

            return cce_nll(hidden, head, targets, postprocessing=post)
        return chunked_nll(hidden, head, targets, chunk_size=chunk_size, postprocessing=post)

    if model is None:
        had, previous = "forward" in head.__dict__, head.__dict__.get("forward")
        head.forward = forward
        try:
            yield
        finally:
            if had:
                head.forward = previous
            else:
                del head.forward
        return
    if model.get_output_embeddings() is not head:
        raise ValueError("head must be model.get_output_embeddings()")
    with replaced_output_layer(model, forward, post):
        yield


class ThroughWrapper(nn.Module):
    """A causal LM that calls the wrapped (e.g. FSDP) model's forward, so sharded parameters are
    gathered by the wrapper; it exposes no ``get_decoder``, so scoring takes the full-logits path."""

    def __init__(self, wrapped: nn.Module):
        super().__init__()
        self.wrapped = wrapped

    def forward(self, input_ids=None, attention_mask=None, use_cache=False, position_ids=None, **kwargs):
        extra = {} if position_ids is None else {"position_ids": position_ids}
        return self.wrapped(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra)


def unwrap(model: nn.Module) -> nn.Module:
    """The causal LM inside DDP/DeepSpeed/``torch.compile`` wrappers (their ``.module``/``_orig_mod``)."""
    while not hasattr(model, "get_output_embeddings"):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise ValueError(
                f"model must be a transformers causal LM (or a DDP/DeepSpeed wrapper of one), "
                f"got {type(model).__name__}"
            )
        model = inner
    return model


def routes_experts(model: nn.Module) -> bool:
    """True when ``model``'s forward returns a router auxiliary loss (an MoE with ``output_router_logits``)."""
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return bool(getattr(text, "output_router_logits", False))


def router_aux_loss(model: nn.Module, outputs) -> Tensor | None:
    """``coef · aux_loss`` of an MoE forward's outputs, the term ``model(labels=...)`` adds to its CE
    (None when the forward returned none)."""
    aux = outputs.get("aux_loss") if isinstance(outputs, Mapping) else getattr(outputs, "aux_loss", None)
    if not isinstance(aux, Tensor):
        return None
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    coef = getattr(config, "router_aux_loss_coef", None)
    if coef is None:
        raise UsageError(
            f"model type {getattr(config, 'model_type', '?')!r} returns a router loss without router_aux_loss_coef: "
            "set output_router_logits=False in its config to train it without its router loss"
        )
    return coef * aux.float()


def document_forward(model: nn.Module, input_ids: Tensor, attention_mask, targets: Tensor, doc_lengths):
    """``(forward kwargs, targets of the output layer, restore)`` of a training forward; ``restore``
    maps the forward's NLL back to ``[b, n-1]``. ``doc_lengths`` None: the batch as it is.

    Packed rows (:func:`tokenweight.documents.forward_kwargs`, by ``config._attn_implementation``):
    on sdpa a block-diagonal causal 4D boolean mask, on eager the same as an additive mask in the
    model's dtype, with positions restarting at 0 (the mask is ``[b, 1, n, n]``: ``b·n²`` bytes on
    sdpa, 1 GiB per row at 32k, 4x that on eager in float32: use flash-attention for long rows); on
    flash-attention the batch is flattened into one row without its padding (HF's flattening
    convention, ``DataCollatorWithFlattening``: no mask, positions restarting at every document, so
    also at every row), the targets with it (each row's last token predicts nothing), and
    ``restore`` scatters the NLL back to the rows. An MoE that returns its router loss gets the
    restarting positions without a mask (transformers derives the same block-causal mask from them),
    since its load-balancing loss reads the attention mask as ``[b, n]``.
    """
    if doc_lengths is None:
        return {"input_ids": input_ids, "attention_mask": attention_mask}, targets, lambda nll: nll
    b, n = input_ids.shape
    if not attn_implementation(model).startswith("flash"):
        kwargs = model_forward_kwargs(model, doc_lengths, n, device=input_ids.device)
        if routes_experts(model):
            kwargs["attention_mask"] = None
        return {"input_ids": input_ids, **kwargs}, targets, lambda nll: nll
    lengths = torch.tensor([sum(d) for d in doc_lengths], device=input_ids.device)
    keep = torch.arange(n, device=input_ids.device)[None, :] < lengths[:, None]  # [b, n]: tokens, row-major
    flat_docs = [[x for d in doc_lengths for x in d]]
    total = int(lengths.sum())
    kwargs = model_forward_kwargs(model, flat_docs, total, device=input_ids.device)
    padded = torch.cat([targets, targets.new_full((b, 1), IGNORE_INDEX)], dim=1)  # [b, n]: target of every token
    flat_targets = padded[keep][None, :-1]

    def restore(nll: Tensor) -> Tensor:  # [1, total-1] -> [b, n-1]
        out = nll.new_zeros(b, n)
        out[keep] = torch.cat([nll[0], nll.new_zeros(1)])
        return out[:, :-1]

    return {"input_ids": input_ids[keep][None], **kwargs}, flat_targets, restore


def _int_tensor(batch: Mapping, key: str, shape=None) -> Tensor | None:
    x = batch.get(key)
    if x is None:
        return None
    if not isinstance(x, Tensor) or x.is_floating_point() or x.is_complex() or x.dim() != 2:
        got = f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(
            f"batch[{key!r}] must be an integer tensor [b, n], got {got}: collate the examples into tensors "
            "(tokenweight.PadCollator, or your collator with return_tensors='pt')"
        )
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"batch[{key!r}] has shape {tuple(x.shape)} but input_ids has {tuple(shape)}: pad them alike")
    return x


def _docs_from_positions(position_ids: Tensor, lengths: list[int]) -> list[list[int]] | None:
    """Document lengths of rows whose positions restart at 0 at every document (HF's packed-sequence
    rule: a document starts wherever a position is not the previous one + 1), over each row's
    ``lengths`` first tokens; None when no row restarts (plain rows)."""
    pos = position_ids.detach().cpu()
    out, packed = [], False
    for row, length in enumerate(lengths):
        p = pos[row if pos.shape[0] > 1 else 0, :length]
        starts = [0] + ((p[1:] != p[:-1] + 1).nonzero().flatten() + 1).tolist()
        packed |= len(starts) > 1
        out.append([b - a for a, b in zip(starts, starts[1:] + [length])] if length else [])
    return out if packed else None


@dataclass(frozen=True)
class TokenBatch:
    """A checked batch: ``input_ids``/``labels`` ``[b, n]`` long, ``attention_mask`` ``[b, n]`` or
    None, ``doc_lengths`` (lists, packed rows) or None, the token-aligned ``short_nll`` column or None."""

    input_ids: Tensor
    labels: Tensor
    attention_mask: Tensor | None = None
    doc_lengths: list[list[int]] | None = None
    short_column: Tensor | None = None
    #: the documents were read from restarting ``position_ids`` (a flattened, padding-free batch:
    #: each document is an example of its own, and rows are an artefact of the collator)
    flattened: bool = False

    @classmethod
    def of(cls, batch) -> TokenBatch:
        """Check a collated batch (ValueError naming the key and the fix) and read its documents."""
        if isinstance(batch, TokenBatch):
            return batch
        if not isinstance(batch, Mapping) or "input_ids" not in batch:
            keys = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise ValueError(f"batch must be a mapping with an 'input_ids' tensor [b, n], got {keys}")
        ids = _int_tensor(batch, "input_ids")
        if ids.shape[1] < 2:
            raise ValueError(f"input_ids must hold at least 2 tokens per row, got shape {tuple(ids.shape)}")
        mask = _int_tensor(batch, "attention_mask", ids.shape) if batch.get("attention_mask") is not None else None
        labels = _int_tensor(batch, "labels", ids.shape)
        if labels is None:
            labels = ids if mask is None else ids.masked_fill(mask == 0, IGNORE_INDEX)
        lengths = [ids.shape[1]] * ids.shape[0] if mask is None else mask.sum(1).tolist()
        docs = batch.get("doc_lengths")
        if docs is not None:
            rows = docs.tolist() if isinstance(docs, Tensor) else docs
            docs = [[int(x) for x in row if int(x) > 0] for row in rows]
            check_doc_lengths(docs, ids.shape[1])
        elif batch.get("position_ids") is not None:
            pos = _int_tensor(batch, "position_ids")
            if pos.shape[1] != ids.shape[1] or pos.shape[0] not in (1, ids.shape[0]):
                raise ValueError(f"batch['position_ids'] has shape {tuple(pos.shape)}, input_ids {tuple(ids.shape)}")
            docs = _docs_from_positions(pos, lengths)
        if docs is not None and len(docs) != ids.shape[0]:
            raise ValueError(f"doc_lengths has {len(docs)} rows but input_ids has {ids.shape[0]}")
        flattened = docs is not None and batch.get("doc_lengths") is None
        return cls(ids.long(), labels.long(), mask, docs, batch.get(SHORT_NLL_COLUMN), flattened)

    def scored(self) -> Tensor:
        """[b, n-1] bool: targets that count (label not -100, not a document's first token)."""
        mask = self.labels[:, 1:] != IGNORE_INDEX
        if self.doc_lengths is not None:
            mask = mask & target_mask(self.doc_lengths, self.input_ids.shape[1], device=mask.device)
        return mask

    def segments(self) -> list[tuple[int, int, int]]:
        """``(row, start, length)`` of every sequence: the documents of packed rows, else the rows
        (their attended length)."""
        if self.doc_lengths is not None:
            return segments(self.doc_lengths)
        n = self.input_ids.shape[1]
        lengths = [n] * self.input_ids.shape[0] if self.attention_mask is None else self.attention_mask.sum(1).tolist()
        return [(row, 0, int(length)) for row, length in enumerate(lengths)]


def scored_tokens(batch) -> Tensor:
    """The number of targets of ``batch`` that the loss counts (long scalar): the normaliser of
    :class:`WeightedLoss`, summed over micro-batches and processes for a global mean. A sequence
    shard (pre-shifted ``shift_labels``, :mod:`tokenweight.sequence_parallel`) counts its own."""
    if isinstance(batch, Mapping) and isinstance(batch.get("shift_labels"), Tensor):
        return (batch["shift_labels"] != IGNORE_INDEX).sum()
    return TokenBatch.of(batch).scored().sum()


def tie_keys(batch: TokenBatch, seed: int) -> Tensor:
    """Top-κ's tie-breaking keys ``[b, n-1]`` float64 in ``[0, 1)`` (target-aligned) drawn, for
    every sequence (document of a packed row, else row), from a generator seeded with ``seed`` and
    the sequence's own token ids: the same sequence gets the same keys in any batch, on any process,
    after any resume, without a dataset index."""
    ids = batch.input_ids.detach().cpu()
    keys = torch.zeros(ids.shape, dtype=torch.float64)
    for row, start, length in batch.segments():
        if length:
            tokens = ids[row, start : start + length].numpy().astype("<i8").tobytes()
            digest = hashlib.sha256(f"{int(seed)}:".encode() + tokens).digest()
            g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
            keys[row, start : start + length] = torch.rand(length, generator=g, dtype=torch.float64)
    return keys[:, 1:].to(batch.input_ids.device)


@dataclass
class WeightedLoss:
    """What :class:`TokenWeighting` returns for one batch.

    ``loss_sum``: ``Σ w·nll`` over the scored tokens (float32 scalar, differentiable); ``count``:
    the number of scored tokens (float32 scalar), the local normaliser; ``aux_loss``: the model's
    other loss terms (an MoE's ``router_aux_loss_coef · aux_loss``, differentiable) or None;
    ``nll`` ``[b, n-1]`` (detached, 0 where not scored), ``weights`` ``[b, n-1]`` (None: every scored
    token weighs 1), ``mask`` ``[b, n-1]`` bool, ``short_nll`` ``[b, n-1]`` or None.
    """

    loss_sum: Tensor
    count: Tensor
    aux_loss: Tensor | None
    nll: Tensor
    weights: Tensor | None
    mask: Tensor
    short_nll: Tensor | None = None

    def loss(self, num_items: int | float | Tensor | None = None, micro_batches: int = 1) -> Tensor:
        """``loss_sum / num_items + aux_loss / micro_batches`` (``num_items`` default: this batch's
        ``count``; 0 reads as 1).

        Under gradient accumulation over ``micro_batches`` micro-batches pass ``num_items`` = the
        scored tokens of the whole accumulated batch (sum :func:`scored_tokens`; all-reduced over
        data-parallel processes, with the loss then multiplied by their number as DDP averages):
        the summed gradients are exactly those of one process with the whole batch. The router loss
        of an MoE is a mean per micro-batch, so it is averaged over them. Uniform weights give
        exactly ``model(labels=...).loss``.
        """
        denom = self.count if num_items is None else torch.as_tensor(num_items, dtype=torch.float32)
        loss = self.loss_sum / denom.to(self.loss_sum.device).clamp(min=1)
        return loss if self.aux_loss is None else loss + self.aux_loss.to(loss.device) / micro_batches


class TokenWeighting:
    """The token-weighted loss of one batch (the module docstring): ``TokenWeighting(...)(model, batch)``.

    Args:
        scheme: a :class:`~tokenweight.weighting.WeightingScheme` or its spec (``"dense:0.75"``,
            ``"sparse:0.2"``, ``"longce:5"``, ...; ``"uniform"`` is plain cross-entropy).
        short: where ``L_short`` comes from (:mod:`tokenweight.short_nll`): ``SelfScorer``,
            ``LongCEScorer``, ``FrozenScorer(model)`` or any callable of that signature; None reads
            the batch's ``short_nll`` column. Unused by uniform schemes.
        chunk_size: positions per output-layer chunk of the loss (peak ``chunk_size · V · 4`` bytes).
        loss_kernel: ``"chunked"`` or ``"cce"`` (CUDA, 16-bit: :mod:`tokenweight.loss_kernels`).
        weight_norm: ``"sequence"`` (T, top-κ and normalisation per row, the paper's rule) or
            ``"document"`` (per document of a packed row, as the documents alone); None (default):
            ``"document"`` for padding-free batches (documents given by restarting ``position_ids``,
            as HF's and TRL's flattening collators make them: each is an example, the row is the
            whole micro-batch), ``"sequence"`` otherwise.
        seed: seed of sparse schemes' tie-breaking (:func:`tie_keys`).
        window: the base window ``w``, exposure balancing's default tail ``τ`` (``exact:<α>``,
            :mod:`tokenweight.exposure`); default: the scorer's window.
    """

    def __init__(
        self,
        scheme: WeightingScheme | str = "uniform",
        short=None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        loss_kernel: str = "chunked",
        weight_norm: str | None = None,
        seed: int = 0,
        window: int | None = None,
    ):
        self.scheme = WeightingScheme.parse(scheme)
        #: the base window w: exposure balancing's default tail τ (default: the scorer's window)
        self.window = window if window is not None else getattr(short, "window", None)
        if short is not None and not callable(short):
            raise ValueError(
                f"short must be None (the batch's 'short_nll' column) or a scorer (SelfScorer, FrozenScorer, "
                f"LongCEScorer), got {type(short).__name__}"
            )
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
        if loss_kernel not in LOSS_KERNELS:
            raise ValueError(f"loss_kernel must be one of {', '.join(LOSS_KERNELS)}, got {loss_kernel!r}")
        if weight_norm is not None and weight_norm not in WEIGHT_NORMS:
            raise ValueError(f"weight_norm must be None or one of {', '.join(WEIGHT_NORMS)}, got {weight_norm!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.short = short if self.scheme.needs_short else None
        self.chunk_size, self.loss_kernel, self.weight_norm, self.seed = chunk_size, loss_kernel, weight_norm, seed

    def __repr__(self) -> str:
        return f"TokenWeighting({str(self.scheme)!r}, short={self.short!r}, weight_norm={self.weight_norm!r})"

    # -------------------------------------------------------------------------------- the phases
    def forward(self, model: nn.Module, batch: TokenBatch) -> tuple[Tensor, Tensor, Tensor | None]:
        """One training forward of ``model`` (any wrapper: its hooks run) -> ``(nll [b, n-1] with
        grad, mask [b, n-1], aux_loss or None)``; ``nll`` is 0 where ``mask`` is False."""
        lm = unwrap(model)
        mask = batch.scored()
        targets = batch.labels[:, 1:].masked_fill(~mask, IGNORE_INDEX)  # unscored: no vocabulary work
        kwargs, targets, restore = document_forward(
            lm, batch.input_ids, batch.attention_mask, targets, batch.doc_lengths
        )
        head = lm.get_output_embeddings()
        with nll_output_layer(head, targets, self.chunk_size, model=lm, loss_kernel=self.loss_kernel):
            outputs = model(**kwargs, use_cache=False)
        nll = restore(outputs["logits"] if isinstance(outputs, Mapping) else outputs[0])
        return nll, mask, router_aux_loss(lm, outputs)

    def weigh(self, scoring_model: nn.Module, batch: TokenBatch, nll: Tensor, mask: Tensor):
        """``(weights [b, n-1] or None, short [b, n-1] or None)`` from the detached ``nll``;
        ``scoring_model``: what self-scoring runs (the live model, or a wrapper that gathers its
        sharded parameters)."""
        if self.scheme.is_uniform:
            return None, None
        nll, short = nll.detach(), None
        if not self.scheme.needs_short:  # exposure balancing alone: positions, no scorer
            pass
        elif self.short is not None:
            short = self.short(scoring_model, batch.input_ids, batch.attention_mask, nll, batch.doc_lengths)
        elif batch.short_column is not None:
            short = column_short_nll(batch.short_column, batch.input_ids)
        else:
            raise ValueError(
                f"scheme {self.scheme} needs short-context NLL: pass short=SelfScorer(window) or "
                "FrozenScorer(scorer_model, window), or give the batch a 'short_nll' column "
                "(tokenweight.scorecache.add_short_nll)"
            )
        groups = None
        norm = self.weight_norm or ("document" if batch.flattened else "sequence")
        if batch.doc_lengths is not None and norm == "document":
            seg = segment_ids(batch.doc_lengths, batch.input_ids.shape[1], device=mask.device)[:, 1:]
            groups = torch.where(mask, seg, -1)
        keys = tie_keys(batch, self.seed) if self.scheme.sparsification is not None else None
        prefix = None
        if self.scheme.needs_positions:  # each target's visible same-document prefix
            prefix = effective_context(batch.input_ids.shape[1], batch.doc_lengths, device=mask.device)
        weights = self.scheme(nll, short, mask, groups=groups, keys=keys, prefix=prefix, tail=self.window)
        return weights, short

    @staticmethod
    def nonfinite_rows(nll: Tensor, mask: Tensor) -> Tensor:
        """[b] bool: rows with a NaN/inf NLL at a scored token."""
        return ~torch.isfinite(torch.where(mask, nll.detach(), 0.0)).all(dim=1)

    @staticmethod
    def result(nll: Tensor, mask: Tensor, aux, weights, short) -> WeightedLoss:
        """The :class:`WeightedLoss` of the phases' outputs."""
        total = weighted_nll_loss(nll, mask, weights, reduction="sum")
        count = mask.sum().to(torch.float32)
        return WeightedLoss(total, count, aux, nll.detach(), weights, mask, short)

    # -------------------------------------------------------------------------------- one call
    def __call__(self, model: nn.Module, batch, *, scoring_model: nn.Module | None = None) -> WeightedLoss:
        """The weighted loss of ``batch`` (a collated mapping, the module docstring) under ``model``.

        Raises :class:`NonFiniteLossError` when the NLL is NaN/inf at a scored token (naming the
        rows), ``ValueError`` for a malformed batch.
        """
        batch = TokenBatch.of(batch)
        nll, mask, aux = self.forward(model, batch)
        bad = self.nonfinite_rows(nll, mask)
        if bool(bad.any()):
            raise NonFiniteLossError(
                f"non-finite NLL in rows {bad.nonzero().flatten().tolist()} of the batch: lower the learning "
                "rate (or lengthen the warm-up), check those sequences, or train in float32"
            )
        weights, short = self.weigh(scoring_model or unwrap(model), batch, nll, mask)
        return self.result(nll, mask, aux, weights, short)
