"""A run's options -> ``transformers.TrainingArguments`` (one place, so pretrain and train agree).

The defaults are the paper's extension recipe where it has one (docs/METHOD.md: AdamW β 0.9/0.95,
weight decay 0.01, constant learning rate after linear warm-up) and what the HF Trainer needs for a
token-weighted loss: ``remove_unused_columns=False`` (the batch carries ``index``),
``average_tokens_across_devices=True`` (exact global token normalisation, see
``tokenweight.train.trainer``), per-step logging, safetensors checkpoints with optimizer state (so
that the same command continues an interrupted run: ``tokenweight.train.runner``), and non-padding
input-token counting (kept in the checkpoint, so token totals survive a resume). The runtime options
(``tokenweight.runtime.resolve_runtime``): ``dtype`` bfloat16/float16 is ``bf16``/``fp16`` mixed
precision over float32 master weights, ``device`` cpu is ``use_cpu``. ``report_to``
goes to HF's own tracker integrations as it is (TensorBoard's folder is set to ``OUT/tensorboard``
by :func:`tokenweight.train.callbacks.place_tensorboard`). Multi-GPU strategies come from the
launcher (``accelerate launch --config_file ...``/``torchrun``) or from ``deepspeed`` (a DeepSpeed
config: a JSON/YAML file or the name of a config shipped in ``tokenweight/configs/deepspeed/``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from tokenweight.errors import UsageError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


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


def sequence_parallelism(sp_size: int, attn_implementation: str, cpu: bool):
    """accelerate's ``ParallelismConfig`` for DeepSpeed's Ulysses over ``sp_size`` processes (None for 1).

    On CPUs accelerate starts gloo but not DeepSpeed's communication layer, which Ulysses needs
    before the Trainer is built: it is started here (gloo). The attention implementation is the
    model's (Ulysses wraps it; eager is refused by DeepSpeed)."""
    if sp_size <= 1:
        return None
    import deepspeed
    from accelerate.utils import ParallelismConfig
    from accelerate.utils.dataclasses import DeepSpeedSequenceParallelConfig

    if cpu and not deepspeed.comm.is_initialized():
        deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    if attn_implementation == "eager":
        raise UsageError(
            "--sp-size: DeepSpeed's Ulysses does not wrap eager attention: pass --attn-implementation sdpa"
        )
    handler = DeepSpeedSequenceParallelConfig(
        sp_seq_length_is_variable=True, sp_attn_implementation=attn_implementation
    )
    return ParallelismConfig(sp_backend="deepspeed", sp_size=sp_size, sp_handler=handler)


def training_arguments(recipe, out_dir: str | os.PathLike, attn_implementation: str = "sdpa"):
    """``TrainingArguments`` of a run (``recipe``: a :class:`~tokenweight.stages.runs.RunConfig`)
    writing checkpoints to ``out_dir``; ``attn_implementation``: the model's (sequence parallelism
    wraps it)."""
    from transformers import TrainingArguments

    # recipe: already validated by its stage (RunConfig.validate)
    deepspeed = None
    if recipe.deepspeed:
        try:
            import deepspeed as _  # noqa: F401
        except ImportError:
            raise UsageError(
                "--deepspeed needs the deepspeed package: pip install deepspeed (on a GPU machine)"
            ) from None
        deepspeed = load_deepspeed_config(recipe.deepspeed)
    runtime = recipe.runtime()  # dtype: mixed precision over float32 master weights; device cpu: use_cpu
    report_to = [r for r in recipe.report_to if r != "none"]
    for tracker in report_to:
        if importlib.util.find_spec(tracker) is None:
            raise UsageError(f"--report-to {tracker} needs the {tracker} package: pip install {tracker} (or drop it)")
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
        bf16=runtime.dtype == "bfloat16",
        fp16=runtime.dtype == "float16",
        activation_checkpointing=recipe.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if recipe.gradient_checkpointing else None,
        save_strategy="steps",
        save_steps=recipe.save_steps,
        save_total_limit=recipe.save_total_limit,
        logging_strategy="steps",
        logging_steps=recipe.logging_steps,
        report_to=report_to or "none",
        disable_tqdm=not sys.stderr.isatty(),
        remove_unused_columns=False,
        average_tokens_across_devices=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=recipe.dataloader_workers,
        dataloader_pin_memory=runtime.device.startswith("cuda"),
        use_cpu=runtime.device == "cpu",
        ddp_find_unused_parameters=False,
        deepspeed=deepspeed,
        parallelism_config=sequence_parallelism(
            getattr(recipe, "sp_size", 1), attn_implementation, cpu=runtime.device == "cpu"
        ),
    )
