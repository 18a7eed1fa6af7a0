"""The typed configs of the two training stages, ``pretrain`` and ``train``.

:class:`RunConfig` holds what every training run has (model, data, output folder, optimisation,
checkpoints); :class:`PretrainConfig` and :class:`TrainConfig` add what their stage needs. Field
defaults are the library's defaults; the embedded experiment's values live in the demo's profiles
(``tokenweight.demo``), and the shipped YAML configs are checked against those by a test.
Optimisation defaults follow the paper's extension recipe where it has one (AdamW β 0.9/0.95,
weight decay 0.01, constant learning rate after a linear warm-up).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tokenweight.choices import LOSS_KERNELS, WEIGHT_NORMS
from tokenweight.config import (
    RUNTIME_GROUP,
    RuntimeOptions,
    StageConfig,
    check_choice,
    check_float,
    check_int,
    check_required,
    option,
)
from tokenweight.models import RUNTIME_DTYPES

SCHEDULERS = ("constant_with_warmup", "cosine", "linear", "constant", "cosine_with_min_lr")
ROPE_SCALING_TYPES = ("linear", "dynamic", "yarn", "llama3")
#: the short contexts of self-scoring: docs/METHOD.md's windows, or LongCE's (docs/SCORING.md)
SHORT_CONTEXTS = ("method", "longce")
#: experiment trackers the HF Trainer reports to (``TrainingArguments.report_to``); ``none``: only
#: ``OUT/log.jsonl``, which is always written
REPORT_TO = ("tensorboard", "wandb", "mlflow", "trackio", "none")

_M = "model and data"
_O = "optimisation"
_C = "checkpoints and logs"

#: settings that may change between an interrupted run and the command that continues it: they
#: do not change what is trained (where and how often it is saved or logged, how data is loaded).
#: Not ``max_steps``: it shapes the learning-rate schedule and the copy task's rows, and a finished
#: run rerun with more steps must not be taken for done. ``device`` and ``attn_implementation``: where
#: a run continues and with which attention kernel (the same function, other rounding); likewise
#: ``loss_kernel`` (a run begun with ``cce`` on a GPU may continue with ``chunked``); ``dtype``
#: (mixed precision) is part of what is trained.
#: options added after runs were already being made: at their default they are left out of a run's
#: settings, so that a run folder started before the option existed (which did what the default
#: does) is still the same run; any other value is recorded and compared as usual
OMITTED_AT_DEFAULT = frozenset({"weight_norm", "sp_size"})

RESUMABLE_CHANGES = frozenset(
    {
        "save_steps",
        "save_total_limit",
        "logging_steps",
        "report_to",
        "dataloader_workers",
        "out",
        "force",
        "device",
        "attn_implementation",
        "loss_kernel",
    }
)


@dataclass
class RunConfig(RuntimeOptions, StageConfig):
    """Options of every training run (pretrain and train); the runtime options are
    :class:`tokenweight.config.RuntimeOptions`, with ``dtype`` as mixed precision."""

    RUNTIME_TRAINING = True

    model: str | None = option(None, "HF causal LM to start from (folder or hub id)", metavar="PATH|ID", group=_M)
    init: str | None = option(None, "instead of --model: a Llama from scratch of this preset", group=_M)
    data: str | None = option(None, "prepared data folder (tokenweight prepare)", metavar="DIR", group=_M)
    out: str | None = option(None, "run folder: checkpoints, logs, model/, summary.json", metavar="DIR", group=_M)
    max_train_sequences: int | None = option(None, "use only the first K training sequences", group=_M)
    max_steps: int = option(100, "optimizer steps", group=_O)
    batch_size: int = option(4, "sequences per device and micro-batch", group=_O)
    grad_accum: int = option(1, "micro-batches per optimizer step", group=_O)
    lr: float = option(1e-3, "peak learning rate", group=_O)
    lr_scheduler: str = option("constant_with_warmup", "HF scheduler name", choices=SCHEDULERS, group=_O)
    warmup_steps: int = option(10, "linear warm-up steps", group=_O)
    weight_decay: float = option(0.01, "AdamW weight decay", group=_O)
    adam_beta1: float = option(0.9, "AdamW β1", group=_O)
    adam_beta2: float = option(0.95, "AdamW β2", group=_O)
    max_grad_norm: float = option(1.0, "gradient clipping, 0 = off", group=_O)
    seed: int = option(0, "seed of initialisation, data order and tie-breaking", group=_O)
    gradient_checkpointing: bool = option(False, "recompute activations in backward (less memory)", group=_O)
    chunk_size: int = option(1024, "positions per output-layer chunk of the loss", group=_O)
    loss_kernel: str = option(
        "chunked",
        "per-token NLL of the output layer: chunked (any device) or cce (Cut-Cross-Entropy's fused kernel: a CUDA "
        "GPU, --dtype bfloat16/float16, pip install 'tokenweight[cce]')",
        choices=LOSS_KERNELS,
        group=_O,
    )
    deepspeed: str | None = option(
        None, "DeepSpeed config file, or a shipped one: zero3", metavar="FILE|NAME", group=_O
    )
    dataloader_workers: int = option(0, "DataLoader worker processes", group=_O)
    save_steps: int = option(100, "checkpoint every N steps", group=_C)
    save_total_limit: int | None = option(2, "checkpoints kept (none: all)", group=_C)
    logging_steps: int = option(1, "log every N steps", group=_C)
    report_to: list[str] = option(
        factory=lambda: ["tensorboard"],
        help="trackers that also get every log (OUT/log.jsonl is always written); tensorboard writes OUT/tensorboard",
        choices=REPORT_TO,
        group=_C,
    )
    force: bool = option(False, "replace a run made with other settings (the old one stays until the new one is done)")
    dtype: str = option(
        "float32",
        "mixed precision: bfloat16 or float16 autocast with float32 master weights (float16 needs a GPU)",
        choices=RUNTIME_DTYPES,
        group=RUNTIME_GROUP,
    )

    def validate(self) -> None:
        from tokenweight.models import PRESETS

        check_required(self, "data", "out", usage="pass --data DIR and --out DIR (and --model PATH | --init PRESET)")
        if bool(self.model) == bool(self.init):
            raise ValueError(
                "pass exactly one of --model PATH|ID (start from a trained model) and "
                f"--init PRESET (from scratch: {', '.join(PRESETS)})"
            )
        if self.init is not None and self.init not in PRESETS:
            raise ValueError(f"init must be one of {', '.join(PRESETS)}, got {self.init!r}")
        for name in ("max_steps", "batch_size", "grad_accum", "save_steps", "logging_steps", "chunk_size"):
            check_int(self, name, 1)
        check_int(self, "max_train_sequences", 1, optional=True)
        check_int(self, "save_total_limit", 1, optional=True)
        for name in ("warmup_steps", "dataloader_workers", "seed"):
            check_int(self, name, 0)
        check_float(self, "lr", low=0, low_open=True)
        check_float(self, "weight_decay", low=0)
        check_float(self, "adam_beta1", low=0, high=1, high_open=True)
        check_float(self, "adam_beta2", low=0, high=1, high_open=True)
        check_float(self, "max_grad_norm", low=0)
        check_choice(self, "lr_scheduler")
        self.validate_runtime()
        check_choice(self, "loss_kernel")
        if self.loss_kernel == "cce":  # here, before any work: device, package, dtype
            import torch

            from tokenweight.loss_kernels import cce_problem

            runtime = self.runtime()
            problem = cce_problem(runtime.device, getattr(torch, runtime.dtype))
            if problem is not None:
                raise ValueError(problem)
        if not self.report_to or any(r not in REPORT_TO for r in self.report_to):
            raise ValueError(f"report_to must be a list of {', '.join(REPORT_TO)}, got {self.report_to!r}")
        if "none" in self.report_to and len(self.report_to) > 1:
            raise ValueError(f"report_to: none excludes every other tracker, got {','.join(self.report_to)}")

    def settings(self) -> dict:
        """What identifies the run (compared when a run folder is continued or reused): every
        setting except :data:`RESUMABLE_CHANGES`, with the inputs by content rather than by path
        (the prepared data's fingerprint, the starting model's digest, the score cache's
        fingerprint), so that a moved or copied folder is still the same run."""
        from tokenweight.identity import input_identity

        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        d = {
            k: v
            for k, v in self.to_dict().items()
            if k not in RESUMABLE_CHANGES and not (k in OMITTED_AT_DEFAULT and v == defaults.get(k))
        }
        for name in ("data", "model", "scores"):
            if d.get(name) is not None:
                d[name] = input_identity(name, d[name])
        return d


@dataclass
class PretrainConfig(RunConfig):
    """``tokenweight pretrain``: plain next-token training at the short context ``w``."""

    max_steps: int = option(300, "optimizer steps", group=_O)
    batch_size: int = option(16, "sequences per device and micro-batch", group=_O)
    lr: float = option(2e-3, "peak learning rate", group=_O)
    lr_scheduler: str = option("cosine", "HF scheduler name", choices=SCHEDULERS, group=_O)
    warmup_steps: int = option(20, "linear warm-up steps", group=_O)
    window: int = option(256, "short context w in tokens: every prepared sequence is cut into windows of w")
    rope_theta: float | None = option(None, "RoPE base of --init models (none: 10000)")
    task: str = option(
        "lm",
        "lm: next-token training on --data; copy: synthetic repeats of random tokens, loss on the repeat only "
        "(an induction warm-up; --data only gives the tokenizer)",
        choices=("lm", "copy"),
    )
    copy_fraction: float = option(0.0, "with --task lm: share of the training windows replaced by copy-task rows")
    copy_length: int | None = option(None, "tokens per copy-task row (none: --window)")

    def validate(self) -> None:
        super().validate()
        check_int(self, "window", 2)
        check_float(self, "rope_theta", low=0, low_open=True, optional=True)
        check_choice(self, "task")
        check_float(self, "copy_fraction", low=0, high=1, high_open=True)
        length = self.row_length
        if (self.task == "copy" or self.copy_fraction) and not 4 <= length <= self.window:
            raise ValueError(
                f"copy_length: copy rows need 4 to --window ({self.window}) tokens (BOS and a token to copy, "
                f"twice), got {length}: set --copy-length or --window"
            )

    @property
    def row_length(self) -> int:
        """Tokens per copy-task row."""
        return self.window if self.copy_length is None else self.copy_length


@dataclass
class TrainConfig(RunConfig):
    """``tokenweight train``: context extension with a token-weighted loss (uniform = plain CE)."""

    scheme: str = option(
        "uniform",
        "weighting scheme: uniform | dense:<λ> | sparse:<κ> | longce:<γ> | ppmi:<s>:<κ> | npmi:<s>:<κ> | rho1:<κ> "
        "| custom:... (uniform = plain cross-entropy)",
        group="token weighting",
    )
    scorer: str = option(
        "none",
        "source of the short-context NLL: the live model (self) or a score cache (frozen)",
        choices=("none", "self", "frozen"),
        group="token weighting",
    )
    scores: str | None = option(
        None, "score cache of tokenweight score (--scorer frozen)", metavar="DIR", group="token weighting"
    )
    window: int | None = option(
        None,
        "short context w (none: the cache's for frozen scoring, else --base-context)",
        group="token weighting",
    )
    stride: int | None = option(None, "window stride s (none: round((1 - w/n)·w))", group="token weighting")
    score_batch_size: int | None = option(
        None, "windows per forward pass of self-scoring (none: ~16k tokens)", group="token weighting"
    )
    short_context: str = option(
        "method",
        "the short context of self-scoring: method (docs/METHOD.md: windows of --window every --stride, BOS put "
        "back) or longce (Fang et al.'s LongCE: raw windows of --longce-trunc-len + --longce-sliding-window "
        "tokens every --longce-sliding-window, the tokens before trunc_len weigh 1)",
        choices=SHORT_CONTEXTS,
        group="token weighting",
    )
    longce_trunc_len: int = option(
        4096, "with --short-context longce: short context of the first scored token (LongCE's)", group="token weighting"
    )
    longce_sliding_window: int = option(
        1024, "with --short-context longce: tokens scored per short window (LongCE's)", group="token weighting"
    )
    weight_norm: str = option(
        "sequence",
        "unit of the weights' normalisation and top-k (T, L1, softmax, top-k share): sequence (a row, the paper's "
        "rule) or document (every document of a packed row on its own, so packing does not change its weights; "
        "recommended for packed data); the same on unpacked data",
        choices=WEIGHT_NORMS,
        group="token weighting",
    )
    sp_size: int = option(
        1,
        "sequence parallelism: every sequence split into this many shards over as many processes (DeepSpeed "
        "Ulysses through the HF Trainer: needs --deepspeed, frozen scoring, unpacked data, n divisible by it); "
        "the weights are those of the whole sequence",
        group="token weighting",
    )
    n: int | None = option(None, "long context in tokens (none: the data's n)", group="context extension")
    rope_theta: float | None = option(
        None,
        "RoPE base for the long run (none: θ·(n/w)^(log 30.6/log 4), the paper's 500k -> 15.3M at 4x)",
        group="context extension",
    )
    rope_scaling: str | None = option(
        None,
        "use the model's RoPE scaling of this type (factor n/w) instead of raising θ",
        choices=ROPE_SCALING_TYPES,
        group="context extension",
    )
    base_context: int | None = option(
        None,
        "the short context w the --model was trained at, where its config already holds a longer one "
        "(none: original_max_position_embeddings of its RoPE parameters, e.g. Llama-3.1's 8192 or Phi-3's, "
        "else max_position_embeddings); the default --window and the base of the extension",
        group="context extension",
    )

    def validate(self) -> None:
        from tokenweight.weighting import WeightingScheme

        super().validate()
        try:
            scheme = WeightingScheme.parse(self.scheme)
        except ValueError as e:
            raise ValueError(f"scheme: {e}") from None
        check_choice(self, "scorer")
        if scheme.needs_short and self.scorer == "none":
            raise ValueError(
                f"scorer: --scheme {scheme} needs short-context NLL: pass --scorer self, or --scorer frozen "
                "--scores DIR (from tokenweight score)"
            )
        if self.scorer == "frozen" and not self.scores:
            raise ValueError("scores: --scorer frozen needs --scores DIR: create it with tokenweight score")
        for name in ("n", "score_batch_size", "stride"):
            check_int(self, name, 1, optional=True)
        check_int(self, "window", 2, optional=True)
        if self.window is not None and self.stride is not None and not self.stride < self.window:
            raise ValueError(f"stride must be in [1, window) = [1, {self.window}), got {self.stride}")
        check_choice(self, "short_context")
        check_choice(self, "weight_norm")
        check_int(self, "longce_trunc_len", 1)
        check_int(self, "longce_sliding_window", 1)
        if self.short_context == "longce" and self.scorer == "frozen":
            raise ValueError(
                "short_context: longce is self-scoring (the live model, as in LongCE); a score cache holds "
                "docs/METHOD.md's windows: pass --scorer self"
            )
        if self.short_context == "longce" and (self.window is not None or self.stride is not None):
            raise ValueError(
                "short_context: --window/--stride set docs/METHOD.md's windows; with --short-context longce "
                "set --longce-trunc-len and --longce-sliding-window instead"
            )
        check_float(self, "rope_theta", low=0, low_open=True, optional=True)
        if self.rope_scaling is not None:
            check_choice(self, "rope_scaling")
        if self.init and self.rope_scaling:
            raise ValueError(
                "rope_scaling extends a trained model (--model); an --init model is built for n directly "
                "(set its base with --rope-theta)"
            )
        check_int(self, "base_context", 2, optional=True)
        if self.init and self.base_context is not None:
            raise ValueError("base_context describes a trained --model; an --init model is built for n directly")
        check_int(self, "sp_size", 1)
        if self.sp_size > 1 and not self.deepspeed:
            raise ValueError(
                "sp_size: sequence parallelism runs on DeepSpeed's Ulysses: pass --deepspeed zero3 (or a config)"
            )
        if self.sp_size > 1 and scheme.needs_short and self.scorer == "self":
            raise ValueError(
                "sp_size: self-scoring under sequence parallelism is not supported (the live model's attention is "
                "split over the processes): score with tokenweight score and pass --scorer frozen --scores DIR"
            )
