"""``tokenweight score``: short-context NLL of every training sequence under a frozen scorer.

Computed once into a sharded, fingerprinted cache that ``tokenweight train --scores DIR`` reads
(``tokenweight.scorecache``). Interrupt it at any time and rerun the same command: finished shards
are kept. Multi-process: ``torchrun --nproc_per_node K -m tokenweight.cli.main score ...`` (or
``accelerate launch``); every rank scores shards ``rank, rank+K, ...``.
"""

from __future__ import annotations

import os

from tokenweight.errors import UsageError

HELP = "cache the short-context NLL of every training sequence under a frozen scorer (resumable, multi-process)"

#: largest |cache - recomputation| accepted by --verify in float32 (nats); batching changes rounding
VERIFY_TOL_FP32 = 1e-3


def add_arguments(parser) -> None:
    parser.add_argument("--data", default=None, help="prepared data folder (from `tokenweight prepare`)")
    parser.add_argument(
        "--scorer", default=None, help="frozen scorer: model folder or hub id, with the data's tokenizer"
    )
    parser.add_argument("--out", default=None, help="score cache folder to create or resume")
    parser.add_argument("--window", type=int, default=256, help="short context w in tokens (default 256)")
    parser.add_argument(
        "--stride",
        type=int,
        default=None,
        help="window stride s, 1 <= s < w (default (1 - w/n)·w, as METHOD.md recommends)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="windows per forward pass (default: about 16k tokens per pass)"
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16", "float16"),
        help="scorer compute dtype (scores are stored as float32)",
    )
    parser.add_argument("--split", default="train", help="split of the prepared data to score (default train)")
    parser.add_argument("--device", default=None, choices=("cpu", "cuda"), help="default: cuda when available")
    parser.add_argument(
        "--force",
        action="store_true",
        default=False,
        help="recompute a cache made with other options instead of refusing it",
    )
    parser.add_argument("--max-sequences", type=int, default=None, help="score only the first N sequences")
    parser.add_argument(
        "--shard-size",
        type=int,
        default=None,
        help="sequences per shard file, the unit of resuming (default: ~256k tokens)",
    )
    parser.add_argument(
        "--verify",
        type=int,
        default=0,
        metavar="K",
        help="afterwards, recompute K sequences directly and report the largest difference",
    )


def _check(args) -> None:
    for flag in ("data", "scorer", "out"):
        if not getattr(args, flag):
            raise UsageError(f"--{flag} is required: tokenweight score --data DIR --scorer MODEL --out DIR")
    if args.window < 2:
        raise UsageError(f"--window must be >= 2, got {args.window}")
    if args.stride is not None and not 1 <= args.stride < args.window:
        raise UsageError(f"--stride must be in [1, window) = [1, {args.window}), got {args.stride}")
    for flag in ("batch_size", "max_sequences", "shard_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.verify < 0:
        raise UsageError(f"--verify must be >= 0, got {args.verify}")


def _verify(args, cache) -> int:
    from tokenweight.data import load_prepared
    from tokenweight.models import load_model
    from tokenweight.scorecache import verify

    k = min(args.verify, cache.n_sequences)
    indices = sorted({round(j * (cache.n_sequences - 1) / max(k - 1, 1)) for j in range(k)})
    rows = load_prepared(args.data)[0][args.split].select(indices)["input_ids"]
    model = load_model(args.scorer, dtype=args.dtype, device=args.device)
    worst = verify(cache, model, rows, indices, batch_size=args.batch_size)
    print(f"verified {len(indices)} sequences against a direct recomputation: max |difference| = {worst:.3g} nats")
    if args.dtype == "float32" and worst > VERIFY_TOL_FP32:
        print(f"tokenweight: verification failed: difference above {VERIFY_TOL_FP32} nats", flush=True)
        return 1
    return 0


def _quiet_library_bars() -> None:
    """No transformers/datasets loading bars in logs (stderr not a terminal); ours stay (tqdm disable=None)."""
    import sys

    if not sys.stderr.isatty():
        import datasets
        import transformers

        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()


def run(args) -> int:
    _check(args)
    _quiet_library_bars()
    from tokenweight.scorecache import compute_scores

    s = compute_scores(
        args.out,
        args.data,
        args.scorer,
        window=args.window,
        stride=args.stride,
        split=args.split,
        batch_size=args.batch_size,
        dtype=args.dtype,
        device=args.device,
        shard_size=args.shard_size,
        max_sequences=args.max_sequences,
        force=args.force,
    )
    # torchrun/accelerate workers end through tokenweight.cli.main.entry (os._exit after flushing)
    return _report(args, s)


def _report(args, s: dict) -> int:
    """Rank 0: throughput, the one-line summary, and ``--verify``; other ranks: nothing."""
    from tokenweight.scorecache import ScoreCache

    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    cache = ScoreCache.open(args.out)
    m = cache.meta
    procs = f" on {s['world_size']} processes" if s["world_size"] > 1 else ""
    if s["computed"]:
        print(
            f"scored {s['computed']} sequences ({s['tokens']} tokens) in {s['seconds']:.1f} s{procs}: "
            f"{s['tokens_per_s']:.0f} tokens/s"
        )
    print(
        f"score cache {args.out}: {s['sequences']} sequences of split {m['split']!r}, window {m['window']}, "
        f"stride {m['stride']}, {m['dtype']}; {s['computed']} computed now, {s['cached']} already cached"
    )
    return _verify(args, cache) if args.verify else 0
