"""A hand-made evaluation document and results dict: base + uniform + dense:0.75 (frozen), 2 seeds.

The numbers are chosen so that means, stds and paired differences are easy to check by hand
(n = 1024, w = 256). Per run (seed 0, seed 1):

- episode exact match at distances [256, 512) (4 episodes) and [512, 768) (6 episodes):
  uniform (.5, .25), (.75, .5); dense (1.0, .5), (.75, .5)
  -> recall d≥256: uniform .35, .60; dense .70, .60
- task token accuracy at 1024 (niah, kv): uniform (.5, .3), (.7, .3); dense (.9, .5), (.8, .4)
  -> tasks@1024: uniform .4, .5; dense .7, .6
- short-context perplexity: uniform 10, 12; dense 11, 13
"""

import json

W, N = 256, 1024
EDGES = [0, 256, 512, 768, 1024]

RUNS = {
    # name: (label scheme scorer seed, em by distance bucket, task acc (niah, kv), short ppl, secs, tok/s)
    "uniform_s0": ("uniform", "none", 0, [0.9, 0.5, 0.25], (0.5, 0.3), 10.0, 100.0, 5000.0),
    "uniform_s1": ("uniform", "none", 1, [0.8, 0.75, 0.5], (0.7, 0.3), 12.0, 120.0, 4000.0),
    "dense_s0": ("dense:0.75", "frozen", 0, [0.9, 1.0, 0.5], (0.9, 0.5), 11.0, 110.0, 4500.0),
    "dense_s1": ("dense:0.75", "frozen", 1, [0.85, 0.75, 0.5], (0.8, 0.4), 13.0, 130.0, 4400.0),
}
BASE = ("base", [0.7, 0.0, 0.0], (0.1, 0.05), 9.0)
EPISODES = [10, 4, 6, 0]


def eval_entry(name, em, task_acc, short_ppl, offset=0.0):
    by_distance = []
    for i, (lo, hi) in enumerate(zip(EDGES, EDGES[1:])):
        eps = EPISODES[i]
        e = em[i] if i < len(em) else None
        by_distance.append(
            {
                "start": lo,
                "end": hi,
                "episodes": eps,
                "tokens": 3 * eps,
                "token_accuracy": None if e is None else min(1.0, e + 0.05),
                "exact_match": e,
                "mean_logprob": None if e is None else -1.0 + e,
            }
        )
    total = sum(EPISODES)
    overall_em = sum(e * n for e, n in zip(em, EPISODES)) / total
    tasks = []
    for task, acc in zip(("niah", "kv"), task_acc):
        for length in (256, 1024):
            a = acc if length == 1024 else min(1.0, acc + 0.3)
            tasks.append(
                {
                    "task": task,
                    "length": length,
                    "depth": None,
                    "samples": 4,
                    "likelihood": {"token_accuracy": a, "candidate_accuracy": a, "logprob": -2.0},
                    "generation": {"score": a / 2, "exact_match": a / 2},
                }
            )
            if task == "niah":
                for depth in (0.0, 1.0):
                    tasks.append(
                        {
                            "task": task,
                            "length": length,
                            "depth": depth,
                            "samples": 2,
                            "likelihood": {"token_accuracy": a, "candidate_accuracy": a, "logprob": -2.0},
                            "generation": {"score": a / 2, "exact_match": a / 2},
                        }
                    )
    by_position = [
        {"start": lo, "end": hi, "ppl": short_ppl + 0.5 * i + offset, "nll": 2.0, "tokens": 1000}
        for i, (lo, hi) in enumerate(zip(EDGES, EDGES[1:]))
    ]
    return {
        "name": name,
        "source": f"runs/{name}",
        "parameters": 1000,
        "perplexity": {
            "overall": {"ppl": short_ppl + 1.0, "nll": 2.5, "tokens": 4000},
            "short": {"ppl": short_ppl, "nll": 2.3, "tokens": 1020, "window": W},
            "by_position": by_position,
        },
        "longppl": {
            "longppl": short_ppl * 2,
            "nll": 3.0,
            "key_tokens": 50,
            "eligible_tokens": 3000,
            "key_share": 50 / 3000,
        },
        "episodes": {
            "overall": {
                "episodes": total,
                "tokens": 3 * total,
                "token_accuracy": overall_em,
                "exact_match": overall_em,
                "mean_logprob": -1.0,
            },
            "by_distance": by_distance,
        },
        "tasks": tasks,
        "seconds": 1.0,
    }


def make_evaluation():
    models = [eval_entry(BASE[0], BASE[1], BASE[2], BASE[3])]
    for name, (_, _, _, em, acc, ppl, _, _) in RUNS.items():
        models.append(eval_entry(name, em, acc, ppl))
    return {
        "schema_version": 1,
        "tokenweight_version": "0.1.0",
        "created": "2026-11-22T00:00:00Z",
        "config": {"window": W, "lengths": [256, 1024], "position_edges": EDGES, "distance_edges": EDGES},
        "data": {"dir": "runs/data", "n": N, "sequences": 4, "tokens": 4096, "episodes": 20, "fingerprint": "ab"},
        "evaluator": {
            "name": "base",
            "window": W,
            "stride": 64,
            "alpha": 2.0,
            "beta": -2.0,
            "key_tokens": 200,
            "eligible_tokens": 3000,
            "key_share": 0.0667,
        },
        "models": models,
        "seconds": 5.0,
    }


def write_log(path, steps=20, base=5.0):
    with open(path, "w") as f:
        for s in range(1, steps + 1):
            f.write(
                json.dumps(
                    {
                        "step": s,
                        "loss": base - 0.1 * s + 0.01,
                        "weighted_loss": base - 0.1 * s,
                        "plain_loss": base - 0.08 * s,
                        "weight_mean": 1.0,
                        "weight_std": 0.2 + 0.01 * s,
                        "weight_max": 3.0,
                        "weight_zero_share": 0.0,
                        "learning_rate": 1e-3,
                        "tokens_per_s": 4000.0,
                        "grad_norm": 1.0,
                        "epoch": 0.1 * s,
                    }
                )
                + "\n"
            )


def make_runs(log_dir):
    out = []
    for name, (scheme, scorer, seed, _, _, _, secs, tps) in RUNS.items():
        log = log_dir / f"{name}.jsonl"
        write_log(log, base=5.0 + seed)
        out.append(
            {
                "name": name,
                "scheme": scheme,
                "scorer": scorer,
                "seed": seed,
                "path": f"runs/{name}",
                "log_path": str(log),
                "train_summary": {
                    "wall_time_s": secs,
                    "tokens_per_s": tps,
                    "steps": 20,
                    "final_loss": 3.0,
                    "final_plain_loss": 3.4,
                },
            }
        )
    return out


def make_results(log_dir):
    from tokenweight.report.schema import assemble_results

    return assemble_results(
        make_evaluation(),
        config={"n": N, "window": W, "steps": 20},
        runs=make_runs(log_dir),
        base={"name": "base", "path": "runs/base"},
        machine={"cpu": "test", "threads": 2},
    )


CORPUS = ["def f(x):\n    return x + 1  # é\n", "class A:\n    pass\n", "  x\n\té  y", "for i in range(10): print(i)\n"]


def make_tokenizer():
    """A byte-level BPE tokenizer (~300 tokens) with <s>, </s>, <pad>: multi-byte characters span tokens."""
    from tests.tiny_models import tiny_bpe

    return tiny_bpe(CORPUS * 5, 300)


def make_llama(vocab_size, seed=0, max_positions=64):
    """A 2-layer random Llama (d = 32)."""
    from tests.tiny_models import tiny_llama

    return tiny_llama(vocab_size, seed, num_attention_heads=2, max_position_embeddings=max_positions)
