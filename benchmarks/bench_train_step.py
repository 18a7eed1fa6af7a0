"""Training-step time of token-weighted schemes vs plain cross-entropy, same model and batch.

Measures one optimizer step (forward, loss, backward, AdamW) through ``WeightedTrainer.compute_loss``
for:

- ``uniform``: plain CE on our code path (the baseline);
- ``dense:0.75`` frozen: weights from cached short-context NLL (a dict lookup per step); target
  at most 1.03x uniform;
- ``dense:0.75`` self: the live model re-scores every sequence on short windows without gradient;
  target at most 1.40x uniform at n/w = 4 (the arithmetic floor is about 1.33x: n/w - 1 + ... extra
  forward windows of w tokens cost about a third of a forward+backward step);
- HF's own loss (``model(labels=...)``, full logits), for reference.

Variants alternate within one process, so machine noise hits all alike; the median over
``--repeats`` rounds is reported.

    python benchmarks/bench_train_step.py [--device cuda --dtype bfloat16 --preset base]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from transformers import TrainingArguments

from tokenweight.io_utils import atomic_write_json
from tokenweight.models import init_model
from tokenweight.scoring import short_context_nll
from tokenweight.train.scorers import FrozenScorer, SelfScorer
from tokenweight.train.trainer import WeightedTrainer


class MemoryCache:
    """A score cache held in memory: ``read(indices) -> [len, n-1]`` (what ScoreCache.read returns)."""

    def __init__(self, table: torch.Tensor):
        self.table = table

    def read(self, indices):
        return self.table[torch.as_tensor(indices, dtype=torch.long)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/bench_train_step.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    stride = round((1 - args.window / args.n) * args.window)
    model = init_model(args.preset, vocab_size=args.vocab, max_position_embeddings=args.n)
    model.to(args.device, getattr(torch, args.dtype)).train()
    params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(3, args.vocab, (args.batch, args.n), device=args.device)
    ids[:, 0] = 1
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": ids.clone(),
        "index": torch.arange(args.batch, device=args.device),
    }
    table = short_context_nll(model, ids, args.window, stride, bos_token_id=1).cpu()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-5)
    tmp = tempfile.mkdtemp()
    targs = TrainingArguments(
        output_dir=tmp, report_to=[], remove_unused_columns=False, use_cpu=args.device == "cpu", bf16=False
    )
    trainers = {
        "uniform": WeightedTrainer(model=model, args=targs, scheme="uniform"),
        "dense_frozen": WeightedTrainer(
            model=model, args=targs, scheme="dense:0.75", scorer=FrozenScorer(MemoryCache(table))
        ),
        "dense_self": WeightedTrainer(
            model=model, args=targs, scheme="dense:0.75", scorer=SelfScorer(args.window, stride, bos_token_id=1)
        ),
    }
    count = torch.tensor(args.batch * (args.n - 1), device=args.device)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def step(name):
        optim.zero_grad(set_to_none=True)
        if name == "hf_loss":
            loss = model(**{k: v for k, v in batch.items() if k != "index"}).loss
        else:
            loss = trainers[name].compute_loss(model, dict(batch), num_items_in_batch=count)
        loss.backward()
        optim.step()

    names = ["uniform", "dense_frozen", "dense_self", "hf_loss"]
    times = {k: [] for k in names}
    for name in names:  # warm-up
        step(name)
    for _ in range(args.repeats):
        for name in names:
            sync()
            t = time.perf_counter()
            step(name)
            sync()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = {k: med[k] / med["uniform"] for k in names}
    device = args.device if args.device == "cpu" else torch.cuda.get_device_name()
    result = {
        "device": device,
        "dtype": args.dtype,
        "threads": args.threads,
        "preset": args.preset,
        "params": params,
        "vocab": args.vocab,
        "n": args.n,
        "window": args.window,
        "stride": stride,
        "batch": args.batch,
        "median_step_s": med,
        "ratio_vs_uniform": ratio,
        "times_s": times,
    }
    print(
        f"{args.preset} ({params / 1e6:.2f}M params, vocab {args.vocab}), n={args.n} w={args.window} "
        f"s={stride} batch={args.batch} {args.dtype} on {device}; median of {args.repeats}"
    )
    for k in names:
        target = {"dense_frozen": " (target <= 1.03x)", "dense_self": " (target <= 1.40x)"}.get(k, "")
        print(f"  {k:13s} {med[k] * 1e3:9.1f} ms/step   {ratio[k]:.3f}x uniform{target}")
    atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
