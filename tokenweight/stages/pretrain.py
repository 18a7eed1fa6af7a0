"""Stage ``pretrain``: plain next-token training at the short context ``w``.

The stand-in for "a model pretrained at short context" (the paper's 8k Llama-3): every prepared
sequence is cut into consecutive windows of ``window`` tokens (each starting with BOS, like the
short-context scorer's windows), and the model is trained on them with plain cross-entropy through
exactly the code path of :func:`tokenweight.stages.train.train` (``WeightedTrainer`` with the
uniform scheme, no scorer). The saved model has ``max_position_embeddings = w``, which ``train``
reads as the base length to extend from. On packed data (``prepare --pack``) the windows are cut
from every document separately, so that no window crosses a document (``TrainSequences``).

``task="copy"`` trains on synthetic repeats of random tokens instead (``tokenweight.train.copytask``),
an induction warm-up; ``copy_fraction`` mixes such rows into the language-modelling windows.
Why the demo needs them, and what they achieve, is in docs/TRAINING.md.
"""

from __future__ import annotations

from tokenweight.errors import UsageError
from tokenweight.stages.runs import RunResult, plan_stage
from tokenweight.train.config import PretrainConfig

__all__ = ["PretrainConfig", "pretrain"]


def pretrain(config: PretrainConfig) -> RunResult:
    """Run (or continue, or find finished) the pretraining run ``config.out``."""
    from tokenweight.stages.train import _check_loss_kernel, _trainer_class
    from tokenweight.train.runner import run_training
    from tokenweight.train.setup import base_context, build_model, load_train_data, quiet_progress_bars, world_size

    config.validate()
    out, plan = plan_stage(config, "pretrain")
    if plan.state == "done":
        return RunResult(out, plan.summary, already_done=True)
    quiet_progress_bars()
    data = load_train_data(config.data)
    tokenizer = data.tokenizer
    model = build_model(config, tokenizer, config.window, config.rope_theta)
    _check_loss_kernel(config, model)
    if config.model and base_context(model) < config.window:
        raise UsageError(
            f"model {config.model!r} has max_position_embeddings {base_context(model)} < --window "
            f"{config.window}: pretrain with a smaller --window"
        )
    if config.task == "copy":
        rows = config.max_steps * config.batch_size * config.grad_accum * world_size()
        dataset = _copy_task(config, tokenizer, rows)
    else:
        from tokenweight.train.collate import TrainSequences

        dataset = TrainSequences(
            data.train, window=config.window, bos_token_id=tokenizer.bos_token_id, limit=config.max_train_sequences
        )
        if config.copy_fraction:
            from tokenweight.train.copytask import WithCopyRows

            dataset = WithCopyRows(dataset, _copy_task(config, tokenizer, len(dataset)), config.copy_fraction)
    summary = run_training(
        model=model,
        tokenizer=tokenizer,
        train_dataset=dataset,
        recipe=config,
        out_dir=out,
        plan=plan,
        scheme="uniform",
        scorer=None,
        chunk_size=config.chunk_size,
        run_config={**config.to_dict(), "command": "pretrain", "n": data.n},
        trainer_class=_trainer_class(config),
    )
    return RunResult(out, summary)


def _copy_task(config: PretrainConfig, tokenizer, rows: int):
    from tokenweight.train.copytask import CopyTask

    return CopyTask(
        rows,
        config.row_length,
        len(tokenizer),
        special_ids=tokenizer.all_special_ids,
        bos_token_id=tokenizer.bos_token_id,
        seed=config.seed,
    )
