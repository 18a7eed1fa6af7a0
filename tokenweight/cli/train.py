"""``tokenweight train``: long-context training with token-weighted loss (METHOD.md).

A model (``--model PATH|ID``, extended to the long context ``n`` with RoPE θ scaled as in the
paper, or ``--init PRESET`` from scratch) is trained on prepared data with a weighting scheme:
``--scheme uniform`` is the plain cross-entropy baseline on the same code path; every other scheme
needs short-context NLL from a scorer: ``--scorer self`` (the live model on windows of ``--window``
tokens, every step) or ``--scorer frozen --scores DIR`` (a cache made by ``tokenweight score``).

Multi-GPU: ``accelerate launch --config_file tokenweight/configs/accelerate/fsdp.yaml -m
tokenweight.cli.main train ...`` or ``torchrun --nproc_per_node K -m tokenweight.cli.main train ...``;
DeepSpeed with ``--deepspeed zero3`` (docs/TRAINING.md). The helpers here are shared with
``tokenweight pretrain``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tokenweight.errors import UsageError

HELP = "train with token-weighted loss at long context (self or frozen scoring; uniform = plain CE)"


# ------------------------------------------------------------------------------ shared options


def add_common_arguments(
    parser, *, lr: float, max_steps: int, batch_size: int, warmup_steps: int, scheduler: str
) -> None:
    """Options of both pretrain and train (model, data, output, optimisation, checkpoints)."""
    g = parser.add_argument_group("model and data")
    g.add_argument("--model", default=None, metavar="PATH|ID", help="HF causal LM to start from (folder or hub id)")
    g.add_argument(
        "--init",
        default=None,
        metavar="PRESET",
        help="instead of --model: a Llama from scratch, preset tiny|small|base|large",
    )
    g.add_argument("--data", default=None, metavar="DIR", help="prepared data folder (tokenweight prepare)")
    g.add_argument("--out", default=None, metavar="DIR", help="run folder: checkpoints, logs, model/, summary.json")
    g.add_argument(
        "--max-train-sequences", type=int, default=None, metavar="K", help="use only the first K training sequences"
    )
    o = parser.add_argument_group("optimisation")
    o.add_argument("--max-steps", type=int, default=max_steps, help=f"optimizer steps (default {max_steps})")
    o.add_argument(
        "--batch-size",
        type=int,
        default=batch_size,
        help=f"sequences per device and micro-batch (default {batch_size})",
    )
    o.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    o.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr:g})")
    o.add_argument("--lr-scheduler", default=scheduler, help=f"HF scheduler name (default {scheduler})")
    o.add_argument(
        "--warmup-steps", type=int, default=warmup_steps, help=f"linear warm-up steps (default {warmup_steps})"
    )
    o.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    o.add_argument("--adam-beta1", type=float, default=0.9, help="AdamW β1 (default 0.9)")
    o.add_argument("--adam-beta2", type=float, default=0.95, help="AdamW β2 (default 0.95)")
    o.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping, 0 = off (default 1.0)")
    o.add_argument(
        "--seed", type=int, default=0, help="seed of initialisation, data order and tie-breaking (default 0)"
    )
    o.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="bfloat16 mixed precision (float32 master weights)",
    )
    o.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="recompute activations in backward (less memory, ~30%% slower)",
    )
    o.add_argument(
        "--chunk-size", type=int, default=1024, help="positions per output-layer chunk of the loss (default 1024)"
    )
    o.add_argument(
        "--deepspeed", default=None, metavar="JSON|YAML|NAME", help="DeepSpeed config file, or a shipped one: zero3"
    )
    o.add_argument("--dataloader-workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    c = parser.add_argument_group("checkpoints and logs")
    c.add_argument("--save-steps", type=int, default=100, help="checkpoint every N steps (default 100)")
    c.add_argument("--save-total-limit", type=int, default=2, help="checkpoints kept (default 2)")
    c.add_argument("--logging-steps", type=int, default=1, help="log every N steps (default 1)")
    c.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="continue the run in --out from its last checkpoint",
    )


def check_common(args) -> None:
    """UsageError for missing or out-of-range common options."""
    if not args.data or not args.out:
        raise UsageError(
            f"--data and --out are required: tokenweight {args.command} --data DIR --out DIR "
            "(--model PATH | --init PRESET)"
        )
    if bool(args.model) == bool(args.init):
        raise UsageError(
            "pass exactly one of --model PATH|ID (start from a trained model) and --init PRESET "
            "(from scratch: tiny, small, base, large)"
        )
    from tokenweight.models import PRESETS

    if args.init and args.init not in PRESETS:
        raise UsageError(f"--init {args.init!r} is not a preset: use one of {', '.join(PRESETS)}")
    positive = (
        "max_steps",
        "batch_size",
        "grad_accum",
        "save_steps",
        "save_total_limit",
        "logging_steps",
        "chunk_size",
        "max_train_sequences",
    )
    for name in positive:
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    for name in ("warmup_steps", "dataloader_workers", "seed"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if not args.lr > 0:
        raise UsageError(f"--lr must be > 0, got {args.lr}")
    if not args.weight_decay >= 0:
        raise UsageError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    for name in ("adam_beta1", "adam_beta2"):
        if not 0 <= getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(args, name)}")
    if not args.max_grad_norm >= 0:
        raise UsageError(f"--max-grad-norm must be >= 0 (0 = no clipping), got {args.max_grad_norm}")
    from tokenweight.train.recipe import SCHEDULERS

    if args.lr_scheduler not in SCHEDULERS:
        raise UsageError(f"--lr-scheduler {args.lr_scheduler!r} is not supported: use one of {', '.join(SCHEDULERS)}")
    from tokenweight.train.runner import check_out_dir

    check_out_dir(Path(args.out), None, args.resume)  # before any model is loaded


def recipe_from_args(args):
    from tokenweight.train.recipe import Recipe

    fields = Recipe.__dataclass_fields__
    return Recipe(**{k: getattr(args, k) for k in fields})


def load_data(args):
    """(train split, manifest, tokenizer) of ``--data``."""
    from tokenweight.data import load_prepared
    from tokenweight.models import load_tokenizer

    data = Path(args.data)
    dsd, manifest = load_prepared(data)
    if "train" not in dsd or len(dsd["train"]) == 0:
        raise UsageError(f"prepared data {str(data)!r} has no training sequences: prepare more data")
    tokenizer = load_tokenizer(data / "tokenizer")
    return dsd["train"], manifest, tokenizer


def quiet_progress_bars() -> None:
    """No HF/datasets progress bars when stderr is not a terminal (logs and CI stay clean)."""
    import sys

    if not sys.stderr.isatty():
        import datasets
        import transformers

        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()


def seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


def build_model(args, tokenizer, max_position_embeddings: int, rope_theta: float | None):
    """``--init``: a fresh Llama with the tokenizer's special ids; ``--model``: loaded (float32)."""
    from tokenweight.models import init_model, load_model

    if args.init:
        seed_everything(args.seed)
        return init_model(
            args.init,
            len(tokenizer),
            max_position_embeddings,
            rope_theta=rope_theta if rope_theta is not None else 10000.0,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    model = load_model(args.model)
    vocab = model.get_input_embeddings().weight.shape[0]
    if vocab < len(tokenizer):
        raise UsageError(
            f"model {args.model!r} has {vocab} embeddings but the data's tokenizer has {len(tokenizer)} "
            "tokens: use a model trained with the data's tokenizer"
        )
    return model


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def print_summary(kind: str, s: dict, out: str) -> None:
    if not is_main_process():
        return
    loss = f"; final loss {s['final_loss']:.4f}" if s.get("final_loss") is not None else ""
    plain = (
        f" (plain {s['final_plain_loss']:.4f})" if s.get("final_plain_loss") is not None and kind == "trained" else ""
    )
    resumed = f" (resumed from {Path(s['resumed_from']).name})" if s.get("resumed_from") else ""
    print(
        f"{kind} {s['steps']} steps{resumed}, {s['tokens']:,} tokens in {s['wall_time_s']:.1f} s "
        f"({s['tokens_per_s']:,.0f} tokens/s){loss}{plain} -> {Path(out) / 'model'}"
    )


# ------------------------------------------------------------------------------ train


def add_arguments(parser) -> None:
    add_common_arguments(
        parser, lr=1e-3, max_steps=100, batch_size=4, warmup_steps=10, scheduler="constant_with_warmup"
    )
    w = parser.add_argument_group("token weighting")
    w.add_argument(
        "--scheme",
        default="uniform",
        help="weighting scheme spec: uniform | dense:<λ> | sparse:<κ> | longce:<γ> | ppmi:<s>:<κ> | "
        "npmi:<s>:<κ> | rho1:<κ> | custom:... (default uniform = plain CE)",
    )
    w.add_argument(
        "--scorer",
        default="none",
        choices=("none", "self", "frozen"),
        help="source of the short-context NLL: the live model (self) or a score cache (frozen)",
    )
    w.add_argument("--scores", default=None, metavar="DIR", help="score cache of tokenweight score (--scorer frozen)")
    w.add_argument(
        "--window",
        type=int,
        default=None,
        help="short context w (default: the cache's for frozen, else the model's max_position_embeddings)",
    )
    w.add_argument("--stride", type=int, default=None, help="window stride s (default round((1 - w/n)·w))")
    w.add_argument(
        "--score-batch-size",
        type=int,
        default=None,
        help="windows per forward pass of self-scoring (default ~16k tokens)",
    )
    x = parser.add_argument_group("context extension")
    x.add_argument("--n", type=int, default=None, help="long context in tokens (default: the data's n)")
    x.add_argument(
        "--rope-theta",
        type=float,
        default=None,
        help="RoPE base for the long run (default θ·(n/w)^(log 30.6/log 4), the paper's 500k -> 15.3M at 4x)",
    )
    x.add_argument(
        "--rope-scaling",
        default=None,
        choices=("linear", "dynamic", "yarn", "llama3"),
        help="use the model's RoPE scaling of this type (factor n/w) instead of raising θ",
    )


def _scheme(spec: str):
    from tokenweight.weighting import WeightingScheme

    try:
        return WeightingScheme.parse(spec)
    except ValueError as e:
        raise UsageError(f"--scheme: {e}") from None


def run(args) -> int:
    check_common(args)
    scheme = _scheme(args.scheme)
    if scheme.needs_short and args.scorer == "none":
        raise UsageError(
            f"--scheme {scheme} needs short-context NLL: pass --scorer self, or --scorer frozen "
            "--scores DIR (from tokenweight score)"
        )
    if args.scorer == "frozen" and not args.scores:
        raise UsageError("--scorer frozen needs --scores DIR: create it with tokenweight score --data ... --out DIR")
    for name in ("n", "window", "stride", "score_batch_size"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.rope_theta is not None and not args.rope_theta > 0:
        raise UsageError(f"--rope-theta must be > 0, got {args.rope_theta}")
    if args.init and args.rope_scaling:
        raise UsageError(
            "--rope-scaling extends a trained model (--model); an --init model is built for n directly "
            "(set its base with --rope-theta)"
        )

    quiet_progress_bars()
    ds, manifest, tokenizer = load_data(args)
    n_data = int(manifest["n"])
    n = args.n or n_data
    if n > n_data:
        raise UsageError(f"--n {n} is longer than the data's sequences (n = {n_data}): prepare the data with n >= {n}")

    cache = None
    window, stride = args.window, args.stride
    if args.scorer == "frozen":
        from tokenweight.scorecache import ScoreCache, tokenizer_digest

        probe = ScoreCache.open(args.scores)
        window = window or int(probe.meta["window"])
        stride = stride or int(probe.meta["stride"])
        expect = {
            "data": manifest.get("fingerprint"),
            "split": "train",
            "n": n_data,
            "window": window,
            "stride": stride,
            "tokenizer": tokenizer_digest(tokenizer),
        }
        cache = ScoreCache.open(args.scores, expect=expect)
        used = len(ds) if args.max_train_sequences is None else min(len(ds), args.max_train_sequences)
        if cache.n_sequences < used:
            raise UsageError(
                f"score cache {args.scores!r} covers {cache.n_sequences} sequences but training uses "
                f"{used}: pass --max-train-sequences {cache.n_sequences} or score all of them"
            )

    model = build_model(args, tokenizer, n, args.rope_theta)
    base = int(model.config.get_text_config().max_position_embeddings)
    if window is None and scheme.needs_short:
        if args.init or base >= n:
            raise UsageError(
                f"--window is needed: the model has no shorter base context than n = {n} "
                f"(max_position_embeddings {base}); pass --window w < n"
            )
        window = base
    if window is not None and n <= window:
        raise UsageError(
            f"long context n = {n} must be longer than the short context w = {window}: "
            "pass a smaller --window or a larger --n/data"
        )
    from tokenweight.scorecache import default_stride

    if window is not None:
        stride = stride or default_stride(n, window)
        if not 1 <= stride < window:
            raise UsageError(f"--stride must be in [1, window) = [1, {window}), got {stride}")

    if args.model and (base < n or args.rope_theta is not None or args.rope_scaling):
        from tokenweight.models import extend_context

        try:
            extend_context(model, n, rope_theta=args.rope_theta, rope_scaling=args.rope_scaling)
        except ValueError as e:
            raise UsageError(f"cannot extend {args.model!r} to n = {n}: {e}") from None

    scorer = None
    if scheme.needs_short:
        from tokenweight.train.scorers import FrozenScorer, SelfScorer

        if args.scorer == "frozen":
            scorer = FrozenScorer(cache)
        else:
            bos = tokenizer.bos_token_id
            scorer = SelfScorer(window, stride, bos_token_id=bos, batch_size=args.score_batch_size)

    from tokenweight.train.collate import TrainSequences
    from tokenweight.train.runner import run_training

    dataset = TrainSequences(ds, max_length=n, limit=args.max_train_sequences)
    rope = model.config.get_text_config().rope_parameters
    run_config = {k: v for k, v in vars(args).items() if k not in ("func",)}
    run_config.update(
        command="train",
        scheme=str(scheme),
        n=n,
        window=window,
        stride=stride,
        rope_parameters=dict(rope) if rope else None,
    )
    summary = run_training(
        model=model,
        tokenizer=tokenizer,
        train_dataset=dataset,
        recipe=recipe_from_args(args),
        out_dir=args.out,
        scheme=scheme,
        scorer=scorer,
        chunk_size=args.chunk_size,
        resume=args.resume,
        run_config=run_config,
    )
    print_summary("trained", summary, args.out)
    return 0
