"""Cut-Cross-Entropy (``--loss-kernel cce``) against ``chunked_nll``: values, gradients, time, memory.

What it checks, on one CUDA GPU with ``cut-cross-entropy`` installed (``pip install 'tokenweight[cce]'``):

- **values and gradients** of the trainer's two-phase loss ``sum(coef * nll)`` (``coef``: random
  token weights over the count, as the weighted loss gives ``d loss / d nll``), at ``--n`` tokens,
  for both kernels against a float32 reference (``chunked_nll`` with ``matmul_dtype=float32`` on
  float32 copies of the same values): per-token NLL (max abs error), gradients of the hidden states
  and of the head weight (relative Frobenius error), in the cases
  ``bf16`` (16-bit hidden and weight), ``fp32_autocast_bf16`` (float32 masters under bf16 autocast,
  the trainer's ``--dtype bfloat16`` path), ``bf16_softcap_scale`` (a Gemma-2-style soft-cap, 2,
  after a scale 1/2) and ``fp32`` (NLL only: CCE's backward takes 16-bit hidden states, so
  ``cce_nll`` refuses float32 training; the refusal is checked). CCE runs with ``filter_eps=None``
  (exact); ``filter_eps="high"`` (CCE's default, approximate) is measured too. It fails when CCE's
  gradient error exceeds :data:`MAX_REL_GRAD_ERROR` or its NLL error :data:`MAX_NLL_ERROR`: a wrong
  backward (as Liger-Kernel's ``reduction='none'`` had before 0.8.2) cannot pass; the ratios of its
  errors to ours are recorded;
- **time and peak memory** of forward + backward of each kernel (bf16, median of ``--repeats``),
  at each ``--vocabs`` size: peak = ``max_memory_allocated`` above the inputs.

Without CUDA or without the package, the CCE half is skipped with the reason in the JSON
(``"cce": "skipped: ..."``) and ``chunked_nll`` alone is timed (what ``gpu_check.sh --cpu-smoke`` runs).

    python benchmarks/bench_cce.py [--device cuda] [--n 16384] [--dim 2048] [--vocabs 32000,128256] --out FILE
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from tokenweight.io_utils import atomic_write_json  # noqa: E402
from tokenweight.logits import LogitPostprocessing  # noqa: E402
from tokenweight.loss import chunked_nll  # noqa: E402
from tokenweight.loss_kernels import CCE_VERSION, cce_nll, cce_problem  # noqa: E402

#: CCE's gradients (relative Frobenius error vs the float32 reference) must stay below this: loose, since
#: it accumulates them over tiles in 16 bits (we in float32: ~2e-3 in bf16), tight enough for a wrong backward
MAX_REL_GRAD_ERROR = 5e-2
#: max abs NLL error vs the float32 reference (bf16 inputs; nats)
MAX_NLL_ERROR = 0.1
CHUNK = 1024  # the training stages' --chunk-size default
#: a scale and a soft-cap small enough to bend these logits (std ~1 after the scale): Gemma-2's 30 would not
SOFTCAP_SCALE = LogitPostprocessing((("div", 2.0), ("softcap", 2.0)))


def _inputs(n: int, vocab: int, dim: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(1, n, dim, generator=g).to(device)
    weight = (torch.randn(vocab, dim, generator=g) * 2 / dim**0.5).to(device)  # logits of a few nats spread
    labels = torch.randint(0, vocab, (1, n), generator=g)
    labels[0, :: max(1, n // 64)] = -100  # some ignored positions
    coef = (torch.rand(1, n, generator=g) * 2 / n).to(device)
    return hidden, weight, labels.to(device), coef


def _run(fn, hidden, weight, labels, coef, *, autocast: bool = False, grad: bool = True, **kw):
    """``(nll, hidden grad, weight grad)`` of ``sum(coef * nll)``; forward under bf16 autocast when asked,
    backward outside it (as the HF Trainer runs them)."""
    h = hidden.detach().requires_grad_(grad)
    w = weight.detach().requires_grad_(grad)
    with torch.autocast(h.device.type, dtype=torch.bfloat16, enabled=autocast), torch.set_grad_enabled(grad):
        nll = fn(h, w, labels, **kw)
    if not grad:
        return nll.detach(), None, None
    (nll * coef).sum().backward()
    return nll.detach(), h.grad, w.grad


def _errors(got, ref, mask) -> dict:
    nll, gh, gw = got
    out = {"nll_max_abs": (nll - ref[0]).abs()[mask].max().item()}
    for name, g, r in (("grad_hidden_rel", gh, ref[1]), ("grad_weight_rel", gw, ref[2])):
        if g is not None:
            out[name] = ((g.float() - r).norm() / r.norm()).item()
    return out


def accuracy(args, device) -> dict:
    hidden, weight, labels, coef = _inputs(args.n, args.vocabs[0], args.dim, device)
    mask = labels != -100
    cases = {
        "bf16": dict(dtype=torch.bfloat16, autocast=False, post=None, grad=True),
        "fp32_autocast_bf16": dict(dtype=torch.float32, autocast=True, post=None, grad=True),
        "bf16_softcap_scale": dict(dtype=torch.bfloat16, autocast=False, post=SOFTCAP_SCALE, grad=True),
        "fp32": dict(dtype=torch.float32, autocast=False, post=None, grad=False),
    }
    out, failures = {}, []
    for name, case in cases.items():
        h, w = hidden.to(case["dtype"]), weight.to(case["dtype"])
        values = (h.bfloat16() if case["autocast"] else h).float(), (w.bfloat16() if case["autocast"] else w).float()
        ref = _run(chunked_nll, *values, labels, coef, postprocessing=case["post"], matmul_dtype=torch.float32)
        run = dict(autocast=case["autocast"], grad=case["grad"], postprocessing=case["post"])
        row = {
            "chunked": _errors(_run(chunked_nll, h, w, labels, coef, chunk_size=CHUNK, **run), ref, mask),
            "cce": _errors(_run(cce_nll, h, w, labels, coef, **run), ref, mask),
        }
        if case["grad"]:
            row["cce_filter_high"] = _errors(_run(cce_nll, h, w, labels, coef, filter_eps="high", **run), ref, mask)
            for g in ("grad_hidden_rel", "grad_weight_rel"):
                row[f"cce_{g}_ratio_vs_chunked"] = row["cce"][g] / max(row["chunked"][g], 1e-12)
                if not row["cce"][g] <= MAX_REL_GRAD_ERROR:
                    failures.append(f"{name} {g} {row['cce'][g]:.2e} > {MAX_REL_GRAD_ERROR:.0e}")
        else:
            try:
                _run(cce_nll, h, w, labels, coef, grad=True)
                failures.append(f"{name}: cce_nll trained in float32 instead of refusing")
            except ValueError as e:
                row["training_refused"] = str(e)
        if not row["cce"]["nll_max_abs"] <= MAX_NLL_ERROR:
            failures.append(f"{name} NLL error {row['cce']['nll_max_abs']:.2e} > {MAX_NLL_ERROR}")
        out[name] = row
    out["failures"] = failures
    return out


def timing(args, device, with_cce: bool) -> dict:
    cuda = device.type == "cuda"
    kernels = {"chunked": lambda h, w, y: chunked_nll(h, w, y, chunk_size=CHUNK)}
    if with_cce:
        kernels["cce"] = lambda h, w, y: cce_nll(h, w, y)
        kernels["cce_filter_high"] = lambda h, w, y: cce_nll(h, w, y, filter_eps="high")
    out = {}
    for vocab in args.vocabs:
        hidden, weight, labels, coef = _inputs(args.n, vocab, args.dim, device, seed=1)
        dtype = torch.bfloat16 if cuda else torch.float32
        h = hidden.to(dtype).requires_grad_()
        w = weight.to(dtype).requires_grad_()
        row = {}
        for name, fn in kernels.items():
            times = []
            for k in range(args.repeats + 1):  # the first run warms up (Triton compiles): not timed
                h.grad = w.grad = None
                if cuda:
                    torch.cuda.synchronize()
                    base = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                t = time.perf_counter()
                (fn(h, w, labels) * coef).sum().backward()
                if cuda:
                    torch.cuda.synchronize()
                if k:
                    times.append(time.perf_counter() - t)
            row[name] = {
                "median_s": statistics.median(times),
                "peak_bytes_above_inputs": torch.cuda.max_memory_allocated() - base if cuda else None,
            }
        if "cce" in row:
            row["cce_time_ratio_vs_chunked"] = row["cce"]["median_s"] / row["chunked"]["median_s"]
            if cuda:
                row["cce_memory_ratio_vs_chunked"] = (
                    row["cce"]["peak_bytes_above_inputs"] / row["chunked"]["peak_bytes_above_inputs"]
                )
        out[str(vocab)] = row
        del hidden, weight, h, w
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--vocabs", default="32000,128256", help="comma-separated; the first is used for accuracy")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    args.vocabs = [int(v) for v in args.vocabs.split(",")]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    problem = cce_problem(device, torch.bfloat16)
    result = {
        "config": {"n": args.n, "dim": args.dim, "vocabs": args.vocabs, "chunk_size": CHUNK, "repeats": args.repeats},
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
        "torch": torch.__version__,
        "cut_cross_entropy": CCE_VERSION if problem is None else None,
        "cce": "ok" if problem is None else f"skipped: {problem}",
    }
    if problem is None:
        result["accuracy"] = accuracy(args, device)
    result["timing"] = timing(args, device, with_cce=problem is None)
    atomic_write_json(Path(args.out), result)
    failures = result.get("accuracy", {}).get("failures", [])
    for vocab, row in result["timing"].items():
        print(
            f"V {vocab}: " + ", ".join(f"{k} {v['median_s'] * 1e3:.1f} ms" for k, v in row.items() if "median_s" in v)
        )
    print(f"cce: {result['cce']}")
    if failures:  # on stderr too: gpu_check.py records a failed command's stderr
        print(f"CCE differs from the float32 reference: {'; '.join(failures)}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
