"""Our training options -> ``transformers.TrainingArguments`` (one place, so pretrain and train agree).

The defaults are the paper's extension recipe where it has one (METHOD.md: AdamW β 0.9/0.95,
weight decay 0.01, constant learning rate after linear warm-up) and what the HF Trainer needs for a
token-weighted loss: ``remove_unused_columns=False`` (the batch carries ``index``),
``average_tokens_across_devices=True`` (exact global token normalisation, see
``tokenweight.train.trainer``), per-step logging, safetensors checkpoints with optimizer state (for
``--resume``), and non-padding input-token counting (kept in the checkpoint, so token totals
survive a resume). Multi-GPU strategies come from the launcher (``accelerate launch --config_file
...``/``torchrun``) or from ``deepspeed`` (a DeepSpeed config: a JSON/YAML file or the name of a
config shipped in ``tokenweight/configs/deepspeed/``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

from tokenweight.errors import UsageError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
SCHEDULERS = ("constant_with_warmup", "cosine", "linear", "constant", "cosine_with_min_lr")


@dataclasses.dataclass
class Recipe:
    """Optimisation settings of a run (names as the CLI flags, with underscores)."""

    max_steps: int = 100
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    lr_scheduler: str = "constant_with_warmup"
    warmup_steps: int = 0
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    max_grad_norm: float = 1.0
    seed: int = 0
    bf16: bool = False
    gradient_checkpointing: bool = False
    save_steps: int = 100
    save_total_limit: int | None = 2
    logging_steps: int = 1
    dataloader_workers: int = 0
    deepspeed: str | None = None

    def validate(self) -> None:
        """ValueError naming the field, the value and the valid range."""
        ints = {
            "max_steps": 1,
            "batch_size": 1,
            "grad_accum": 1,
            "warmup_steps": 0,
            "save_steps": 1,
            "logging_steps": 1,
            "dataloader_workers": 0,
            "seed": 0,
        }
        for name, low in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        if self.save_total_limit is not None and (
            not isinstance(self.save_total_limit, int) or self.save_total_limit < 1
        ):
            raise ValueError(f"save_total_limit must be None or an integer >= 1, got {self.save_total_limit!r}")
        if not (self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not (self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        for name in ("adam_beta1", "adam_beta2"):
            if not (0 <= getattr(self, name) < 1):
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not (self.max_grad_norm >= 0):
            raise ValueError(f"max_grad_norm must be >= 0 (0 disables clipping), got {self.max_grad_norm!r}")
        if self.lr_scheduler not in SCHEDULERS:
            raise ValueError(f"lr_scheduler must be one of {', '.join(SCHEDULERS)}, got {self.lr_scheduler!r}")


def load_deepspeed_config(spec: str | os.PathLike) -> dict:
    """A DeepSpeed config as a dict: a ``.json``/``.yaml`` file, or a shipped name (``zero3``)."""
    p = Path(spec)
    if not p.is_file():
        shipped = CONFIG_DIR / "deepspeed" / f"{spec}.yaml"
        if not shipped.is_file():
            names = sorted(q.stem for q in (CONFIG_DIR / "deepspeed").glob("*.yaml"))
            raise UsageError(
                f"DeepSpeed config {str(spec)!r} does not exist: pass a JSON/YAML file or one of {', '.join(names)}"
            )
        p = shipped
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".json":
        return json.loads(text)
    import yaml

    config = yaml.safe_load(text)
    if not isinstance(config, dict):
        raise UsageError(f"DeepSpeed config {str(p)!r} must hold a mapping: fix the file")
    return config


def training_arguments(recipe: Recipe, out_dir: str | os.PathLike):
    """``TrainingArguments`` for a run writing checkpoints to ``out_dir``."""
    from transformers import TrainingArguments

    recipe.validate()
    deepspeed = None
    if recipe.deepspeed:
        try:
            import deepspeed as _  # noqa: F401
        except ImportError:
            raise UsageError(
                "--deepspeed needs the deepspeed package: pip install deepspeed (on a GPU machine)"
            ) from None
        deepspeed = load_deepspeed_config(recipe.deepspeed)
    return TrainingArguments(
        output_dir=str(out_dir),
        max_steps=recipe.max_steps,
        per_device_train_batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.grad_accum,
        learning_rate=recipe.lr,
        lr_scheduler_type=recipe.lr_scheduler,
        warmup_steps=recipe.warmup_steps,
        weight_decay=recipe.weight_decay,
        adam_beta1=recipe.adam_beta1,
        adam_beta2=recipe.adam_beta2,
        max_grad_norm=recipe.max_grad_norm,
        seed=recipe.seed,
        data_seed=recipe.seed,
        bf16=recipe.bf16,
        activation_checkpointing=recipe.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if recipe.gradient_checkpointing else None,
        save_strategy="steps",
        save_steps=recipe.save_steps,
        save_total_limit=recipe.save_total_limit,
        logging_strategy="steps",
        logging_steps=recipe.logging_steps,
        report_to="none",
        disable_tqdm=not sys.stderr.isatty(),
        remove_unused_columns=False,
        average_tokens_across_devices=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=recipe.dataloader_workers,
        dataloader_pin_memory=_cuda(),
        use_cpu=not _cuda(),
        ddp_find_unused_parameters=False,
        deepspeed=deepspeed,
    )


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
