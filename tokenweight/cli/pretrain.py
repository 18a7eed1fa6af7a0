"""``tokenweight pretrain``: plain next-token training at the short context ``w``.

The stand-in for "a model pretrained at short context" (the paper's 8k Llama-3): every prepared
sequence is cut into consecutive windows of ``--window`` tokens (each starting with BOS, like the
short-context scorer's windows), and the model (``--init PRESET`` from scratch, or ``--model`` to
continue) is trained on them with plain cross-entropy through exactly the code path of ``tokenweight
train`` (``WeightedTrainer`` with the uniform scheme, no scorer). The saved model has
``max_position_embeddings = w``, which ``tokenweight train`` reads as the base length to extend from.

``--task copy`` trains instead on synthetic repeats of random tokens (``tokenweight.train.copytask``),
an induction warm-up (``--data`` then only provides the tokenizer): continue with ``--task lm
--model WARMUP/model``, as the demo does when its profile has ``copy_steps``. ``--copy-fraction``
mixes such rows into the language-modelling windows, and ``--copy-length`` makes the rows shorter
than the window (64-token rows form the induction head in the fewest steps). The demo's recipe and
what it achieved on 2 CPU cores are in docs/TRAINING.md.
"""

from __future__ import annotations

from tokenweight.cli.train import (
    add_common_arguments,
    build_model,
    check_common,
    load_data,
    print_summary,
    quiet_progress_bars,
    recipe_from_args,
)
from tokenweight.errors import UsageError

HELP = "pretrain at short context w with plain cross-entropy (the short-context base model)"


def add_arguments(parser) -> None:
    add_common_arguments(parser, lr=2e-3, max_steps=300, batch_size=16, warmup_steps=20, scheduler="cosine")
    parser.add_argument("--window", type=int, default=256, help="short context w in tokens (default 256)")
    parser.add_argument("--rope-theta", type=float, default=None, help="RoPE base of --init models (default 10000)")
    parser.add_argument(
        "--task",
        choices=("lm", "copy"),
        default="lm",
        help="lm: next-token training on --data (default); copy: synthetic repeats of random "
        "tokens, loss on the repeat only (an induction warm-up; --data gives the tokenizer)",
    )
    parser.add_argument(
        "--copy-fraction",
        type=float,
        default=0.0,
        help="with --task lm: share of the training windows replaced by copy-task rows, so that a "
        "small model learns to copy while it learns the language (default 0)",
    )
    parser.add_argument(
        "--copy-length",
        type=int,
        default=None,
        help="tokens per copy-task row (default --window); short rows (64) form induction heads "
        "in fewer steps (docs/TRAINING.md)",
    )


def run(args) -> int:
    check_common(args)
    if args.window < 2:
        raise UsageError(f"--window must be >= 2, got {args.window}")
    if not 0 <= args.copy_fraction < 1:
        raise UsageError(f"--copy-fraction must be in [0, 1), got {args.copy_fraction}")
    if args.copy_length is None:
        args.copy_length = args.window
    if (args.task == "copy" or args.copy_fraction) and not 4 <= args.copy_length <= args.window:
        raise UsageError(
            f"--task copy and --copy-fraction need copy rows of 4 to --window ({args.window}) tokens "
            f"(BOS and a token to copy, twice), got {args.copy_length}: set --copy-length or --window"
        )
    if args.rope_theta is not None and not args.rope_theta > 0:
        raise UsageError(f"--rope-theta must be > 0, got {args.rope_theta}")
    quiet_progress_bars()
    ds, manifest, tokenizer = load_data(args)
    model = build_model(args, tokenizer, args.window, args.rope_theta)
    if args.model:
        base = int(model.config.get_text_config().max_position_embeddings)
        if base < args.window:
            raise UsageError(
                f"model {args.model!r} has max_position_embeddings {base} < --window {args.window}: "
                "pretrain with a smaller --window"
            )

    from tokenweight.train.collate import TrainSequences
    from tokenweight.train.runner import run_training

    if args.task == "copy":
        dataset = _copy_task(args, tokenizer, args.max_steps * args.batch_size * args.grad_accum * _world_size())
    else:
        dataset = TrainSequences(
            ds, window=args.window, bos_token_id=tokenizer.bos_token_id, limit=args.max_train_sequences
        )
        if args.copy_fraction:
            from tokenweight.train.copytask import WithCopyRows

            dataset = WithCopyRows(dataset, _copy_task(args, tokenizer, len(dataset)), args.copy_fraction)
    run_config = dict(vars(args), command="pretrain", n=int(manifest["n"]))
    summary = run_training(
        model=model,
        tokenizer=tokenizer,
        train_dataset=dataset,
        recipe=recipe_from_args(args),
        out_dir=args.out,
        scheme="uniform",
        scorer=None,
        chunk_size=args.chunk_size,
        resume=args.resume,
        run_config=run_config,
    )
    print_summary("pretrained", summary, args.out)
    return 0


def _copy_task(args, tokenizer, rows: int):
    from tokenweight.train.copytask import CopyTask

    return CopyTask(
        rows,
        args.copy_length,
        len(tokenizer),
        special_ids=tokenizer.all_special_ids,
        bos_token_id=tokenizer.bos_token_id,
        seed=args.seed,
    )


def _world_size() -> int:
    import os

    return max(1, int(os.environ.get("WORLD_SIZE", "1")))
