"""The cost of aligning a scorer with another tokenizer, against same-tokenizer frozen scoring.

On the same prepared data (the embedded stdlib corpus, its 4096-token BPE; n 1024, w 256), three
variants score the same chunks of sequences, interleaved chunk by chunk (so that a loaded machine
slows all of them alike), best of ``--repeats`` per chunk:

- ``plain``: ``short_context_nll`` of a scorer with the data's tokenizer (what ``tokenweight
  score`` runs for it);
- ``always``: ``aligned_short_nll`` of the same scorer and tokenizer (``--align always``: the same
  numbers, checked bitwise here; the extra time is the alignment itself: decoding, re-encoding,
  spans, windows, transfer);
- ``other``: ``aligned_short_nll`` of a scorer of the same preset with a byte-level BPE of another
  vocabulary size trained on the same text (the aligned path as used; its model also differs: the
  output layer has ``--other-vocab`` rows and it runs on its own number of tokens).

Also the alignment alone (no model). Wall time and process CPU time are both recorded: on a
machine shared with other work the CPU-time ratios are the stable ones. Models are from-scratch
presets (weights do not change the cost).

    python benchmarks/bench_aligned_scoring.py [--device cuda] [--other-vocab 8192]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from scoring_setup import add_scoring_args, prepare_stdlib, preset_model

from tokenweight.alignment import aligned_short_nll, aligned_windows, encode_spans, split_shared, token_spans, transfer
from tokenweight.data import load_prepared
from tokenweight.data.tokenizer import train_tokenizer
from tokenweight.io_utils import atomic_write_json
from tokenweight.models import PRESETS
from tokenweight.scoring import short_context_nll
from tokenweight.windows import default_stride, plan_windows, window_starts, windows_per_pass


def _pad(rows: list[list[int]], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.zeros(len(rows), n, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return ids, (torch.arange(n)[None] < torch.tensor([len(r) for r in rows])[:, None]).long()


def _alignment_only(rows, data_tok, scorer_tok, window: int, stride: int) -> None:
    """What aligned_short_nll does besides running the model: spans, encoding, windows, a transfer."""
    texts = token_spans(data_tok, rows)
    for row, tt, (_, spans) in zip(rows, texts, encode_spans(scorer_tok, [t.text for t in texts])):
        dsp, ssp = split_shared(tt.spans), split_shared(torch.cat([torch.zeros(1, 2, dtype=torch.long), spans]))
        plan = sorted((w[1], w[2], w[3]) for g in plan_windows([len(row)], window, stride, False).values() for w in g)
        wins = aligned_windows(dsp, ssp, plan, True)
        targets = torch.cat([torch.arange(p, q) for _, p, q in wins])
        transfer(torch.zeros(len(targets)), ssp[targets], dsp)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scorer", default="small", help=f"preset of the scorers ({', '.join(PRESETS)})")
    ap.add_argument("--other-vocab", type=int, default=8192, help="vocabulary of the other tokenizer")
    add_scoring_args(ap, tokens=60_000, repeats=3, threads=1, out="benchmarks/results/bench_aligned_scoring.json")
    args = ap.parse_args()
    _, data, tok = prepare_stdlib(args)
    rows = [list(r) for r in load_prepared(data)[0]["train"]["input_ids"]]
    texts = tok.batch_decode(rows, skip_special_tokens=True)
    other = train_tokenizer(texts, args.other_vocab)
    data_tokens = sum(len(r) for r in rows)
    scorer_tokens = sum(len(x) + 1 for x in other(texts, add_special_tokens=False)["input_ids"])
    models, params = {}, {}
    for name, t in (("same", tok), ("other", other)):
        models[name], params[name] = preset_model(args.scorer, len(t), 4 * args.n)
        models[name].to(args.device).eval()
    stride = default_stride(args.n, args.window)
    # sequences per call as tokenweight score groups them (about four passes' worth of windows)
    per_call = max(1, math.ceil(4 * windows_per_pass(args.window) / len(window_starts(args.n, args.window, stride))))
    variants = {
        "plain": lambda c: short_context_nll(
            models["same"], *_pad(c, args.n)[:1], args.window, stride, bos_token_id=tok.bos_token_id
        ),
        "always": lambda c: aligned_short_nll(models["same"], c, tok, tok, args.window, stride, n=args.n).nll,
        "other": lambda c: aligned_short_nll(models["other"], c, tok, other, args.window, stride, n=args.n).nll,
        "alignment only": lambda c: _alignment_only(c, tok, other, args.window, stride),
    }
    seconds = dict.fromkeys(variants, 0.0)
    cpu_seconds = dict.fromkeys(variants, 0.0)
    for a in range(0, len(rows), per_call):
        chunk = rows[a : a + per_call]
        best, best_cpu = dict.fromkeys(variants, math.inf), dict.fromkeys(variants, math.inf)
        outs = {}
        for rep in range(args.repeats):
            order = list(variants) if rep % 2 == 0 else list(variants)[::-1]  # no variant always runs first
            for name in order:
                t0, c0 = time.perf_counter(), time.process_time()
                outs[name] = variants[name](chunk)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                best[name] = min(best[name], time.perf_counter() - t0)
                best_cpu[name] = min(best_cpu[name], time.process_time() - c0)
        exact = [i for i, t in enumerate(token_spans(tok, chunk)) if t.exact]
        assert torch.equal(outs["plain"].cpu()[exact], outs["always"][exact]), "aligned path != plain path"
        for name in variants:
            seconds[name] += best[name]
            cpu_seconds[name] += best_cpu[name]
    tps = {k: data_tokens / v for k, v in seconds.items()}
    result = {
        "device": args.device,
        "threads": args.threads,
        "n": args.n,
        "window": args.window,
        "preset": args.scorer,
        "params": params,
        "data_vocab": len(tok),
        "other_vocab": len(other),
        "sequences": len(rows),
        "sequences_per_call": per_call,
        "data_tokens": data_tokens,
        "scorer_tokens_per_data_token": scorer_tokens / data_tokens,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "data_tokens_per_s": tps,
        "time_ratio_always_vs_plain": seconds["always"] / seconds["plain"],
        "time_ratio_other_vs_plain": seconds["other"] / seconds["plain"],
        "alignment_share_of_plain": seconds["alignment only"] / seconds["plain"],
        "cpu_ratio_always_vs_plain": cpu_seconds["always"] / cpu_seconds["plain"],
        "cpu_ratio_other_vs_plain": cpu_seconds["other"] / cpu_seconds["plain"],
        "cpu_alignment_share_of_plain": cpu_seconds["alignment only"] / cpu_seconds["plain"],
    }
    print(f"plain (same tokenizer, short_context_nll): {tps['plain']:9.0f} data tok/s")
    print(
        f"aligned, same tokenizer (--align always):  {tps['always']:9.0f} data tok/s "
        f"= {result['time_ratio_always_vs_plain']:.3f}x the time (bitwise equal scores)"
    )
    print(
        f"aligned, other tokenizer (vocab {len(other)}, {result['scorer_tokens_per_data_token']:.3f} scorer tokens "
        f"per data token): {tps['other']:9.0f} data tok/s = {result['time_ratio_other_vs_plain']:.3f}x the time"
    )
    print(
        f"alignment alone (other tokenizer, no model): {tps['alignment only']:9.0f} data tok/s "
        f"= {result['alignment_share_of_plain']:.3f}x the plain time"
    )
    print(
        "process CPU time (robust to other processes on the machine): always "
        f"{result['cpu_ratio_always_vs_plain']:.3f}x, other {result['cpu_ratio_other_vs_plain']:.3f}x, "
        f"alignment alone {result['cpu_alignment_share_of_plain']:.3f}x the plain time"
    )
    atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
