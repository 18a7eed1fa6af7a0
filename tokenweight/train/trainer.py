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

Limits: models whose logits are post-processed after the output layer (Gemma-2's soft-capping,
logit scales) are refused, since the chunked loss would not be their loss. The output layer must
be an ``nn.Linear`` (``get_output_embeddings``). Under FSDP, self-scoring runs through the wrapped
model's forward (full logits per window; bound the memory with the scorer's ``batch_size``).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time

import torch
from torch import Tensor, nn
from transformers import Trainer, TrainerCallback

from tokenweight.errors import UsageError
from tokenweight.loss import chunked_nll, weighted_nll_loss
from tokenweight.scoring import logit_postprocessing
from tokenweight.weighting import WeightingScheme


class NonFiniteLossError(UsageError):
    """The training loss became NaN/inf: names the step and the dataset indices of the sequences."""


@contextlib.contextmanager
def nll_output_layer(head: nn.Linear, targets: Tensor, chunk_size: int):
    """Make ``head(hidden [b, n, d])`` return the chunked NLL ``[b, n-1]`` of ``targets [b, n-1]``.

    The NLL at position ``t`` is that of ``targets[:, t]`` predicted from ``hidden[:, t]``. The
    instance-level ``forward`` is restored on exit (also on error).
    """
    had = "forward" in head.__dict__
    previous = head.__dict__.get("forward")

    def forward(hidden: Tensor) -> Tensor:
        if hidden.shape[:-1] != (targets.shape[0], targets.shape[1] + 1):
            raise ValueError(f"output layer got hidden states {tuple(hidden.shape)} for targets {tuple(targets.shape)}")
        return chunked_nll(hidden[:, :-1], head, targets, chunk_size=chunk_size)

    head.forward = forward
    try:
        yield
    finally:
        if had:
            head.forward = previous
        else:
            del head.forward


class _ThroughWrapper(nn.Module):
    """A causal LM that calls the wrapped (e.g. FSDP) model's forward, so sharded parameters are
    gathered by the wrapper; it exposes no ``get_decoder``, so scoring takes the full-logits path."""

    def __init__(self, wrapped: nn.Module):
        super().__init__()
        self.wrapped = wrapped

    def forward(self, input_ids=None, attention_mask=None, use_cache=False, **kwargs):
        return self.wrapped(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)


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


class WeightedTrainer(Trainer):
    """HF ``Trainer`` whose loss is the token-weighted chunked cross-entropy of docs/METHOD.md.

    Args (besides the ``Trainer``'s):
        scheme: a ``WeightingScheme`` or its spec (``"uniform"`` is plain cross-entropy).
        scorer: callable ``(model, input_ids, attention_mask, index, long_nll) -> short_nll [b, n-1]``
            (``SelfScorer`` or ``FrozenScorer``); required when ``scheme.needs_short``.
        chunk_size: positions per output-layer chunk of the loss.

    Batches must hold ``input_ids``, ``attention_mask``, ``labels`` (-100 = ignored) and ``index``
    (dataset rows, ``PadCollator``); keep ``remove_unused_columns=False``.
    """

    # Our loss is already normalised by the global token count of the accumulated batch.
    loss_is_scaled_for_ga = True

    def __init__(self, *args, scheme: WeightingScheme | str = "uniform", scorer=None, chunk_size: int = 1024, **kwargs):
        super().__init__(*args, **kwargs)
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
        config = getattr(self.model, "config", None)
        bad = list(logit_postprocessing(config).items())
        if bad:
            raise ValueError(
                f"model post-processes its logits ({bad[0][0]} = {bad[0][1]}): the chunked "
                "weighted loss supports models whose logits are their output layer's"
            )
        if not isinstance(self.model.get_output_embeddings(), nn.Linear):
            raise ValueError("the model's output layer (get_output_embeddings) must be an nn.Linear")
        self.timer = StepTimer()
        self.add_callback(self.timer)
        self._stats: Tensor | None = None  # [7] float64: count, Σnll, Σw·nll, Σw, Σw², max w, #zero w
        self._tokens: Tensor | None = None  # input tokens (non-padding) since the last log

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
        head = self.accelerator.unwrap_model(model).get_output_embeddings()
        with nll_output_layer(head, targets, self.chunk_size):
            outputs = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        nll = outputs["logits"] if isinstance(outputs, dict) else outputs[0]  # [b, n-1] float32
        self._check_finite(nll, mask, index)
        if not self.scheme.needs_short:
            return nll, mask, None
        with self.accelerator.autocast():
            short = self.scorer(self._scoring_model(model), input_ids, attention_mask, index, nll.detach())
        try:
            weights = self.scheme(nll.detach(), short, mask, generator=self._generator(index, nll.device))
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
            "sequences, or train in float32 instead of --bf16"
        )

    # ---------------------------------------------------------------------------------- logging
    def _record(self, nll: Tensor, mask: Tensor, weights: Tensor | None, attention_mask, input_ids) -> None:
        m = mask.to(torch.float64)
        nll64 = torch.where(mask, nll, 0.0).to(torch.float64)
        count = m.sum()
        if weights is None:
            w = m
        else:
            w = torch.where(mask, weights, 0.0).to(torch.float64)
        wmax = torch.where(mask, w, -math.inf).max()  # -inf when nothing is scored
        stats = torch.stack(
            [
                count,
                nll64.sum(),
                (w * nll64).sum(),
                w.sum(),
                (w * w).sum(),
                wmax.to(torch.float64),
                ((w == 0) & mask).sum().to(torch.float64),
            ]
        )
        if self._stats is None:
            self._stats = stats
        else:
            self._stats = torch.cat(
                [self._stats[:5] + stats[:5], torch.maximum(self._stats[5:6], stats[5:6]), self._stats[6:] + stats[6:]]
            )
        tokens = (attention_mask.sum() if attention_mask is not None else torch.tensor(input_ids.numel())).to(
            torch.float64
        )
        self._tokens = tokens if self._tokens is None else self._tokens + tokens

    def _flush_stats(self) -> dict[str, float]:
        device = self.args.device
        stats = (
            self._stats if self._stats is not None else torch.tensor([0, 0, 0, 0, 0, -math.inf, 0], dtype=torch.float64)
        )
        tokens = self._tokens if self._tokens is not None else torch.tensor(0.0, dtype=torch.float64)
        stats, tokens = stats.to(device), tokens.to(device)
        self._stats = self._tokens = None
        if self.args.world_size > 1:
            sums = self.accelerator.reduce(torch.cat([stats[:5], stats[6:], tokens.reshape(1)]), reduction="sum")
            wmax = self.accelerator.gather(stats[5:6]).max()
            stats = torch.cat([sums[:5], wmax.reshape(1), sums[5:6]])
            tokens = sums[6]
        s = stats.tolist()
        count = max(s[0], 1.0)
        mean = s[3] / count
        seconds, steps = self.timer.take()
        out = {
            "weighted_loss": s[2] / count,
            "plain_loss": s[1] / count,
            "weight_mean": mean,
            "weight_std": math.sqrt(max(s[4] / count - mean * mean, 0.0)),
            "weight_max": s[5] if math.isfinite(s[5]) else 0.0,
            "weight_zero_share": s[6] / count,
            "scored_tokens": s[0],
            "tokens": float(tokens.item()),
        }
        if steps:
            out["step_time"] = seconds / steps
            out["tokens_per_s"] = out["tokens"] / seconds if seconds > 0 else 0.0
        return out

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: every process gets here together
            logs.update(self._flush_stats())
        super().log(logs, start_time)
