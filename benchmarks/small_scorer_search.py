"""Search a small frozen scorer that can copy: the full profile's recipe for the smaller scorer
(copy warm-up, pretraining with copy rows) on a candidate shape, then the demo's gate.

Claim 4 of the paper is about a *capable* smaller scorer; ``mini`` (the full profile's) is 4.5x
smaller than the base model but recalls only about half of the episode digits at the gate
(docs/TRAINING.md). At vocab 4096 the tied embedding matrix is most of a model this size, so the
4x budget (<= 230,048 parameters against the base model's 920,192) leaves width ~44 for 2 layers:
this script measures which shape and warm-up length copy best within it. Prints one JSON line per
candidate (parameters, ratio to the base model, the gate's per-digit accuracy and exact match, seconds).

    .venv/bin/python benchmarks/small_scorer_search.py --out /tmp/ss \\
        --candidate w44h2=44,2,2,88 --candidate mini=40,2,1,108 [--copy-steps 2000]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="work folder (one demo folder per candidate)")
    ap.add_argument(
        "--candidate", action="append", required=True, metavar="NAME=D,LAYERS,HEADS,FFN", help="a tied Llama shape"
    )
    ap.add_argument("--copy-steps", type=int, default=None, help="the warm-up's steps (default: the profile's)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    import torch

    import tokenweight.models as M
    from tokenweight.demo.experiment import Demo
    from tokenweight.demo.profiles import PROFILES
    from tokenweight.stages.pretrain import pretrain

    if args.threads:
        torch.set_num_threads(args.threads)
    full = PROFILES["full"]
    base = M.count_parameters(M.init_model(full.preset, full.vocab_size, full.window))
    for spec in args.candidate:
        name, _, shape = spec.partition("=")
        d, layers, heads, ffn = (int(x) for x in shape.split(","))
        M.PRESETS[name] = M.Preset(d, layers, heads, heads, ffn, True)
        over = {} if args.copy_steps is None else {"copy_steps": args.copy_steps}
        profile = replace(full, small_scorer=name, **over)
        demo = Demo(Path(args.out) / f"{name}-{profile.copy_steps}", profile, runtime={"device": "cpu"})
        t = time.perf_counter()
        demo.prepare()
        for config in (demo.warmup_config(small=True), demo.pretrain_config(small=True)):
            if config is not None:
                pretrain(config)
        gate = demo.gate(small=True)
        params = M.count_parameters(M.init_model(name, profile.vocab_size, profile.window))
        line = {
            "candidate": name,
            "shape": {"d": d, "layers": layers, "heads": heads, "ffn": ffn},
            "copy_steps": profile.copy_steps,
            "parameters": params,
            "ratio": round(base / params, 3),
            "gate_token_accuracy": gate["token_accuracy"],
            "gate_exact_match": gate["exact_match"],
            "seconds": round(time.perf_counter() - t),
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
