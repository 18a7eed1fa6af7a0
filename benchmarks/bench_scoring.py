"""Throughput of ``short_context_nll`` vs a plain one-window-at-a-time loop.

The baseline is what one writes first: for every sequence, for every window, a separate forward
pass of the whole model with full logits, keeping the scored positions. ``short_context_nll``
stacks all windows of the batch into bounded batches and projects only the kept positions through
the LM head. Both produce the same numbers (checked here), and both run in the same process,
alternating, so that the machine's noise hits both alike; the best of ``--repeats`` is reported.

    python benchmarks/bench_scoring.py [--device cuda] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from tokenweight import short_context_nll, window_starts
from tokenweight.io_utils import atomic_write_json


def baseline(model, ids, window, stride):
    """One window at a time, full logits, no batching: [b, n-1]."""
    b, n = ids.shape
    out = torch.zeros(b, n - 1, device=ids.device)
    with torch.no_grad():
        for r in range(b):
            prev_end = 0
            for k, start in enumerate(window_starts(n, window, stride)):
                win = ids[r, start : start + window].clone()
                if start > 0:
                    win[0] = ids[r, 0]  # BOS replacement
                logits = model(win[None]).logits[0].float()
                nll = F.cross_entropy(logits[:-1], win[1:], reduction="none")
                first = 1 if k == 0 else prev_end - start
                out[r, start + first - 1 : start + window - 1] = nll[first - 1 :]
                prev_end = start + window
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--stride", type=int, default=192)
    ap.add_argument("--batch", type=int, default=4, help="sequences per call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "flash_attention_2", "eager"])
    ap.add_argument("--out", default="benchmarks/results/bench_scoring.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 8 // 3,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=args.n,
        tie_word_embeddings=True,
        bos_token_id=1,
        attn_implementation=args.attn,
    )
    dtype = getattr(torch, args.dtype)
    with torch.device(args.device):  # built where it runs (a 1B model initialises in seconds on a GPU)
        model = LlamaForCausalLM(cfg).to(dtype).eval()
    params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(3, cfg.vocab_size, (args.batch, args.n), device=args.device)
    ids[:, 0] = 1

    def timed(fn):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        res = fn()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t, res

    fast = lambda: short_context_nll(model, ids, args.window, args.stride, bos_token_id=1)  # noqa: E731
    slow = lambda: baseline(model, ids, args.window, args.stride)  # noqa: E731
    fast(), slow()  # warm-up
    t_fast, t_slow = [], []
    for _ in range(args.repeats):
        dt, a = timed(fast)
        t_fast.append(dt)
        dt, b = timed(slow)
        t_slow.append(dt)
    diff = (a - b).abs().max().item()
    tokens = args.batch * args.n
    result = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "dtype": args.dtype,
        "attn_implementation": args.attn,
        "params": params,
        "n": args.n,
        "window": args.window,
        "stride": args.stride,
        "batch": args.batch,
        "short_context_nll_tok_s": tokens / min(t_fast),
        "one_window_loop_tok_s": tokens / min(t_slow),
        "speedup": min(t_slow) / min(t_fast),
        "max_abs_diff": diff,
        "times_fast_s": t_fast,
        "times_loop_s": t_slow,
    }
    print(
        f"model {params / 1e6:.2f}M params, vocab {cfg.vocab_size}, n={args.n} w={args.window} "
        f"s={args.stride} batch={args.batch} {args.dtype} on {result['device']}"
    )
    print(f"short_context_nll : {result['short_context_nll_tok_s']:10.0f} tok/s")
    print(f"one-window loop   : {result['one_window_loop_tok_s']:10.0f} tok/s")
    print(f"speedup           : {result['speedup']:.2f}x   (target >= 1.5x)   max |diff| = {diff:.2e}")
    atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
