"""``WeightedTrainer``: the HF Trainer with a token-weighted, chunked language-modelling loss.

Why a Trainer subclass: DDP, FSDP, DeepSpeed, mixed precision, gradient accumulation, checkpoints
and resuming all come from ``transformers``/``accelerate`` by configuration; only the loss is ours.

How a step computes its loss (docs/METHOD.md), one forward pass:

1. The model's output layer is swapped, for the duration of the call, for the chunked NLL of
   ``tokenweight.loss.chunked_nll``: the model's own forward (through every DDP/FSDP/DeepSpeed
   wrapper, so their hooks run as usual) returns the per-token NLL ``[b, n-1]`` as its "logits".
   The full ``[b, n, V]`` logits never exist; backward recomputes them chunk by chunk.
2. ``L_short`` comes from the scorer (``tokenweight.train.scorers``): the live model on short
   windows without gradient, or the frozen score cache by dataset index.
3. Weights ``= scheme(nll.detach(), L_short, mask)`` (constants), and the loss is
   ``Σ w·nll / num_items_in_batch`` where ``num_items_in_batch`` is HF's count of label tokens over
   the whole accumulated batch on all devices. HF's DDP averages gradients over processes, so under
   ``average_tokens_across_devices`` the loss is multiplied by the number of processes, as HF does
   for its own loss: the gradient is then exactly that of the global token mean, for any
   accumulation and any number of devices (tested against plain CE).

Every step also records the weighted and the plain loss, weight statistics and throughput; they are
reduced over processes when HF logs (``log``), and land in TensorBoard and ``log.jsonl``.

A non-finite loss stops training with a ``UsageError`` naming the step and the dataset indices of
the offending sequences (all processes agree on it, so none is left waiting in a collective).

Models that post-process their logits after the output layer (Gemma-2's soft-capping, Granite's
and Cohere's logit scales: ``tokenweight.scoring.logit_postprocessing``) get it inside the chunked
loss, and their own post-processing is switched off for the forward (``tokenweight.logits``), so the
loss and its gradients are the model's own. A model whose output layer is not an ``nn.Linear``, or
that changes the output layer's result in a way no rule covers, is refused with a ``UsageError``
before any work (:func:`check_trainable`). Under FSDP, self-scoring runs through the wrapped model's
forward (full logits per window; bound the memory with the scorer's ``batch_size``).

Packed batches (``doc_lengths``, :mod:`tokenweight.documents`) give exactly the loss of their
documents as separate rows: document-masked forward (:func:`document_forward`), no target at a
document's first token, scorers and (``weight_norm="document"``) weights per document.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
from torch import Tensor, nn
from transformers import Trainer, TrainerCallback

from tokenweight.documents import segment_ids, target_mask
from tokenweight.errors import UsageError
from tokenweight.logits import LogitPostprocessing, replaced_output_layer
from tokenweight.loss import chunked_nll, weighted_nll_loss
from tokenweight.loss_kernels import cce_model_problem, cce_nll, cce_problem
from tokenweight.scoring import logit_postprocessing, output_layer_problem
from tokenweight.train.collate import batch_doc_lengths
from tokenweight.train.config import LOSS_KERNELS, WEIGHT_NORMS
from tokenweight.weighting import WeightingScheme


class NonFiniteLossError(UsageError):
    """The training loss became NaN/inf: names the step and the dataset indices of the sequences."""


def check_trainable(model: nn.Module, name: str | None = None) -> None:
    """``UsageError`` (one line naming the model and the alternative) when the chunked loss cannot
    be ``model``'s own loss: its output layer is not an ``nn.Linear``, or its forward changes the
    output layer's result in a way :func:`tokenweight.scoring.logit_postprocessing` has no rule for
    (checked once per model with a forward of four tokens: :func:`tokenweight.scoring.output_layer_problem`)."""
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
    head: nn.Linear, targets: Tensor, chunk_size: int, model: nn.Module | None = None, loss_kernel: str = "chunked"
):
    """Make ``head(hidden [b, n, d])`` return the chunked NLL ``[b, n-1]`` of ``targets [b, n-1]``.

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

    def forward(hidden: Tensor) -> Tensor:
        if hidden.shape[:-1] != (targets.shape[0], targets.shape[1] + 1):
            raise ValueError(f"output layer got hidden states {tuple(hidden.shape)} for targets {tuple(targets.shape)}")
        if loss_kernel == "cce":
            return cce_nll(hidden[:, :-1], head, targets, postprocessing=post)
        return chunked_nll(hidden[:, :-1], head, targets, chunk_size=chunk_size, postprocessing=post)

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


class _ThroughWrapper(nn.Module):
    """A causal LM that calls the wrapped (e.g. FSDP) model's forward, so sharded parameters are
    gathered by the wrapper; it exposes no ``get_decoder``, so scoring takes the full-logits path."""

    def __init__(self, wrapped: nn.Module):
        super().__init__()
        self.wrapped = wrapped

    def forward(self, input_ids=None, attention_mask=None, use_cache=False, position_ids=None, **kwargs):
        extra = {} if position_ids is None else {"position_ids": position_ids}
        return self.wrapped(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra)


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
    ``restore`` scatters the NLL back to the rows.
    """
    if doc_lengths is None:
        return {"input_ids": input_ids, "attention_mask": attention_mask}, targets, lambda nll: nll
    from tokenweight.documents import attn_implementation, model_forward_kwargs

    b, n = input_ids.shape
    if not attn_implementation(model).startswith("flash"):
        kwargs = model_forward_kwargs(model, doc_lengths, n, device=input_ids.device)
        return {"input_ids": input_ids, **kwargs}, targets, lambda nll: nll
    lengths = torch.tensor([sum(d) for d in doc_lengths], device=input_ids.device)
    keep = torch.arange(n, device=input_ids.device)[None, :] < lengths[:, None]  # [b, n]: tokens, row-major
    flat_docs = [[x for d in doc_lengths for x in d]]
    total = int(lengths.sum())
    kwargs = model_forward_kwargs(model, flat_docs, total, device=input_ids.device)
    padded = torch.cat([targets, targets.new_full((b, 1), -100)], dim=1)  # [b, n]: target of every token
    flat_targets = padded[keep][None, :-1]

    def restore(nll: Tensor) -> Tensor:  # [1, total-1] -> [b, n-1]
        out = nll.new_zeros(b, n)
        out[keep] = torch.cat([nll[0], nll.new_zeros(1)])
        return out[:, :-1]

    return {"input_ids": input_ids[keep][None], **kwargs}, flat_targets, restore


class StepTimer(TrainerCallback):
    """Wall time of optimizer steps (first micro-batch to optimizer step), for step time and tokens/s."""

    def __init__(self):
        self.seconds, self.steps, self._t0 = 0.0, 0, None

    @staticmethod
    def _sync():
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._t0 is not None:
            self._sync()
            self.seconds += time.perf_counter() - self._t0
            self.steps += 1
            self._t0 = None

    def take(self) -> tuple[float, int]:
        out = (self.seconds, self.steps)
        self.seconds, self.steps = 0.0, 0
        return out


@dataclass
class WeightStats:
    """Loss and weight statistics of the scored tokens since the last log (float64 scalar tensors).

    Built per micro-batch (:meth:`of_batch`), accumulated (:meth:`merge`), reduced over processes
    (:meth:`reduce`: one all-reduce of the sums, one gather of the maximum) and turned into the
    logged values (:meth:`to_logs`). Padding and ignored labels count nowhere but in ``tokens``.
    """

    count: Tensor  # scored tokens
    nll_sum: Tensor  # Σ nll
    weighted_nll_sum: Tensor  # Σ w·nll
    weight_sum: Tensor  # Σ w
    weight_sq_sum: Tensor  # Σ w²
    weight_max: Tensor  # max w, -inf when nothing is scored
    zero_weights: Tensor  # scored tokens with w == 0
    tokens: Tensor  # input tokens (non-padding)

    #: the fields that add up over micro-batches and processes (all but ``weight_max``)
    SUMS: ClassVar[tuple[str, ...]] = (
        "count",
        "nll_sum",
        "weighted_nll_sum",
        "weight_sum",
        "weight_sq_sum",
        "zero_weights",
        "tokens",
    )

    @classmethod
    def of_batch(
        cls, nll: Tensor, mask: Tensor, weights: Tensor | None, attention_mask: Tensor | None, input_ids: Tensor
    ) -> WeightStats:
        """Statistics of one micro-batch: ``nll``, ``mask`` and ``weights`` ``[b, n-1]`` (``weights``
        None: every scored token weighs 1), ``attention_mask`` (None: no padding) and ``input_ids`` ``[b, n]``."""
        m = mask.to(torch.float64)
        nll64 = torch.where(mask, nll, 0.0).to(torch.float64)
        w = m if weights is None else torch.where(mask, weights, 0.0).to(torch.float64)
        tokens = attention_mask.sum() if attention_mask is not None else torch.tensor(input_ids.numel())
        return cls(
            count=m.sum(),
            nll_sum=nll64.sum(),
            weighted_nll_sum=(w * nll64).sum(),
            weight_sum=w.sum(),
            weight_sq_sum=(w * w).sum(),
            weight_max=torch.where(mask, w, -math.inf).max(),
            zero_weights=((w == 0) & mask).sum().to(torch.float64),
            tokens=tokens.to(torch.float64),
        )

    @classmethod
    def empty(cls) -> WeightStats:
        """No tokens yet (what a log without any recorded micro-batch reports)."""
        return cls(
            **{name: torch.tensor(0.0, dtype=torch.float64) for name in cls.SUMS},
            weight_max=torch.tensor(-math.inf, dtype=torch.float64),
        )

    def merge(self, other: WeightStats) -> WeightStats:
        """The statistics of both: sums added, maxima combined."""
        sums = {name: getattr(self, name) + getattr(other, name) for name in self.SUMS}
        return WeightStats(**sums, weight_max=torch.maximum(self.weight_max, other.weight_max))

    def to(self, device) -> WeightStats:
        return WeightStats(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def reduce(self, accelerator) -> WeightStats:
        """Over all processes: one all-reduce of the sums, one gather of the maxima (every process
        must call it, with its statistics on the device of the collectives)."""
        sums = accelerator.reduce(torch.stack([getattr(self, name) for name in self.SUMS]), reduction="sum")
        wmax = accelerator.gather(self.weight_max.reshape(1)).max()
        return WeightStats(**dict(zip(self.SUMS, sums.unbind())), weight_max=wmax)

    def to_logs(self) -> dict[str, float]:
        """The logged values (every field on one device): means per scored token, counts."""
        names = [f.name for f in fields(self)]
        s = dict(zip(names, torch.stack([getattr(self, name) for name in names]).tolist()))
        count = max(s["count"], 1.0)
        mean = s["weight_sum"] / count
        return {
            "weighted_loss": s["weighted_nll_sum"] / count,
            "plain_loss": s["nll_sum"] / count,
            "weight_mean": mean,
            "weight_std": math.sqrt(max(s["weight_sq_sum"] / count - mean * mean, 0.0)),
            "weight_max": s["weight_max"] if math.isfinite(s["weight_max"]) else 0.0,
            "weight_zero_share": s["zero_weights"] / count,
            "scored_tokens": s["count"],
            "tokens": s["tokens"],
        }


class WeightedTrainer(Trainer):
    """HF ``Trainer`` whose loss is the token-weighted chunked cross-entropy of docs/METHOD.md.

    Args (besides the ``Trainer``'s):
        scheme: a ``WeightingScheme`` or its spec (``"uniform"`` is plain cross-entropy).
        scorer: callable ``(model, input_ids, attention_mask, index, long_nll) -> short_nll [b, n-1]``
            (``SelfScorer`` or ``FrozenScorer``); required when ``scheme.needs_short``.
        chunk_size: positions per output-layer chunk of the loss.
        loss_kernel: ``"chunked"`` (:func:`tokenweight.loss.chunked_nll`, any device) or ``"cce"``
            (:func:`tokenweight.loss_kernels.cce_nll`: CUDA, bf16/fp16 mixed precision, the ``cce``
            extra; refused with a ``UsageError`` at construction where it cannot run).
        weight_norm: ``"sequence"`` (the scheme's T, top-κ and normalisation per row) or
            ``"document"`` (per document of a packed row: ``WeightingScheme(groups=...)``, so a
            packed row's weights are its documents' own); the same on unpacked batches.

    Batches must hold ``input_ids``, ``attention_mask``, ``labels`` (-100 = ignored) and ``index``
    (dataset rows, ``PadCollator``); keep ``remove_unused_columns=False``. A packed batch also
    holds ``doc_lengths`` (``PadCollator``'s ``[b, D]`` tensor): the forward is document-masked
    (:func:`document_forward`), a document's first token is not scored, and the scorer is called
    with ``doc_lengths=`` (lists) as well.
    """

    # Our loss is already normalised by the global token count of the accumulated batch.
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        *args,
        scheme: WeightingScheme | str = "uniform",
        scorer=None,
        chunk_size: int = 1024,
        loss_kernel: str = "chunked",
        weight_norm: str = "sequence",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if weight_norm not in WEIGHT_NORMS:
            raise ValueError(f"weight_norm must be one of {', '.join(WEIGHT_NORMS)}, got {weight_norm!r}")
        self.weight_norm = weight_norm
        if loss_kernel not in LOSS_KERNELS:
            raise ValueError(f"loss_kernel must be one of {', '.join(LOSS_KERNELS)}, got {loss_kernel!r}")
        self.loss_kernel = loss_kernel
        self.scheme = WeightingScheme.parse(scheme)
        if self.scheme.needs_short and scorer is None:
            raise ValueError(
                f"scheme {self.scheme} needs short-context NLL: pass scorer=SelfScorer(...) or FrozenScorer(...)"
            )
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
        if self.args.remove_unused_columns:
            raise ValueError("WeightedTrainer needs TrainingArguments(remove_unused_columns=False) to keep 'index'")
        self.scorer = scorer if self.scheme.needs_short else None
        self.chunk_size = chunk_size
        # Always have HF count label tokens over the accumulated batch (and gather them over devices).
        self.model_accepts_loss_kwargs = True
        self._loss_shifts_labels = True
        check_trainable(self.model, getattr(getattr(self.model, "config", None), "_name_or_path", None) or None)
        if loss_kernel == "cce":  # before any step: device, package, dtype, the output layer
            head_dtype = self.model.get_output_embeddings().weight.dtype
            mixed = torch.bfloat16 if self.args.bf16 else torch.float16 if self.args.fp16 else head_dtype
            problem = cce_problem(self.args.device, mixed) or cce_model_problem(self.model)
            if problem is not None:
                raise UsageError(problem)
        self.timer = StepTimer()
        self.add_callback(self.timer)
        self._stats: WeightStats | None = None  # since the last log

    # ---------------------------------------------------------------------------------- loss
    def _scoring_model(self, model: nn.Module) -> nn.Module:
        if getattr(self, "is_fsdp_enabled", False):
            return _ThroughWrapper(model)
        return self.accelerator.unwrap_model(model)

    def _generator(self, index: Tensor, device: torch.device) -> torch.Generator:
        """Tie-breaking randomness that depends only on the seed and the sequences (resumable)."""
        key = f"{self.args.seed}:{index.tolist()}".encode()
        seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & ((1 << 63) - 1)
        return torch.Generator(device=device).manual_seed(seed)

    def forward_weights(self, model, inputs) -> tuple[Tensor, Tensor, Tensor | None]:
        """One training forward: ``(nll [b, n-1] with grad, mask [b, n-1], weights [b, n-1] or None)``.

        ``weights`` is None for uniform schemes (every scored token counts 1). Raises
        :class:`NonFiniteLossError` for a non-finite NLL.
        """
        input_ids, labels, index = inputs["input_ids"], inputs["labels"], inputs["index"]
        attention_mask = inputs.get("attention_mask")
        targets = labels[:, 1:]
        mask = targets != -100
        docs = batch_doc_lengths(inputs.get("doc_lengths"))  # packed rows (PadCollator), else None
        if docs is not None:  # a document's first token is never a target, whatever the labels say
            mask = mask & target_mask(docs, input_ids.shape[1], device=mask.device)
        unwrapped = self.accelerator.unwrap_model(model)
        forward, targets, restore = document_forward(unwrapped, input_ids, attention_mask, targets, docs)
        with nll_output_layer(
            unwrapped.get_output_embeddings(), targets, self.chunk_size, model=unwrapped, loss_kernel=self.loss_kernel
        ):
            outputs = model(**forward, use_cache=False)
        nll = restore(outputs["logits"] if isinstance(outputs, dict) else outputs[0])  # [b, n-1] float32
        self._check_finite(nll, mask, index)
        if not self.scheme.needs_short:
            return nll, mask, None
        packed = {} if docs is None else {"doc_lengths": docs}
        with self.accelerator.autocast():
            short = self.scorer(self._scoring_model(model), input_ids, attention_mask, index, nll.detach(), **packed)
        groups = None  # weight_norm document: every document of a packed row is normalised on its own
        if docs is not None and self.weight_norm == "document":
            groups = torch.where(mask, segment_ids(docs, input_ids.shape[1], device=mask.device)[:, 1:], -1)
        try:
            weights = self.scheme(
                nll.detach(), short, mask, generator=self._generator(index, nll.device), groups=groups
            )
        except ValueError as e:
            raise NonFiniteLossError(
                f"{e} at step {self.state.global_step + 1} on train sequences {sorted(index.tolist())}"
            ) from None
        return nll, mask, weights

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        nll, mask, weights = self.forward_weights(model, inputs)
        total = weighted_nll_loss(nll, mask, weights, reduction="sum")
        if num_items_in_batch is not None:
            denom = torch.as_tensor(num_items_in_batch, device=total.device, dtype=total.dtype)
            loss = total / denom.clamp(min=1)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                loss = loss * self.accelerator.num_processes
        else:  # no global count (e.g. evaluation): local mean, accumulation handled here
            loss = total / mask.sum().clamp(min=1) / max(1, getattr(self, "current_gradient_accumulation_steps", 1))
        if model.training:
            self._record(nll.detach(), mask, weights, inputs.get("attention_mask"), inputs["input_ids"])
        return (loss, {"nll": nll.detach(), "weights": weights}) if return_outputs else loss

    def _check_finite(self, nll: Tensor, mask: Tensor, index: Tensor) -> None:
        bad_rows = ~torch.isfinite(torch.where(mask, nll, 0.0)).all(dim=1)  # [b]
        flag = bad_rows.any().to(torch.int64).reshape(1)
        if self.args.world_size > 1:
            flag = self.accelerator.reduce(flag, reduction="sum")
        if int(flag.item()) == 0:
            return
        local = index[bad_rows].tolist()
        if self.args.world_size > 1:
            import torch.distributed as dist

            everyone = [None] * dist.get_world_size()
            dist.all_gather_object(everyone, local)
            local = [i for part in everyone for i in part]
        kind = "nan" if bool(torch.isnan(torch.where(mask, nll, 0.0)).any()) else "inf/nan"
        raise NonFiniteLossError(
            f"non-finite training loss ({kind}) at step {self.state.global_step + 1} on train sequences "
            f"{sorted(set(local))} (dataset indices): lower --lr (or lengthen --warmup-steps), check those "
            "sequences, or train in float32 instead of --dtype bfloat16/float16"
        )

    # ---------------------------------------------------------------------------------- logging
    def _record(self, nll: Tensor, mask: Tensor, weights: Tensor | None, attention_mask, input_ids) -> None:
        stats = WeightStats.of_batch(nll, mask, weights, attention_mask, input_ids)
        self._stats = stats if self._stats is None else self._stats.merge(stats)

    def _flush_stats(self) -> dict[str, float]:
        stats = (self._stats if self._stats is not None else WeightStats.empty()).to(self.args.device)
        self._stats = None
        if self.args.world_size > 1:
            stats = stats.reduce(self.accelerator)
        out = stats.to_logs()
        seconds, steps = self.timer.take()
        if steps:
            out["step_time"] = seconds / steps
            out["tokens_per_s"] = out["tokens"] / seconds if seconds > 0 else 0.0
        return out

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: every process gets here together
            logs.update(self._flush_stats())
        super().log(logs, start_time)
