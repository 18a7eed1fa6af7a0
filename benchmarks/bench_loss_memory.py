"""Peak memory and time of ``weighted_lm_loss`` vs the naive full-logits weighted loss.

Both variants compute ``sum(w * CE) / count`` for random weights, forward and backward (gradients
of the hidden states and of the LM-head weight), on ``[b, n, d]`` hidden states and a ``[V, d]``
head. The naive variant is what one writes first: ``F.linear`` to full ``[b, n, V]`` logits, then
``F.cross_entropy(reduction='none')`` times the weights.

How memory is measured (CPU), honestly:

- every variant runs in a **fresh subprocess**, so nothing one variant allocated or cached (glibc
  arenas, oneDNN scratch space) can hide or inflate the other's peak;
- inside it, the inputs are allocated first (and an untimed warm-up of the matrix-product code
  paths is run on tiny tensors, so that library initialisation does not count); then the kernel's
  peak-RSS counter is reset (``echo 5 > /proc/self/clear_refs`` resets ``VmHWM``, Linux >= 4.0)
  and the baseline RSS is read; after forward+backward, ``VmHWM - baseline`` is the peak memory the
  loss computation added, everything (tensors, allocator slack, library buffers) included;
- where ``clear_refs`` cannot be written, ``ru_maxrss`` (peak since process start) is used instead
  and the JSON says so (``"method"``): the import-time peak may then hide part of a small variant's
  peak, so such a ratio errs towards the naive side and is marked.
On CUDA, ``torch.cuda.max_memory_allocated() - memory_allocated()`` after
``reset_peak_memory_stats()`` is reported instead (the caching allocator's own exact count).

Values: each worker saves its loss, per-token NLL and gradients; the parent prints the max absolute
and relative differences. Time: each worker times ``--repeats`` forward+backward runs after the
measured one; the parent alternates the two variants over ``--rounds`` rounds (machine noise hits
both) and reports the best time of each and their ratio.

With ``--chunk-sizes 512,1024`` the chunked variants run at each chunk size in the same run
(``chunked@512``, ``two_phase@512``, ...), so the memory/time trade-off of the chunk size is measured
under the same machine noise; time ratios are also given against the first chunk size's variants.

    python benchmarks/bench_loss_memory.py [--n 4096 --vocab 32000 --dim 512] [--device cuda] [--chunk-sizes 512,1024]
"""

from __future__ import annotations

import argparse
import gc
import inspect
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from tokenweight.io_utils import atomic_write_json  # noqa: E402
from tokenweight.loss import chunked_nll, weighted_lm_loss, weighted_nll_loss  # noqa: E402

VARIANTS = ("naive", "chunked", "two_phase")
#: target of ``chunked`` (weights known up front) at the default chunk size: peak <= this x naive
TARGET_MEMORY_RATIO = 0.10


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _naive(hidden, weight, labels, weights):
    logits = F.linear(hidden, weight).float()  # [b, n, V]: the tensor the chunked loss never holds
    nll = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
    mask = labels != -100
    return (nll * weights * mask).sum() / mask.sum().clamp_min(1), nll.detach()


def worker(args) -> None:
    """One variant in this fresh process: write {'peak_bytes', 'times', ...} and values to --result."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.batch, args.n, args.dim, generator=g).to(device, dtype).requires_grad_()
    weight = (torch.randn(args.vocab, args.dim, generator=g) / args.dim**0.5).to(device, dtype).requires_grad_()
    labels = torch.randint(0, args.vocab, (args.batch, args.n), generator=g).to(device)
    weights = (torch.rand(args.batch, args.n, generator=g) * 2).to(device)

    if args.variant == "naive":
        run = lambda: _naive(hidden, weight, labels, weights)  # noqa: E731
    elif args.variant == "chunked":
        run = lambda: weighted_lm_loss(hidden, weight, labels, weights, chunk_size=args.chunk_size)  # noqa: E731
    else:

        def run():  # the trainer's path: NLL first (weights may depend on it), backward recomputes
            nll = chunked_nll(hidden, weight, labels, chunk_size=args.chunk_size)
            return weighted_nll_loss(nll, labels != -100, weights), nll.detach()

    def step():
        hidden.grad = weight.grad = None
        loss, nll = run()
        loss.backward()
        return loss.detach(), nll

    # warm up library code paths (BLAS/oneDNN init, thread pools) on tiny tensors: not counted
    small = torch.randn(8, args.dim, device=device, dtype=dtype, requires_grad=True)
    (small @ weight[:64].detach().t()).float().logsumexp(-1).sum().backward()
    del small
    gc.collect()

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        method = "torch.cuda.max_memory_allocated - memory_allocated after inputs"
    else:
        exact = _reset_peak_rss()
        base = _status_kib("VmRSS") * 1024
        method = (
            "VmHWM after clear_refs=5, minus VmRSS after inputs (fresh process)"
            if exact
            else "ru_maxrss minus VmRSS after inputs (fresh process; clear_refs unavailable: a lower bound)"
        )
    t0 = time.perf_counter()
    loss, nll = step()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        hwm = _status_kib("VmHWM") * 1024 if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak = hwm - base
    times = [time.perf_counter() - t0]
    for _ in range(args.repeats):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    torch.save(
        {
            "loss": loss.cpu(),
            "nll": nll.cpu(),
            "grad_hidden": hidden.grad.cpu(),
            "grad_weight": weight.grad.cpu(),
            "peak_bytes": int(peak),
            "baseline_bytes": int(base),
            "method": method,
            "times": times,
        },
        args.result,
    )


def _diffs(a: torch.Tensor, b: torch.Tensor) -> dict:
    a, b = a.double(), b.double()
    abs_diff = (a - b).abs().max().item()
    return {"max_abs": abs_diff, "max_rel": abs_diff / max(b.abs().max().item(), 1e-300)}


def _label(variant: str, chunk: int | None) -> str:
    return variant if chunk is None else f"{variant}@{chunk}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--chunk-size", type=int, default=None, help="chunk size of a worker (default: the library's)")
    ap.add_argument(
        "--chunk-sizes", default=None, help="comma-separated chunk sizes to compare (default: the library's)"
    )
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="fresh processes per variant, alternating")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per process after the measured one")
    ap.add_argument("--out", default="benchmarks/results/bench_loss_memory.json")
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # worker mode
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    default_chunk = inspect.signature(weighted_lm_loss).parameters["chunk_size"].default
    if args.variant:
        args.chunk_size = args.chunk_size or default_chunk
        return worker(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available here")
    chunks = [int(c) for c in args.chunk_sizes.split(",")] if args.chunk_sizes else [default_chunk]
    specs = [("naive", None)] + [(v, c) for c in chunks for v in VARIANTS[1:]]
    labels = [_label(v, c) for v, c in specs]

    runs: dict[str, list[dict]] = {k: [] for k in labels}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for variant, chunk in specs if r % 2 == 0 else specs[::-1]:
                label = _label(variant, chunk)
                result = os.path.join(tmp, f"{label}-{r}.pt")
                cmd = [sys.executable, __file__, "--variant", variant, "--result", result]
                cmd += ["--chunk-size", str(chunk or default_chunk)]
                for k in ("n", "vocab", "dim", "batch", "device", "dtype", "threads", "repeats"):
                    cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
                subprocess.run(cmd, check=True)
                runs[label].append(torch.load(result))
                print(
                    f"round {r} {label:14s} peak {runs[label][-1]['peak_bytes'] / 2**20:8.1f} MiB  "
                    f"times {', '.join(f'{t:.2f}' for t in runs[label][-1]['times'])} s",
                    flush=True,
                )

    ref = runs["naive"][0]
    fast = labels[1:]
    diffs = {v: {k: _diffs(runs[v][0][k], ref[k]) for k in ("loss", "nll", "grad_hidden", "grad_weight")} for v in fast}
    peak = {v: min(x["peak_bytes"] for x in runs[v]) for v in labels}
    best = {v: min(t for x in runs[v] for t in (x["times"][1:] or x["times"])) for v in labels}
    mem_ratio = {v: peak[v] / peak["naive"] for v in fast}
    time_ratio = {v: best[v] / best["naive"] for v in fast}
    # time against the same variant at the first chunk size of --chunk-sizes (the trade-off)
    vs_first = {_label(v, c): best[_label(v, c)] / best[_label(v, chunks[0])] for v, c in specs[1:]}
    default = _label("chunked", default_chunk)
    results = {
        "config": {
            k: getattr(args, k)
            for k in ("n", "vocab", "dim", "batch", "device", "dtype", "threads", "rounds", "repeats")
        }
        | {"chunk_sizes": chunks, "default_chunk_size": default_chunk},
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "device_name": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor(),
        },
        "method": ref["method"],
        "peak_bytes_above_baseline": peak,
        "all_peaks": {v: [x["peak_bytes"] for x in runs[v]] for v in labels},
        "best_time_s": best,
        "all_times_s": {v: [x["times"] for x in runs[v]] for v in labels},
        "memory_ratio": mem_ratio,
        "time_ratio": time_ratio,
        "time_ratio_vs_first_chunk_size": vs_first,
        "target_memory_ratio": TARGET_MEMORY_RATIO,
        "meets_target": mem_ratio.get(default, float("inf")) <= TARGET_MEMORY_RATIO if default in mem_ratio else None,
        "diffs_vs_naive": diffs,
    }
    atomic_write_json(args.out, results)
    print(
        f"peak above baseline ({ref['method']}); chunked = weighted_lm_loss, two_phase = chunked_nll + "
        f"weighted_nll_loss, @C = chunk size C (library default {default_chunk}); best fwd+bwd time:"
    )
    for v in labels:
        ratios = "" if v == "naive" else f"   memory x{mem_ratio[v]:.3f}  time x{time_ratio[v]:.3f}"
        if v != "naive" and len(chunks) > 1:
            ratios += f"  (x{vs_first[v]:.3f} of @{chunks[0]})"
        print(f"  {v:14s} {peak[v] / 2**20:8.1f} MiB  {best[v]:7.3f} s{ratios}")
    if results["meets_target"] is not None:
        verdict = "met" if results["meets_target"] else "MISSED"
        print(f"target: {default} memory ratio <= {TARGET_MEMORY_RATIO}: {verdict}")
    for v in fast:
        for k, d in diffs[v].items():
            print(f"  {v:14s} {k:12s} max abs diff {d['max_abs']:.3e}  max rel diff {d['max_rel']:.3e}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
