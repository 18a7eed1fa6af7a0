"""Where the weights go: the mean weight of injected episode-value tokens under two frozen score caches.

For the demo's ``dense-frozen`` vs ``dense-frozen-small`` comparison (``tokenweight demo --profile
full``): the weights of a scheme (default ``dense:0.75``) are computed from a long-context model's
NLL (``--model``, e.g. a trained run: the weights training sees mid-run) and each cache's frozen
short-context NLL, on the first ``--sequences`` train rows of the demo's extension data. Printed per
cache: the mean weight (all tokens average 1) of episode-value tokens whose definition is at least
``w`` tokens back (long-range: what the weighting should favour), of those closer than ``w``, and the
mean short-context NLL of both. Not a timing: no ratio, one run.

    python benchmarks/episode_weight_share.py --demo runs/demo-full --model runs/demo-full/runs/uniform-seed0/model
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tokenweight.data import load_prepared
from tokenweight.models import load_model
from tokenweight.scorecache import ScoreCache
from tokenweight.scoring import token_nll
from tokenweight.weighting import WeightingScheme


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", required=True, help="a finished demo folder (data/extend, scores, scores-small)")
    ap.add_argument("--model", required=True, help="the long-context model whose NLL the weights use")
    ap.add_argument("--caches", default="scores,scores-small", help="score cache folders inside --demo")
    ap.add_argument("--scheme", default="dense:0.75")
    ap.add_argument("--window", type=int, default=256, help="w: episodes at least this far apart are long-range")
    ap.add_argument("--sequences", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.demo)
    train = load_prepared(root / "data" / "extend")[0]["train"]
    idx = list(range(min(args.sequences, len(train))))
    rows = train.select(idx)
    ids = torch.tensor(rows["input_ids"])
    with torch.no_grad():
        long = token_nll(load_model(args.model), ids)  # [b, n-1]
    far, near = torch.zeros_like(long, dtype=torch.bool), torch.zeros_like(long, dtype=torch.bool)
    for r, episodes in enumerate(rows["episodes"]):
        for def_start, _def_end, use_start, use_end in episodes:
            (far if use_start - def_start >= args.window else near)[r, use_start - 1 : use_end - 1] = True
    scheme, scored = WeightingScheme.parse(args.scheme), torch.ones_like(long, dtype=torch.bool)
    result = {
        "scheme": args.scheme,
        "sequences": len(idx),
        "far_tokens": int(far.sum()),
        "near_tokens": int(near.sum()),
    }
    for name in args.caches.split(","):
        short = ScoreCache.open(root / name).read(idx)
        w = scheme(long, short, scored)
        result[name] = {
            "mean_weight_far": w[far].mean().item(),
            "mean_weight_near": w[near].mean().item(),
            "short_nll_far": short[far].mean().item(),
            "short_nll_near": short[near].mean().item(),
            "short_nll_all": short.mean().item(),
        }
        r = result[name]
        print(
            f"{name:14s} mean weight: long-range values {r['mean_weight_far']:.3f}, short-range values "
            f"{r['mean_weight_near']:.3f} (all tokens 1); short NLL: long-range {r['short_nll_far']:.3f}, "
            f"short-range {r['short_nll_near']:.3f}, all {r['short_nll_all']:.3f}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
