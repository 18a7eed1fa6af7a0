"""Training-step time of token-weighted schemes vs plain cross-entropy, same model and batch.

Measures one optimizer step (forward, loss, backward, AdamW) through the token-weighting component
(:class:`tokenweight.token_weighting.TokenWeighting`) for:

- ``uniform``: plain CE on our code path (``WeightedTrainer.compute_loss``, the baseline);
- ``dense:0.75`` frozen, the cached scores as the batch's ``short_nll`` column, three ways into the
  one component: ``dense_frozen`` (``WeightedTrainer.compute_loss``, what ``tokenweight train``
  runs), ``dense_frozen_mixin`` (``token_weighted(Trainer)``: the mixin on a stock HF ``Trainer``)
  and ``dense_frozen_loop`` (``TokenWeighting(...)(model, batch).loss()`` in a plain loop); targets
  at most 1.03x uniform and at most 1.00x HF's own plain-CE step (``hf_loss``);
- ``dense:0.75`` self: the live model re-scores every sequence on short windows without gradient;
  target at most 1.40x uniform at n/w = 4 (the arithmetic floor is about 1.33x: n/w - 1 + ... extra
  forward windows of w tokens cost about a third of a forward+backward step);
- ``hf_loss``: HF's own loss path, ``model(input_ids, labels=...).loss`` (full ``[b, n, V]`` logits).

Variants alternate within one process, so machine noise hits all alike; the median over
``--repeats`` rounds is reported, and on CUDA the peak memory of each variant's step
(``max_memory_allocated`` above what was allocated before it). ``--autocast`` keeps float32
weights and runs the step under ``torch.autocast(--dtype)``, as the trainer's mixed precision
does (``--dtype`` alone converts the model). ``--hidden/--layers/--heads/--intermediate`` override
the preset's shape (``--untied``: separate output layer); the model is built on ``--device``.

    python benchmarks/bench_train_step.py [--device cuda --dtype bfloat16 --preset base]
    python benchmarks/bench_train_step.py --device cuda --dtype bfloat16 --autocast --hidden 2048 \
        --layers 16 --heads 16 --intermediate 5461 --untied --vocab 32000 --n 16384 --window 4096 \
        --batch 1 --gradient-checkpointing --attn sdpa        # ~1B at 16k (benchmarks/gpu_check.sh)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from transformers import Trainer, TrainingArguments

from tokenweight.io_utils import atomic_write_json
from tokenweight.models import init_model
from tokenweight.scoring import short_context_nll
from tokenweight.short_nll import SelfScorer
from tokenweight.token_weighting import TokenWeighting
from tokenweight.train.trainer import WeightedTrainer, token_weighted


def build_model(args):
    """The benchmark's model on ``args.device``: a preset, optionally reshaped, float32 or ``--dtype``."""
    shape = {
        "hidden_size": args.hidden,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.heads,
        "intermediate_size": args.intermediate,
    }
    overrides = {k: v for k, v in shape.items() if v is not None}
    if args.untied:
        overrides["tie_word_embeddings"] = False
    with torch.device(args.device):
        model = init_model(
            args.preset,
            vocab_size=args.vocab,
            max_position_embeddings=args.n,
            attn_implementation=args.attn,
            bos_token_id=1,
            **overrides,
        )
    if not args.autocast:
        model.to(getattr(torch, args.dtype))
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model.train()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=None, help="override the preset's hidden size")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--heads", type=int, default=None)
    ap.add_argument("--intermediate", type=int, default=None)
    ap.add_argument("--untied", action="store_true", help="separate output layer (not tied to the embedding)")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--autocast", action="store_true", help="float32 weights, step under torch.autocast(--dtype)")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "flash_attention_2", "eager"])
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--chunk-size", type=int, default=None, help="loss chunk (default: the trainer's)")
    ap.add_argument(
        "--variants", default="uniform,dense_frozen,dense_frozen_mixin,dense_frozen_loop,dense_self,hf_loss"
    )
    ap.add_argument(
        "--compare-chunk-size",
        type=int,
        default=None,
        help="also run uniform and dense_frozen with this loss chunk (variants NAME@C)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/bench_train_step.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cuda = args.device.startswith("cuda")
    stride = round((1 - args.window / args.n) * args.window)
    model = build_model(args)
    params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(3, args.vocab, (args.batch, args.n), device=args.device)
    ids[:, 0] = 1
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    compute = getattr(torch, args.dtype)
    autocast = torch.autocast(args.device.split(":")[0], dtype=compute, enabled=args.autocast)
    with torch.no_grad(), autocast:  # the frozen scores, as a token-aligned short_nll column
        short = short_context_nll(model, ids, args.window, stride, bos_token_id=1)
    scored = dict(batch, short_nll=torch.nn.functional.pad(short, (1, 0)))
    optim = torch.optim.AdamW(model.parameters(), lr=1e-5)
    tmp = tempfile.mkdtemp()
    targs = TrainingArguments(output_dir=tmp, report_to=[], use_cpu=not cuda, bf16=False)
    chunk = {"chunk_size": args.chunk_size or 1024}  # tokenweight train's --chunk-size default
    trainers = {
        "uniform": WeightedTrainer(model=model, args=targs, scheme="uniform", **chunk),
        "dense_frozen": WeightedTrainer(model=model, args=targs, scheme="dense:0.75", **chunk),
        "dense_frozen_mixin": token_weighted(Trainer)(model=model, args=targs, scheme="dense:0.75", **chunk),
        "dense_self": WeightedTrainer(
            model=model, args=targs, scheme="dense:0.75", short=SelfScorer(args.window, stride, bos_token_id=1), **chunk
        ),
    }
    loop = TokenWeighting("dense:0.75", **chunk)
    chunk_size = chunk["chunk_size"]
    names = args.variants.split(",")
    if args.compare_chunk_size:
        c = args.compare_chunk_size
        trainers[f"uniform@{c}"] = WeightedTrainer(model=model, args=targs, scheme="uniform", chunk_size=c)
        trainers[f"dense_frozen@{c}"] = WeightedTrainer(model=model, args=targs, scheme="dense:0.75", chunk_size=c)
        names += [f"uniform@{c}", f"dense_frozen@{c}"]
    count = torch.tensor(args.batch * (args.n - 1), device=args.device)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def step(name):
        optim.zero_grad(set_to_none=True)
        with autocast:
            if name == "hf_loss":
                loss = model(**batch).loss
            elif name == "dense_frozen_loop":
                loss = loop(model, scored).loss()
            else:
                loss = trainers[name].compute_loss(model, dict(scored), num_items_in_batch=count)
        loss.backward()
        optim.step()

    times = {k: [] for k in names}
    peak = {}
    for name in names:  # warm-up (and the peak memory of one step on CUDA)
        if cuda:
            optim.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        step(name)
        if cuda:
            torch.cuda.synchronize()
            peak[name] = torch.cuda.max_memory_allocated() - base
    for _ in range(args.repeats):
        for name in names:
            sync()
            t = time.perf_counter()
            step(name)
            sync()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    base_name = "uniform" if "uniform" in med else names[0]
    ratio = {k: med[k] / med[base_name] for k in names}
    vs_hf = {k: med[k] / med["hf_loss"] for k in names} if "hf_loss" in med else {}
    device = args.device if not cuda else torch.cuda.get_device_name()
    result = {
        "device": device,
        "torch": torch.__version__,
        "dtype": args.dtype,
        "autocast": args.autocast,
        "attn_implementation": args.attn,
        "gradient_checkpointing": args.gradient_checkpointing,
        "threads": args.threads,
        "preset": args.preset,
        "shape": {k: getattr(model.config, k) for k in ("hidden_size", "num_hidden_layers", "intermediate_size")},
        "tie_word_embeddings": bool(model.config.tie_word_embeddings),
        "params": params,
        "vocab": args.vocab,
        "n": args.n,
        "window": args.window,
        "stride": stride,
        "batch": args.batch,
        "chunk_size": chunk_size,
        "median_step_s": med,
        "ratio_vs_uniform": ratio,
        "ratio_vs_hf_loss": vs_hf,
        "peak_step_memory_bytes": peak or None,
        "times_s": times,
    }
    print(
        f"{args.preset} ({params / 1e6:.2f}M params, vocab {args.vocab}), n={args.n} w={args.window} "
        f"s={stride} batch={args.batch} {args.dtype}{' autocast' if args.autocast else ''} {args.attn}"
        f"{' grad-ckpt' if args.gradient_checkpointing else ''} chunk {chunk_size} on {device}; "
        f"median of {args.repeats}"
    )
    frozen = " (targets <= 1.03x uniform, <= 1.00x hf_loss)"
    targets = {"dense_self": " (target <= 1.40x)"}
    targets.update({k: frozen for k in ("dense_frozen", "dense_frozen_mixin", "dense_frozen_loop")})
    for k in names:
        hf = f"   {vs_hf[k]:.3f}x hf_loss" if vs_hf else ""
        mem = f"   peak {peak[k] / 2**30:.2f} GiB" if k in peak else ""
        print(f"  {k:13s} {med[k] * 1e3:9.1f} ms/step   {ratio[k]:.3f}x {base_name}{hf}{mem}{targets.get(k, '')}")
    atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
