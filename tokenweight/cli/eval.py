"""``tokenweight eval``: evaluate one or more models side by side (same inputs for all).

Writes ``OUT/results.json`` (docs/EVALUATION.md), ``OUT/table.txt`` and PNG plots, and prints the
table. Everything is computed by :func:`tokenweight.evaluate.runner.evaluate_models`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tokenweight.errors import UsageError

HELP = "evaluate models side by side: perplexity by position, LongPPL, episode recall, synthetic long-context tasks"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "models", nargs="*", default=[], metavar="MODEL", help="model folders (HF format), compared side by side"
    )
    p.add_argument("--names", default=None, help="comma-separated display names, one per MODEL (default: folder names)")
    p.add_argument(
        "--data",
        default=None,
        metavar="PREPARED_DIR",
        help="prepared folder: its validation split gives perplexity by position, LongPPL and episode recall",
    )
    p.add_argument("--lengths", default="256,512,1024", help="task lengths in tokens, comma-separated")
    p.add_argument(
        "--tasks", default="all", help="comma-separated task names, 'all', or 'none' ('tokenweight tasks' lists them)"
    )
    p.add_argument(
        "--num-samples",
        type=int,
        default=2,
        help="samples per task, length and needle depth (tasks without a needle: this x the number of depths)",
    )
    p.add_argument(
        "--window", type=int, default=None, help="native window w (default: the data manifest's window, else n/4)"
    )
    p.add_argument(
        "--evaluator",
        default=None,
        metavar="MODEL",
        help="LongPPL evaluator: a name from --names or a model folder (default: the first model)",
    )
    p.add_argument(
        "--longppl-stride", type=int, default=None, help="stride of the evaluator's short windows (default w/4)"
    )
    p.add_argument("--alpha", type=float, default=2.0, help="LongPPL key-token threshold on LSD")
    p.add_argument("--beta", type=float, default=-2.0, help="LongPPL key-token threshold on LCL")
    p.add_argument(
        "--buckets",
        default=None,
        help="bucket edges in tokens for perplexity by position and recall by distance, e.g. 0,256,512,1024 "
        "(default: multiples of w up to n)",
    )
    p.add_argument(
        "--depths", default=None, help="needle depths in [0, 1], comma-separated (default: 0,0.25,0.5,0.75,1)"
    )
    p.add_argument("--out", default="runs/eval", metavar="DIR", help="output folder")
    p.add_argument("--batch-size", type=int, default=4, help="sequences or samples per forward pass")
    p.add_argument("--max-sequences", type=int, default=32, help="held-out sequences used (0: all)")
    p.add_argument(
        "--generation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also score tasks by batched greedy generation",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="generation budget in tokens; 0: RULER's per task (128 for NIAH); default: the longest answer "
        "x 1.5 + 8, at most RULER's",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the task samples")
    p.add_argument(
        "--no-cache",
        action="store_true",
        default=False,
        help="evaluate every model again instead of reusing OUT/.cache entries of an earlier run",
    )


def _list(value, cast, flag: str) -> list:
    """A comma-separated flag (or a YAML list) as a list of ``cast``; UsageError when malformed."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [x for x in str(value).split(",") if x.strip()]
    try:
        return [cast(str(x).strip()) for x in items]
    except ValueError:
        raise UsageError(
            f"{flag} {value!r} is not a comma-separated list of {cast.__name__}s: e.g. {flag} 256,512"
        ) from None


def _names(args) -> list[str]:
    if args.names is None:
        names = [Path(m).name or str(m) for m in args.models]
        out = []
        for i, n in enumerate(names):  # make folder names unique
            out.append(n if names.count(n) == 1 else f"{n}#{i + 1}")
        return out
    names = _list(args.names, str, "--names")
    if len(names) != len(args.models):
        raise UsageError(f"--names has {len(names)} names for {len(args.models)} models: give one name per MODEL")
    if len(set(names)) != len(names):
        raise UsageError(f"--names {args.names!r} has duplicates: give every model its own name")
    return names


def build_config(args, names: list[str]):
    from tokenweight.evaluate.runner import EvalConfig

    positive = {"--num-samples": args.num_samples, "--batch-size": args.batch_size}
    for flag, v in positive.items():
        if v < 1:
            raise UsageError(f"{flag} must be >= 1, got {v}")
    if args.window is not None and args.window < 2:
        raise UsageError(f"--window must be >= 2, got {args.window}")
    if args.longppl_stride is not None and not (
        1 <= args.longppl_stride < (args.window if args.window is not None else float("inf"))
    ):
        raise UsageError(f"--longppl-stride must be in [1, window), got {args.longppl_stride}")
    if args.max_new_tokens is not None and args.max_new_tokens < 0:
        raise UsageError(f"--max-new-tokens must be >= 0 (0: RULER's budgets), got {args.max_new_tokens}")
    if args.max_sequences < 0:
        raise UsageError(f"--max-sequences must be >= 0 (0: all), got {args.max_sequences}")
    lengths = _list(args.lengths, int, "--lengths")
    if not lengths or min(lengths) < 2:
        raise UsageError(f"--lengths {args.lengths!r} must hold lengths >= 2 tokens")
    tasks_arg = args.tasks if isinstance(args.tasks, (list, tuple)) else str(args.tasks).strip()
    tasks = None if tasks_arg == "all" else ([] if tasks_arg in ("none", "") else _list(tasks_arg, str, "--tasks"))
    buckets = _list(args.buckets, int, "--buckets") or None
    if buckets is not None and (
        len(buckets) < 2 or buckets[0] < 0 or any(b <= a for a, b in zip(buckets, buckets[1:]))
    ):
        raise UsageError(f"--buckets {args.buckets!r} must be at least 2 increasing edges >= 0, e.g. 0,256,512,1024")
    depths = _list(args.depths, float, "--depths") or None
    if depths is not None and any(not 0 <= d <= 1 for d in depths):
        raise UsageError(f"--depths {args.depths!r} must lie in [0, 1], e.g. 0,0.5,1")
    evaluator = args.evaluator
    if evaluator is not None and evaluator not in names and not Path(evaluator).exists():
        raise UsageError(
            f"--evaluator {evaluator!r} is neither a model name ({', '.join(names)}) nor an existing folder"
        )
    return EvalConfig(
        lengths=lengths,
        tasks=tasks,
        num_samples=args.num_samples,
        window=args.window,
        longppl_stride=args.longppl_stride,
        alpha=args.alpha,
        beta=args.beta,
        evaluator=evaluator,
        position_edges=buckets,
        distance_edges=buckets,
        batch_size=args.batch_size,
        max_sequences=args.max_sequences or None,
        generation=args.generation,
        max_new_tokens=args.max_new_tokens,
        depths=depths,
        seed=args.seed,
    )


def run(args) -> int:
    if not args.models:
        raise UsageError(
            "no MODEL given: pass one or more model folders, e.g. tokenweight eval runs/base runs/weighted"
        )
    for m in args.models:
        if not Path(m).exists():
            raise UsageError(f"model path {m!r} does not exist: pass a folder saved with save_pretrained")
    if args.data is not None and not Path(args.data).is_dir():
        raise UsageError(f"--data {args.data!r} is not a folder: pass a folder written by 'tokenweight prepare'")
    names = _names(args)
    config = build_config(args, names)
    try:
        config.validate()
    except ValueError as e:
        raise UsageError(f"{e}: fix the flag") from None

    from tokenweight.evaluate.runner import evaluate_models, write_outputs

    # per-model entries are cached under OUT/.cache: an interrupted run resumes where it stopped
    results = evaluate_models(
        dict(zip(names, args.models)),
        data_dir=args.data,
        config=config,
        cache_dir=None if args.no_cache else Path(args.out) / ".cache",
    )
    written = write_outputs(results, args.out)
    print(written["text"])
    print(f"\nwrote {written['json']}, {written['table']} and {len(written['plots'])} plot(s) to {args.out}")
    return 0
