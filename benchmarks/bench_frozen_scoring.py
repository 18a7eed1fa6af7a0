"""End-to-end frozen scoring throughput: a scorer 4x smaller than the trained model vs the model itself.

The paper found that a much smaller scorer with the same tokenizer loses little; this measures what
it saves. Both scorers run through ``tokenweight.scorecache.compute_scores`` (the code of
``tokenweight score``: data loading, batching, sharded atomic writes), on the same prepared data,
alternating, best of ``--repeats``. Models are from-scratch presets saved to a temporary folder
(weights do not change the cost); the data is prepared from the embedded stdlib corpus.

    python benchmarks/bench_frozen_scoring.py [--device cuda]
"""

from __future__ import annotations

import argparse

from scoring_setup import add_scoring_args, prepare_stdlib, preset_model

from tokenweight.io_utils import atomic_write_json
from tokenweight.models import PRESETS
from tokenweight.scorecache import compute_scores


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trained", default="base", help=f"preset of the trained model ({', '.join(PRESETS)})")
    ap.add_argument("--scorer", default="small", help="preset of the smaller scorer")
    add_scoring_args(ap, tokens=120_000, repeats=2, threads=2, out="benchmarks/results/bench_frozen_scoring.json")
    args = ap.parse_args()
    tmp, data, tok = prepare_stdlib(args)
    models, params = {}, {}
    for role, preset in (("trained", args.trained), ("scorer", args.scorer)):
        m, params[role] = preset_model(preset, len(tok), args.n)
        models[role] = tmp / role
        m.save_pretrained(models[role])
        tok.save_pretrained(models[role])
    best = {}
    for r in range(args.repeats):
        for role in ("trained", "scorer"):
            res = compute_scores(tmp / f"cache-{role}-{r}", data, models[role], window=args.window, device=args.device)
            best[role] = max(best.get(role, 0.0), res["tokens_per_s"])
    result = {
        "device": args.device,
        "threads": args.threads,
        "n": args.n,
        "window": args.window,
        "presets": {"trained": args.trained, "scorer": args.scorer},
        "params": params,
        "param_ratio": params["trained"] / params["scorer"],
        "tokens_per_s": best,
        "speedup": best["scorer"] / best["trained"],
    }
    print(f"trained model {args.trained} ({params['trained'] / 1e6:.2f}M) as scorer: {best['trained']:9.0f} tok/s")
    print(
        f"smaller scorer {args.scorer} ({params['scorer'] / 1e6:.2f}M, "
        f"{result['param_ratio']:.1f}x fewer parameters): {best['scorer']:9.0f} tok/s"
    )
    print(f"speedup of the smaller scorer: {result['speedup']:.2f}x")
    atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
