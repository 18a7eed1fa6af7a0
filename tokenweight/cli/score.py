"""Cache the short-context NLL of every training sequence under a frozen scorer (stage ``score``).

The cache (docs/SCORING.md) is read by `tokenweight train --scorer frozen --scores DIR`. Interrupt it
at any time and rerun the same command: finished shards are kept. Several processes:
`torchrun --nproc_per_node K -m tokenweight.cli.main score ...` (or `accelerate launch`); every rank
scores shards rank, rank+K, ...

Any Hugging Face dataset of token ids instead (your own, shuffled, filtered or packed: rows of any
lengths), with the scores as a token-aligned column (entry t: NLL of token t; entry 0 is 0):
`tokenweight score --dataset DIR_OR_HUB --column short_nll --scorer MODEL --window W --out DIR`
writes DIR/dataset (load it with datasets.load_from_disk); rerun the same command to continue.
"""

from __future__ import annotations

from tokenweight.stages.score import ScoreConfig as CONFIG


def run(config: CONFIG) -> int:
    from tokenweight.outputs import launch_rank
    from tokenweight.stages.score import score

    r = score(config)
    if r.world_size > 1 and launch_rank() != 0:
        return 0
    procs = f" on {r.world_size} processes" if r.world_size > 1 else ""
    if r.dataset is not None:
        return _dataset_summary(r, procs)
    if r.computed:
        print(
            f"scored {r.computed} sequences ({r.tokens} tokens) in {r.seconds:.1f} s{procs}: "
            f"{r.tokens_per_s:.0f} tokens/s"
        )
    m = r.meta
    print(
        f"score cache {r.out}: {r.sequences} sequences of split {m['split']!r}, window {m['window']}, "
        f"stride {m['stride']}, {m['dtype']}; {r.computed} computed now, {r.cached} already cached"
    )
    if m.get("scorer_tokenizer"):
        k = r.decoded_per_token
        per_token = f" ({k} of {r.computed} by decoding token by token)" if k else ""
        print(f"the scorer's tokenizer differs: its NLL was moved onto the data's tokens by characters{per_token}")
    if r.verified:
        print(
            f"verified {r.verified} sequences against a direct recomputation: "
            f"max |difference| = {r.max_difference:.3g} nats"
        )
        if r.verify_failed:
            print(f"tokenweight: verification failed: difference above {r.tolerance} nats", flush=True)
            return 1
    return 0


def _dataset_summary(r, procs: str) -> int:
    if r.computed:
        print(
            f"scored {r.computed} rows ({r.tokens} tokens) in {r.seconds:.1f} s{procs}: {r.tokens_per_s:.0f} tokens/s"
        )
    m = r.meta
    what = f"{r.column} for {r.sequences} rows ({r.dataset_tokens} tokens)"
    head = f"wrote {what} to {r.dataset}" if r.joined else f"{what} already in {r.dataset}, nothing to do"
    print(
        f"{head}: window {m['window']}, stride {m['stride']}, {m['dtype']}; "
        f"{r.computed} rows computed now, {r.cached} already cached"
    )
    return 0
