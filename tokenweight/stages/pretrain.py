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

from dataclasses import dataclass

from tokenweight.config import check_choice, check_float, check_int, option
from tokenweight.errors import UsageError
from tokenweight.stages.runs import OPTIMISATION, SCHEDULERS, RunConfig, RunResult, planned_run

__all__ = ["PretrainConfig", "pretrain"]


@dataclass
class PretrainConfig(RunConfig):
    """``tokenweight pretrain``: plain next-token training at the short context ``w``."""

    max_steps: int = option(300, "optimizer steps", group=OPTIMISATION)
    batch_size: int = option(16, "sequences per device and micro-batch", group=OPTIMISATION)
    lr: float = option(2e-3, "peak learning rate", group=OPTIMISATION)
    lr_scheduler: str = option("cosine", "HF scheduler name", choices=SCHEDULERS, group=OPTIMISATION)
    warmup_steps: int = option(20, "linear warm-up steps", group=OPTIMISATION)
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


def pretrain(config: PretrainConfig) -> RunResult:
    """Run (or continue, or find finished) the pretraining run ``config.out``."""
    config.check()
    with planned_run(config, "pretrain") as plan:  # a finished run is found before anything is loaded
        if plan.state == "done":
            return RunResult(plan.out, plan.summary, already_done=True)
        return RunResult(plan.out, _pretrain(config, plan))


def _pretrain(config: PretrainConfig, plan) -> dict:
    from tokenweight.outputs import launch_world_size
    from tokenweight.token_weighting import TokenWeighting
    from tokenweight.train.runner import run_training
    from tokenweight.train.setup import base_context, build_model, load_train_data, quiet_progress_bars

    quiet_progress_bars()
    data = load_train_data(config.data)
    tokenizer = data.tokenizer
    model = build_model(config, tokenizer, config.window, config.rope_theta)
    if config.model and base_context(model) < config.window:
        raise UsageError(
            f"model {config.model!r} has max_position_embeddings {base_context(model)} < --window "
            f"{config.window}: pretrain with a smaller --window"
        )
    if config.task == "copy":
        rows = config.max_steps * config.batch_size * config.grad_accum * launch_world_size()
        dataset = _copy_task(config, tokenizer, rows)
    else:
        from tokenweight.train.collate import TrainSequences

        dataset = TrainSequences(
            data.train, window=config.window, bos_token_id=tokenizer.bos_token_id, limit=config.max_train_sequences
        )
        if config.copy_fraction:
            from tokenweight.train.copytask import WithCopyRows

            dataset = WithCopyRows(dataset, _copy_task(config, tokenizer, len(dataset)), config.copy_fraction)
    return run_training(
        model=model,
        tokenizer=tokenizer,
        train_dataset=dataset,
        config=config,
        token_weighting=TokenWeighting(
            "uniform", chunk_size=config.chunk_size, loss_kernel=config.loss_kernel, seed=config.seed
        ),
        plan=plan,
        run_config={**config.to_dict(), "command": "pretrain", "n": data.n},
    )


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
