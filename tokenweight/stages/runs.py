"""What the two training stages share: their common options, the result object, the run-folder plan.

:class:`RunConfig` holds what every training run has (model, data, output folder, optimisation,
checkpoints); ``PretrainConfig`` (``tokenweight.stages.pretrain``) and ``TrainConfig``
(``tokenweight.stages.train``) add what their stage needs, each beside its stage function. Field
defaults are the library's defaults; the embedded experiment's values live in the demo's profiles
(``tokenweight.demo``), and the shipped YAML configs are checked against those by a test.
Optimisation defaults follow the paper's extension recipe where it has one (AdamW β 0.9/0.95,
weight decay 0.01, constant learning rate after a linear warm-up).

A run folder is continued, skipped or refused by :func:`tokenweight.train.runner.plan_run` before
any model is loaded, and written by :func:`tokenweight.train.runner.run_training` under the
folder's lock, so that the same command always does the right thing (docs/TRAINING.md).
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from tokenweight.choices import DEFAULT_CHUNK_SIZE, LOSS_KERNELS
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
from tokenweight.runtime import RUNTIME_DTYPES

SCHEDULERS = ("constant_with_warmup", "cosine", "linear", "constant", "cosine_with_min_lr")
#: experiment trackers the HF Trainer reports to (``TrainingArguments.report_to``); ``none``: only
#: ``OUT/log.jsonl``, which is always written
REPORT_TO = ("tensorboard", "wandb", "mlflow", "trackio", "none")

_M = "model and data"
OPTIMISATION = "optimisation"
_C = "checkpoints and logs"


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
    max_steps: int = option(100, "optimizer steps", group=OPTIMISATION)
    batch_size: int = option(4, "sequences per device and micro-batch", group=OPTIMISATION)
    grad_accum: int = option(1, "micro-batches per optimizer step", group=OPTIMISATION)
    lr: float = option(1e-3, "peak learning rate", group=OPTIMISATION)
    lr_scheduler: str = option("constant_with_warmup", "HF scheduler name", choices=SCHEDULERS, group=OPTIMISATION)
    warmup_steps: int = option(10, "linear warm-up steps", group=OPTIMISATION)
    weight_decay: float = option(0.01, "AdamW weight decay", group=OPTIMISATION)
    adam_beta1: float = option(0.9, "AdamW β1", group=OPTIMISATION)
    adam_beta2: float = option(0.95, "AdamW β2", group=OPTIMISATION)
    max_grad_norm: float = option(1.0, "gradient clipping, 0 = off", group=OPTIMISATION)
    seed: int = option(0, "seed of initialisation, data order and tie-breaking", group=OPTIMISATION)
    gradient_checkpointing: bool = option(False, "recompute activations in backward (less memory)", group=OPTIMISATION)
    chunk_size: int = option(DEFAULT_CHUNK_SIZE, "positions per output-layer chunk of the loss", group=OPTIMISATION)
    loss_kernel: str = option(
        "chunked",
        "per-token NLL of the output layer: chunked (any device) or cce (Cut-Cross-Entropy's fused kernel: a CUDA "
        "GPU, --dtype bfloat16/float16, pip install 'tokenweight[cce]')",
        choices=LOSS_KERNELS,
        group=OPTIMISATION,
    )
    deepspeed: str | None = option(
        None, "DeepSpeed config file, or a shipped one: zero3", metavar="FILE|NAME", group=OPTIMISATION
    )
    dataloader_workers: int = option(0, "DataLoader worker processes", group=OPTIMISATION)
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
        from tokenweight.train.runner import OMITTED_AT_DEFAULT, RESUMABLE_CHANGES

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
class RunResult:
    """Outcome of a pretrain or train stage (``summary``: the run folder's ``summary.json``)."""

    out: Path
    summary: dict = field(default_factory=dict)
    already_done: bool = False

    @property
    def model(self) -> Path:
        return self.out / "model"

    def line(self, kind: str) -> str:
        """One line for the console: what was trained, how fast, the final loss."""
        s = self.summary
        if self.already_done:
            steps = s.get("steps")
            return f"{self.out}: already {kind} ({steps} steps) with these settings; nothing to do -> {self.model}"
        loss = f"; final loss {s['final_loss']:.4f}" if s.get("final_loss") is not None else ""
        plain = f" (plain {s['final_plain_loss']:.4f})" if s.get("final_plain_loss") is not None else ""
        resumed = f" (resumed from {Path(s['resumed_from']).name})" if s.get("resumed_from") else ""
        return (
            f"{kind} {s['steps']} steps{resumed}, {s['tokens']:,} tokens in {s['wall_time_s']:.1f} s "
            f"({s['tokens_per_s']:,.0f} tokens/s){loss}{plain} -> {self.model}"
        )


@contextmanager
def planned_run(config, command: str):
    """The run folder of a training stage, planned once (:func:`tokenweight.train.runner.plan_run`)
    from the config's settings and held for the ``with`` block (:func:`tokenweight.outputs.output_lock`):
    a finished run is found, and a folder with other settings refused, before any model is loaded,
    and no other process can change the folder between the plan and the end of training."""
    from tokenweight.outputs import output_lock
    from tokenweight.train.runner import plan_run

    out = Path(config.out).expanduser()
    with output_lock(out) if out.parent.is_dir() else nullcontext():
        yield plan_run(out, {"command": command, **config.settings()}, force=config.force)
