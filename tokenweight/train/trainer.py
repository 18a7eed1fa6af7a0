"""Token weighting inside any HF ``Trainer``: :class:`TokenWeightingMixin`, and ``WeightedTrainer``.

Why a mixin: users train with their own ``Trainer`` subclass or TRL's ``SFTTrainer``; DDP, FSDP,
DeepSpeed, mixed precision, gradient accumulation, checkpoints and resuming all come from
``transformers``/``accelerate`` by configuration; only the loss is ours. ``class MyTrainer(
TokenWeightingMixin, SFTTrainer)`` (or :func:`token_weighted`) replaces the loss by the
token-weighting component (:class:`tokenweight.token_weighting.TokenWeighting`) and nothing else.

What the mixin adds to the Trainer it is mixed into:

- **The loss** of every micro-batch is the component's ``Σ w·nll`` divided by HF's
  ``num_items_in_batch``, counted by the component's own rule (:func:`scored_tokens`: labels not
  -100, no document's first token) over the whole accumulated batch and, under
  ``average_tokens_across_devices`` (HF's default), over every process, and multiplied by the
  number of processes as HF does for its own loss (DDP averages gradients): the gradient is that
  of one process with the whole batch. An MoE's router loss is added per micro-batch, divided by
  the accumulation steps (a per-micro-batch mean, averaged over processes by DDP, as TRL does).
- **Columns**: ``short_nll``, ``doc_lengths`` and ``position_ids`` are declared as used, so
  ``remove_unused_columns`` can stay at its default. No dataset index is needed anywhere.
- **Logs**: in training, ``weighted_loss``, ``plain_loss`` (CE), weight statistics, ``step_time``
  and ``tokens_per_s`` next to HF's ``loss``; in evaluation ``eval_loss`` is the model's own loss
  (CE plus an MoE's router loss, as a stock Trainer reports it) and ``eval_weighted_loss``,
  ``eval_plain_loss`` and the weight statistics come beside it (token-exact, over all processes).
- **A NaN guard**: a non-finite NLL stops training with :class:`NonFiniteLossError` naming the
  step and the rows; all processes agree on it first (none is left waiting in a collective).

Under FSDP, self-scoring runs through the wrapped model's forward (full logits per window; bound
the memory with the scorer's ``batch_size``).
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor
from transformers import Trainer

from tokenweight.errors import UsageError
from tokenweight.loss_kernels import cce_model_problem, cce_problem
from tokenweight.short_nll import SHORT_NLL_COLUMN
from tokenweight.token_weighting import (
    NonFiniteLossError,
    ThroughWrapper,
    TokenBatch,
    TokenWeighting,
    check_trainable,
    scored_tokens,
    unwrap,
)
from tokenweight.train.stats import StepTimer, WeightStats

__all__ = ["NonFiniteLossError", "TokenWeightingMixin", "WeightedTrainer", "token_weighted"]

#: batch columns the component reads besides the model's own arguments
COLUMNS = ("input_ids", "labels", "attention_mask", "position_ids", "doc_lengths", SHORT_NLL_COLUMN)


class TokenWeightingMixin:
    """Makes a ``transformers.Trainer`` subclass token-weighted: ``class T(TokenWeightingMixin, Trainer)``.

    Keyword arguments (besides the Trainer's): ``token_weighting`` (a ready
    :class:`~tokenweight.token_weighting.TokenWeighting`), or its parts ``scheme``, ``short``,
    ``chunk_size``, ``loss_kernel``, ``weight_norm``, ``window`` (see there; the tie-breaking seed is
    ``args.seed``). ``--loss-kernel cce`` is checked against the device, dtype and model at
    construction. Batches: what the component reads (its module docstring), from any collator.
    """

    # Our loss is normalised by the global token count of the accumulated batch (or, without
    # one, divided by the accumulation steps here).
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        *args,
        token_weighting: TokenWeighting | None = None,
        scheme="uniform",
        short=None,
        chunk_size: int | None = None,
        loss_kernel: str = "chunked",
        weight_norm: str | None = None,
        window: int | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if token_weighting is None:
            chunk = {} if chunk_size is None else {"chunk_size": chunk_size}
            token_weighting = TokenWeighting(
                scheme,
                short,
                loss_kernel=loss_kernel,
                weight_norm=weight_norm,
                seed=self.args.seed,
                window=window,
                **chunk,
            )
        self.token_weighting = token_weighting
        # HF counts the items of the accumulated batch (our rule: _get_num_items_in_batch) and passes them.
        self.model_accepts_loss_kwargs = True
        self._loss_shifts_labels = True
        # the model's side is checked here, once, before any step (the machine's side of CCE too,
        # for library callers; the CLI's configs refuse CCE on a machine without it earlier)
        name = getattr(getattr(self.model, "config", None), "_name_or_path", None) or None
        check_trainable(self.model, name)
        if token_weighting.loss_kernel == "cce":
            head_dtype = self.model.get_output_embeddings().weight.dtype
            mixed = torch.bfloat16 if self.args.bf16 else torch.float16 if self.args.fp16 else head_dtype
            problem = cce_problem(self.args.device, mixed)
            if problem is None and (problem := cce_model_problem(self.model)) is not None and name:
                problem = f"model {name!r}: {problem}"
            if problem is not None:
                raise UsageError(problem)
        self.timer = StepTimer()
        self.add_callback(self.timer)
        self._stats: dict[str, WeightStats | None] = {"train": None, "eval": None}

    @property
    def scheme(self):
        return self.token_weighting.scheme

    # ---------------------------------------------------------------------------------- columns
    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(dict.fromkeys([*self._signature_columns, *COLUMNS]))

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device):
        """The scored tokens of the accumulated batch, by the component's rule, summed over processes
        under ``average_tokens_across_devices``."""
        if not batch_samples:
            return None
        count = sum(scored_tokens(b) for b in batch_samples).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count.reshape(1)).sum()
        return count

    # ---------------------------------------------------------------------------------- loss
    def _scoring_model(self, model):
        return ThroughWrapper(model) if getattr(self, "is_fsdp_enabled", False) else unwrap(model)

    def forward_weights(self, model, inputs) -> tuple[Tensor, Tensor, Tensor | None]:
        """One training forward: ``(nll [b, n-1] with grad, mask [b, n-1], weights [b, n-1] or None)``."""
        out, nll = self._weighted(model, TokenBatch.of(inputs))
        return nll, out.mask, out.weights

    def _weighted(self, model, batch: TokenBatch):
        """``(the component's WeightedLoss, the differentiable nll)`` of one batch, NaN-guarded."""
        tw = self.token_weighting
        nll, mask, aux = tw.forward(model, batch)
        self._check_finite(tw.nonfinite_rows(nll, mask), nll, mask)
        with self.accelerator.autocast():
            try:
                weights, short = tw.weigh(self._scoring_model(model), batch, nll, mask)
            except ValueError as e:
                if "inf/NaN" not in str(e) and "NaN or inf" not in str(e):
                    raise
                raise NonFiniteLossError(f"{e} at step {self.state.global_step + 1}") from None
        return tw.result(nll, mask, aux, weights, short), nll

    def _sequence_parallel(self):
        """``(process group, gradient scale)`` when every sequence is sharded over a group, else None.

        DeepSpeed's Ulysses (``sp_backend="deepspeed"``): DeepSpeed sums the gradients of the ranks
        of a sequence group and averages over data-parallel groups (ZeRO 0-2: divides by ``world /
        sp``), except ZeRO-3's default reduce-scatter, which averages over the whole world: the loss
        is scaled by what it divides by (tests/train/test_trainer_sequence_parallel.py). torch's context
        parallelism (``cp_backend="torch"``, FSDP2 over a mesh whose data-parallel dimension
        includes ``cp``): FSDP2 averages over every rank, so the scale is the world size (not run
        here: CUDA only, benchmarks/gpu_check.sh)."""
        pc = getattr(self.accelerator, "parallelism_config", None)
        if pc is not None and getattr(pc, "cp_enabled", False) and pc.cp_backend == "torch":
            return self.accelerator.torch_device_mesh["cp"].get_group(), self.accelerator.num_processes
        if pc is None or pc.sp_backend != "deepspeed" or not pc.sp_enabled:
            return None
        from deepspeed.utils import groups

        zero = (getattr(self.accelerator, "deepspeed_config", None) or {}).get("zero_optimization", {})
        averaged_over_world = zero.get("stage", 0) == 3 and zero.get("reduce_scatter", True)
        world = self.accelerator.num_processes
        return groups._get_sequence_parallel_group(), world if averaged_over_world else world // pc.sp_size

    def _prepare_context_parallel_inputs(self, model, inputs):
        """HF's context-parallel buffers, with the ``short_nll`` column sharded like ``input_ids``."""
        context, inputs = super()._prepare_context_parallel_inputs(model, inputs)
        keywords = getattr(context, "keywords", None)
        if keywords and "buffers" in keywords and isinstance(inputs.get(SHORT_NLL_COLUMN), Tensor):
            keywords["buffers"].append(inputs[SHORT_NLL_COLUMN])
            keywords["buffer_seq_dims"].append(1)
            keywords["no_restore_buffers"].add(inputs[SHORT_NLL_COLUMN])
        return context, inputs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        sp = self._sequence_parallel() if model.training else None  # evaluation is not sharded
        if sp is not None:  # a shard of every row: weights of the whole rows (tokenweight.sequence_parallel)
            from tokenweight.sequence_parallel import sharded_loss

            out, nll = sharded_loss(self.token_weighting, model, inputs, sp[0])
            self._check_finite(self.token_weighting.nonfinite_rows(nll, out.mask), nll, out.mask)
            batch = TokenBatch(inputs["input_ids"], inputs["shift_labels"], inputs.get("attention_mask"))
        else:
            batch = TokenBatch.of(inputs)
            out, _ = self._weighted(model, batch)
        mode = "train" if model.training else "eval"
        if mode == "eval":  # the model's own loss, as a stock Trainer's eval_loss
            loss = out.nll.sum() / out.count.clamp(min=1)
            loss = loss if out.aux_loss is None else loss + out.aux_loss
        elif num_items_in_batch is not None:  # the global count: exact over accumulation and processes
            scale = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
            scale = sp[1] if sp is not None else scale
            loss = out.loss(num_items_in_batch / scale, micro_batches=self._accumulation_steps())
        else:  # no global count: local mean, accumulation handled here
            loss = out.loss(None) / self._accumulation_steps()
        stats = WeightStats.of_batch(out.nll, out.mask, out.weights, batch.attention_mask, batch.input_ids)
        self._stats[mode] = stats if self._stats[mode] is None else self._stats[mode].merge(stats)
        return (loss, {"nll": out.nll, "weights": out.weights}) if return_outputs else loss

    def _accumulation_steps(self) -> int:
        """Micro-batches of the current optimizer step (HF sets it in ``train``; 1 outside)."""
        return max(1, int(getattr(self, "current_gradient_accumulation_steps", 1)))

    def _check_finite(self, bad_rows: Tensor, nll: Tensor, mask: Tensor) -> None:
        flag = bad_rows.any().to(torch.int64).reshape(1)
        if self.args.world_size > 1:
            flag = self.accelerator.reduce(flag, reduction="sum")
        if int(flag.item()) == 0:
            return
        local = bad_rows.nonzero().flatten().tolist()
        where = f"in rows {local} of the micro-batch"
        if self.args.world_size > 1:
            import torch.distributed as dist

            everyone = [None] * dist.get_world_size()
            dist.all_gather_object(everyone, local)
            where = "in " + ", ".join(f"rows {r} of process {p}'s micro-batch" for p, r in enumerate(everyone) if r)
        kind = "nan" if bool(torch.isnan(torch.where(mask, nll.detach(), 0.0)).any()) else "inf/nan"
        raise NonFiniteLossError(
            f"non-finite training loss ({kind}) at step {self.state.global_step + 1} {where}: lower --lr (or "
            "lengthen --warmup-steps), check those sequences, or train in float32 instead of --dtype bfloat16/float16"
        )

    # ---------------------------------------------------------------------------------- logging
    def _flush_stats(self, mode: str) -> dict[str, float]:
        stats = (self._stats[mode] if self._stats[mode] is not None else WeightStats.empty()).to(self.args.device)
        self._stats[mode] = None
        if self.args.world_size > 1:
            stats = stats.reduce(self.accelerator)
        return stats.to_logs()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: every process gets here together
            logs.update(self._flush_stats("train"))
            seconds, steps = self.timer.take()
            if steps:
                logs["step_time"] = seconds / steps
                logs["tokens_per_s"] = logs["tokens"] / seconds if seconds > 0 else 0.0
        super().log(logs, start_time)

    def evaluation_loop(self, *args, **kwargs):
        """HF's loop, with the token-exact weighted and plain losses and weight statistics added to
        its metrics (``<prefix>_weighted_loss``, ``<prefix>_plain_loss``, ...)."""
        self._stats["eval"] = None
        output = super().evaluation_loop(*args, **kwargs)
        bound = inspect.signature(super().evaluation_loop).bind(*args, **kwargs)
        prefix = bound.arguments.get("metric_key_prefix", "eval")
        extra = self._flush_stats("eval")
        output.metrics.update({f"{prefix}_{k}": v for k, v in extra.items() if k != "tokens"})
        return output


class WeightedTrainer(TokenWeightingMixin, Trainer):
    """The HF ``Trainer`` with the token-weighted loss: ``tokenweight train``/``pretrain``'s trainer."""


def token_weighted(trainer_class: type) -> type:
    """``trainer_class`` made token-weighted: ``token_weighted(SFTTrainer)(model=..., scheme="dense:0.75",
    short=FrozenScorer(scorer, window=8192), ...)`` (the one-liner of ``class T(TokenWeightingMixin, C)``)."""
    if not (isinstance(trainer_class, type) and issubclass(trainer_class, Trainer)):
        raise ValueError(f"token_weighted takes a transformers.Trainer subclass, got {trainer_class!r}")
    return type(f"TokenWeighted{trainer_class.__name__}", (TokenWeightingMixin, trainer_class), {})
