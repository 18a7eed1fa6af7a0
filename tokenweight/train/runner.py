"""One training run from start (or checkpoint) to saved model and summary; shared by pretrain and train.

Layout of a run folder ``OUT/``::

    run_config.json        the options of the run (checked on --resume: a resumed run must be the same run)
    checkpoint-<step>/     HF checkpoints (safetensors weights, optimizer, scheduler, RNG, trainer state)
    log.jsonl              one line per logged step (tokenweight.train.callbacks.JsonlLogger)
    tensorboard/           the same numbers for TensorBoard
    model/                 the final model with its tokenizer (AutoModelForCausalLM.from_pretrained)
    summary.json           steps, tokens, wall time, tokens/s, final losses

Resuming uses HF's ``resume_from_checkpoint`` on the last checkpoint: model, optimizer, scheduler,
RNG states and the position in the data order are restored, so a resumed run ends where an
uninterrupted one would (tested). ``model/`` and ``summary.json`` are written atomically at the end.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tokenweight.errors import UsageError
from tokenweight.io_utils import atomic_write_json, replace_dir, tmp_dir_for

#: run_config keys that may differ on --resume (they do not change what is trained)
RESUMABLE_CHANGES = frozenset(
    {"max_steps", "save_steps", "save_total_limit", "logging_steps", "dataloader_workers", "resume", "out", "config"}
)


def _last_checkpoint(out: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(out)) if out.is_dir() else None


def check_out_dir(out: Path, run_config: dict | None, resume: bool) -> str | None:
    """Refuse to clobber a finished or started run; on resume return the checkpoint to resume from.

    ``run_config`` None skips the comparison with the interrupted run's options (a cheap early check,
    before a model is loaded).
    """
    import json

    last = _last_checkpoint(out)
    if not resume:
        if last is not None or (out / "model").exists() or (out / "summary.json").exists():
            raise UsageError(
                f"--out {str(out)!r} already holds a run: pass --resume to continue it, or choose another --out"
            )
        return None
    if last is None:
        raise UsageError(
            f"--resume: {str(out)!r} holds no checkpoint to resume from: run without --resume "
            "(or with --save-steps small enough to have saved one)"
        )
    saved = out / "run_config.json"
    if run_config is not None and saved.is_file():
        old = json.loads(saved.read_text(encoding="utf-8"))
        diff = sorted(
            k for k in set(old) | set(run_config) if k not in RESUMABLE_CHANGES and old.get(k) != run_config.get(k)
        )
        if diff:
            k = diff[0]
            raise UsageError(
                f"--resume: option {k} was {old.get(k)!r} in the interrupted run but is "
                f"{run_config.get(k)!r} now: resume with the same options, or start a new --out"
            )
    return last


def _broadcast(value, trainer):
    if trainer.args.world_size <= 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def save_final(trainer, path: Path) -> None:
    """``trainer.save_model`` (weights gathered from every process) into ``path``, atomically."""
    main = trainer.is_world_process_zero()
    tmp = str(tmp_dir_for(path)) if main else None
    tmp = _broadcast(tmp, trainer)
    try:
        trainer.save_model(tmp)  # every process: FSDP/ZeRO-3 gather; the main one writes (with the tokenizer)
        trainer.accelerator.wait_for_everyone()
        if main:
            replace_dir(tmp, path)
    except BaseException:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    trainer.accelerator.wait_for_everyone()


def run_training(
    *,
    model,
    tokenizer,
    train_dataset,
    recipe,
    out_dir,
    scheme="uniform",
    scorer=None,
    chunk_size: int = 1024,
    resume: bool = False,
    run_config: dict | None = None,
    trainer_class=None,
) -> dict:
    """Train ``model`` on ``train_dataset`` (``TrainSequences``) and save everything under ``out_dir``.

    Returns the summary (also written to ``OUT/summary.json``).
    """
    import transformers

    from tokenweight.train.callbacks import JsonlLogger, install_progress, tensorboard_callback
    from tokenweight.train.collate import PadCollator
    from tokenweight.train.recipe import training_arguments
    from tokenweight.train.trainer import WeightedTrainer

    transformers.logging.set_verbosity_warning()
    out = Path(out_dir)
    run_config = dict(run_config or {})
    checkpoint = check_out_dir(out, run_config, resume)
    args = training_arguments(recipe, out)
    if args.process_index == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "run_config.json", run_config)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    trainer = (trainer_class or WeightedTrainer)(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=PadCollator(pad),
        processing_class=tokenizer,
        scheme=scheme,
        scorer=scorer,
        chunk_size=chunk_size,
        callbacks=[JsonlLogger(out / "log.jsonl"), tensorboard_callback(out / "tensorboard")],
    )
    install_progress(trainer)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    save_final(trainer, out / "model")
    state = trainer.state
    last = next((h for h in reversed(state.log_history) if "weighted_loss" in h), {})
    runtime = float(result.metrics.get("train_runtime", 0.0))
    initial = getattr(trainer, "_initial_num_input_tokens_seen", 0) or 0
    session_tokens = int(state.num_input_tokens_seen) - int(initial)
    summary = {
        "steps": state.global_step,
        "tokens": int(state.num_input_tokens_seen),
        "session_tokens": session_tokens,
        "wall_time_s": runtime,
        "tokens_per_s": session_tokens / runtime if runtime > 0 else 0.0,
        "final_loss": last.get("weighted_loss"),
        "final_plain_loss": last.get("plain_loss"),
        "scheme": str(trainer.scheme),
        "scorer": repr(trainer.scorer) if trainer.scorer is not None else None,
        "resumed_from": checkpoint,
        "world_size": args.world_size,
        "model": str(out / "model"),
    }
    if trainer.is_world_process_zero():
        atomic_write_json(out / "summary.json", summary)
    return summary
