"""The GPU validation of tokenweight: one command, at most 8 minutes on one GPU (``benchmarks/gpu_check.sh``).

Sections, each writing ``OUT_DIR/gpu_<name>.json`` (``OUT_DIR`` = ``benchmarks/results``), and a
summary ``OUT_DIR/gpu_check.json`` (status, seconds and result file of every section):

- ``attention``: bf16 (autocast) with every attention implementation this machine has (sdpa, and
  flash_attention_2 when ``flash_attn`` is installed; eager as the reference): per-token NLL of the
  same model and batch against eager, and one dense-frozen weighted train step each;
- ``train_1b``: a ~1B random Llama (d 2048, 16 layers, untied, vocab 32000) at 16k tokens with
  gradient checkpointing, bf16 autocast: frozen and self-scored ``dense:0.75`` step time against
  HF's own plain-CE step (``model(labels=...)``) and peak memory of each (``bench_train_step.py``;
  again with flash-attention when available);
- ``loss_memory``: the weighted loss vs full logits at 16k tokens and the 1B head, bf16
  (``bench_loss_memory.py``);
- ``scoring_1b``: ``short_context_nll`` throughput of the 0.87B scorer at n 16k, w 4k
  (``bench_scoring.py``);
- ``eval_16k``: ``tokenweight eval`` of the 1B model (tokenizer of ``prepare``) on RULER-style tasks
  at 16k tokens, likelihood and generation;
- ``engines``: ``tokenweight train`` (dense:0.75 self-scored, float32) as one plain process, under
  FSDP2 (``accelerate launch --config_file tokenweight/configs/accelerate/fsdp.yaml``, 1 process)
  and under DeepSpeed ZeRO-3 (``--deepspeed zero3``, 1 process): the logged losses must agree
  (relative 1e-3), plus one FSDP bf16 run;
- ``parallel`` (2 or more GPUs; skipped, saying so, on one and in the CPU smoke run): the
  frozen-weighted ``tokenweight train`` with every sequence split over 2 GPUs, by DeepSpeed's
  Ulysses (``--sp-size 2 --deepspeed zero3``) and by torch's context parallelism (``accelerate
  launch`` with FSDP2 and ``--parallelism_config_cp_size 2``): the logged weighted and plain losses
  must equal one process's on the whole sequences (relative 1e-3, bf16 attention kernels aside);
  on CPU, tests/train/test_trainer_sequence_parallel.py checks both layouts exactly;
- ``cce``: ``--loss-kernel cce`` (Cut-Cross-Entropy) against ``chunked_nll`` at 16k tokens and the
  1B head: per-token NLL and gradients (hidden, weight) in bf16, fp32 masters under bf16 autocast,
  with a soft-cap and scale, fp32 (NLL; training refused), and time and peak memory of both at
  V 32000 and 128256 (``bench_cce.py``); ``skipped`` with the reason without CUDA or without
  ``pip install 'tokenweight[cce]'`` (the CPU smoke runs the script, ``chunked_nll`` alone).

Sections run in this order while the time budget lasts (a section that would not fit is skipped,
and says so); a failing section is recorded with its error and the others still run; the exit code
is 1 when any section failed (not when one is skipped). ``--cpu-smoke`` (automatic without CUDA)
runs the same sections at tiny sizes on the CPU in seconds, into a temporary folder unless
``--out-dir`` is given (the engines section is left to tests/contracts/test_engines.py there).

    bash benchmarks/gpu_check.sh [--cpu-smoke] [--out-dir DIR] [--budget SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
PY = sys.executable

#: sizes on a GPU and in the CPU smoke run
GPU = {
    "vocab": 32000,
    "hidden": 2048,
    "layers": 16,
    "heads": 16,
    "intermediate": 5461,
    "n": 16384,
    "window": 4096,
    "attn_n": 4096,
    "eval_n": 16384,
    "engine_n": 2048,
    "engine_window": 512,
    "repeats": 3,
}
SMOKE = {
    "vocab": 300,
    "hidden": 64,
    "layers": 2,
    "heads": 2,
    "intermediate": 128,
    "n": 256,
    "window": 64,
    "attn_n": 128,
    "eval_n": 512,
    "engine_n": 128,
    "engine_window": 32,
    "repeats": 1,
}
#: expected seconds of each section on one H100/H200 (skip it when less budget is left)
ESTIMATE = {
    "attention": 30,
    "train_1b": 90,
    "loss_memory": 40,
    "scoring_1b": 40,
    "eval_16k": 90,
    "engines": 150,
    "cce": 40,  # last: the newest, optional check gives way to the others (or: --sections cce)
    "parallel": 120,  # needs 2 GPUs: skipped, with the reason, on one
}


class Skipped(Exception):
    """A section that could not check what it is for here (the reason, and what it measured anyway)."""

    def __init__(self, reason: str, result: dict | None = None):
        super().__init__(reason)
        self.result = result


class Check:
    def __init__(self, args):
        import torch

        self.cuda = torch.cuda.is_available() and not args.cpu_smoke
        self.smoke = not self.cuda
        self.size = SMOKE if self.smoke else GPU
        self.device = "cuda" if self.cuda else "cpu"
        self.out = Path(
            args.out_dir or (tempfile.mkdtemp(prefix="gpu_check_smoke_") if self.smoke else BENCH / "results")
        )
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="gpu_check_work_"))
        self.deadline = time.monotonic() + args.budget
        self.env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        if self.smoke:
            self.env.setdefault("OMP_NUM_THREADS", "1")
        self.threads = ["--threads", "1" if self.smoke else str(min(8, os.cpu_count() or 1))]

    def path(self, name: str) -> Path:
        return self.out / f"gpu_{name}.json"

    def run(self, cmd: list[str], timeout: float | None = None, cwd: Path | None = None) -> str:
        """Run ``cmd`` (stdout returned; ``RuntimeError`` with its stderr tail when it fails)."""
        left = max(5.0, self.deadline - time.monotonic() + 30)
        done = subprocess.run(
            [str(c) for c in cmd],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=cwd or ROOT,
            timeout=min(timeout or left, left),
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd[:6]))} ... exited {done.returncode}: {done.stderr[-2500:]}")
        return done.stdout

    # ------------------------------------------------------------------------------ sections
    def attention(self) -> dict:
        import torch
        from transformers.utils import is_flash_attn_2_available

        from tokenweight.models import init_model
        from tokenweight.scoring import token_nll

        impls = ["eager", "sdpa"] + (["flash_attention_2"] if self.cuda and is_flash_attn_2_available() else [])
        s, n = self.size, self.size["attn_n"]
        torch.manual_seed(0)
        with torch.device(self.device):
            model = init_model("large", s["vocab"], n, bos_token_id=1, tie_word_embeddings=False)
        ids = torch.randint(3, s["vocab"], (2, n), device=self.device)
        ids[:, 0] = 1
        out = {"implementations": {}, "flash_attn_installed": is_flash_attn_2_available(), "n": n}
        ref = None
        for impl in impls:
            model.set_attn_implementation(impl)
            with torch.no_grad(), torch.autocast(self.device, dtype=torch.bfloat16):
                nll = token_nll(model, ids)
            ref = nll if ref is None else ref
            step = self._weighted_step(model, ids)
            out["implementations"][impl] = {
                "max_abs_nll_diff_vs_eager": (nll - ref).abs().max().item(),
                "mean_nll": nll.mean().item(),
                **step,
            }
        if "flash_attention_2" not in impls:
            out["flash_attention_2"] = "skipped: flash_attn is not installed" if self.cuda else "skipped: needs CUDA"
        bad = {k: v for k, v in out["implementations"].items() if not v["max_abs_nll_diff_vs_eager"] < 0.1}
        if bad:
            raise RuntimeError(f"bf16 NLL differs from eager by >= 0.1 nat: {bad}")
        return out

    def _weighted_step(self, model, ids) -> dict:
        """One dense:0.75 frozen weighted forward+backward under bf16 autocast: loss, seconds, peak memory."""
        import torch
        from transformers import TrainingArguments

        from tokenweight.train.trainer import WeightedTrainer

        short = torch.rand(ids.shape, device=ids.device) * 5  # a token-aligned short_nll column
        args = TrainingArguments(output_dir=str(self.work / "attn"), report_to=[], use_cpu=not self.cuda)
        trainer = WeightedTrainer(model=model, args=args, scheme="dense:0.75")
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone(), "short_nll": short}
        model.zero_grad(set_to_none=True)
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        with torch.autocast(self.device, dtype=torch.bfloat16):
            loss = trainer.compute_loss(model, batch, num_items_in_batch=torch.tensor(ids[:, 1:].numel()))
        loss.backward()
        if self.cuda:
            torch.cuda.synchronize()
        return {
            "weighted_loss": loss.item(),
            "step_s": time.perf_counter() - t,
            "peak_bytes": torch.cuda.max_memory_allocated() if self.cuda else None,
            "finite_grads": all(p.grad is None or bool(p.grad.isfinite().all()) for p in model.parameters()),
        }

    def _shape(self) -> list[str]:
        s = self.size
        return ["--vocab", s["vocab"], "--hidden", s["hidden"], "--layers", s["layers"], "--heads", s["heads"]]

    def train_1b(self) -> dict:
        from transformers.utils import is_flash_attn_2_available

        s, runs = self.size, {}
        impls = ["sdpa"] + (["flash_attention_2"] if self.cuda and is_flash_attn_2_available() else [])
        for impl in impls:
            name = "train_1b_16k" if impl == "sdpa" else "train_1b_16k_flash"
            cmd = [PY, BENCH / "bench_train_step.py", "--device", self.device, "--dtype", "bfloat16", "--autocast"]
            cmd += [*self._shape(), "--intermediate", s["intermediate"], "--untied", "--n", s["n"]]
            cmd += ["--window", s["window"], "--batch", 1, "--gradient-checkpointing", "--attn", impl]
            cmd += ["--repeats", s["repeats"], *self.threads, "--out", self.path(name)]
            runs[impl] = {"stdout": self.run(cmd).strip().splitlines(), "result": str(self.path(name))}
            runs[impl]["ratios_vs_hf_loss"] = json.loads(self.path(name).read_text())["ratio_vs_hf_loss"]
        return runs

    def loss_memory(self) -> dict:
        s = self.size
        cmd = [PY, BENCH / "bench_loss_memory.py", "--device", self.device, "--dtype", "bfloat16", "--n", s["n"]]
        cmd += ["--vocab", s["vocab"], "--dim", s["hidden"], "--rounds", 1, "--repeats", s["repeats"], *self.threads]
        cmd += ["--out", self.path("loss_memory_16k")]
        return {"stdout": self.run(cmd).strip().splitlines(), "result": str(self.path("loss_memory_16k"))}

    def cce(self) -> dict:
        s = self.size
        vocabs = f"{s['vocab']},{128256 if self.cuda else 2 * s['vocab']}"
        cmd = [PY, BENCH / "bench_cce.py", "--device", self.device, "--n", s["n"], "--dim", s["hidden"]]
        cmd += ["--vocabs", vocabs, "--repeats", s["repeats"], *self.threads, "--out", self.path("cce_16k")]
        out = {"stdout": self.run(cmd).strip().splitlines(), "result": str(self.path("cce_16k"))}
        status = json.loads(self.path("cce_16k").read_text())["cce"]
        if status != "ok":
            raise Skipped(status.removeprefix("skipped: "), out)
        return out

    def scoring_1b(self) -> dict:
        s = self.size
        stride = round((1 - s["window"] / s["n"]) * s["window"])
        cmd = [PY, BENCH / "bench_scoring.py", "--device", self.device, "--dtype", "bfloat16", *self._shape()]
        cmd += ["--n", s["n"], "--window", s["window"], "--stride", stride, "--batch", 1, "--repeats", s["repeats"]]
        cmd += [*self.threads, "--out", self.path("scoring_1b_16k")]
        return {"stdout": self.run(cmd).strip().splitlines(), "result": str(self.path("scoring_1b_16k"))}

    def _prepared(self) -> Path:
        """Prepared stdlib data (its trained BPE tokenizer serves the eval too), made once."""
        data = self.work / "data"
        if not (data / "manifest.json").is_file():
            s = self.size
            vocab = ["--vocab-size", s["vocab"], "--tokenizer-train-chars", 300_000 if self.smoke else 3_000_000]
            cmd = [PY, "-m", "tokenweight.cli.main", "prepare", "--corpus", "stdlib", "--n", s["engine_n"], *vocab]
            cmd += ["--max-documents", 60 if self.smoke else 600, "--out", data]
            self.run(cmd)
        return data

    def eval_16k(self) -> dict:
        import torch

        from tokenweight.identity import load_tokenizer
        from tokenweight.models import init_model

        s = self.size
        tok = load_tokenizer(self._prepared() / "tokenizer")
        folder = self.work / "model_1b"
        torch.manual_seed(0)
        with torch.device(self.device):
            model = init_model(
                "large",
                len(tok),
                s["eval_n"],
                hidden_size=s["hidden"],
                num_hidden_layers=s["layers"],
                num_attention_heads=s["heads"],
                num_key_value_heads=s["heads"],
                intermediate_size=s["intermediate"],
                tie_word_embeddings=False,
                bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id,
            )
        model.to(torch.bfloat16).save_pretrained(folder)
        tok.save_pretrained(folder)
        params = sum(p.numel() for p in model.parameters())
        del model
        out = self.work / "eval"
        cmd = [PY, "-m", "tokenweight.cli.main", "eval", folder, "--names", "random-1b", "--lengths", s["eval_n"]]
        cmd += ["--tasks", "niah_single_1,vt", "--num-samples", 1, "--depths", "0.5", "--window", s["window"]]
        cmd += ["--batch-size", 1, "--max-new-tokens", 8, "--out", out]
        cmd += ["--device", self.device, "--dtype", "bfloat16"] if self.cuda else []
        t = time.perf_counter()
        stdout = self.run(cmd)
        results = json.loads((out / "results.json").read_text())
        rows = results["models"][0].get("tasks", [])
        return {
            "params": params,
            "seconds": time.perf_counter() - t,
            "n": s["eval_n"],
            "tasks": rows,
            "stdout": stdout.strip().splitlines()[-12:],
        }

    def parallel(self) -> dict:
        import torch

        gpus = torch.cuda.device_count() if self.cuda else 0
        if gpus < 2:
            raise Skipped(
                f"needs 2 GPUs (a sequence is split over processes, one GPU each), this machine has {gpus}; "
                "tests/train/test_trainer_sequence_parallel.py checks Ulysses and the load-balanced layout on CPU"
            )
        s = self.size
        data = self._prepared()
        scores = self.work / "parallel_scores"
        model = self.work / "parallel_model"
        init = [PY, "-m", "tokenweight.cli.main", "pretrain", "--init", "base", "--data", data, "--window"]
        self.run([*init, s["engine_window"], "--max-steps", 2, "--batch-size", 2, "--out", model])
        score = [PY, "-m", "tokenweight.cli.main", "score", "--data", data, "--scorer", model / "model"]
        self.run([*score, "--window", s["engine_window"], "--max-sequences", 8, "--out", scores])
        train = ["-m", "tokenweight.cli.main", "train", "--model", model / "model", "--data", data]
        train += ["--scheme", "sparse:0.3", "--scorer", "frozen", "--scores", scores, "--max-train-sequences", 8]
        train += [
            "--max-steps",
            2,
            "--warmup-steps",
            1,
            "--save-steps",
            100,
            "--report-to",
            "none",
            "--dtype",
            "bfloat16",
        ]
        fsdp_yaml = ROOT / "tokenweight/configs/accelerate/fsdp.yaml"
        cp = [PY, "-m", "accelerate.commands.launch", "--config_file", fsdp_yaml, "--num_processes", 2]
        cp += ["--parallelism_config_dp_shard_size", 1, "--parallelism_config_cp_size", 2]
        runs = {
            "one": [PY, *train, "--batch-size", 2],
            "ulysses_sp2": [PY, "-m", "torch.distributed.run", "--nproc_per_node", 2, *train, "--batch-size", 1]
            + ["--grad-accum", 2, "--sp-size", 2, "--deepspeed", "zero3"],
            "torch_cp2": [*cp, *train, "--batch-size", 2],
        }
        out, logs = {}, {}
        for name, cmd in runs.items():
            folder = self.work / f"parallel_{name}"
            t = time.perf_counter()
            try:
                self.run([*cmd, "--out", folder])
            except RuntimeError as e:
                out[name] = {"status": "failed", "error": str(e)[-1500:]}
                continue
            logs[name] = [json.loads(x) for x in (folder / "log.jsonl").read_text().splitlines()]
            out[name] = {"seconds": time.perf_counter() - t, "weighted_loss": [x["weighted_loss"] for x in logs[name]]}
        for name in ("ulysses_sp2", "torch_cp2"):
            if name in logs and "one" in logs:
                rel = max(
                    abs(a[k] - b[k]) / abs(b[k])
                    for a, b in zip(logs[name], logs["one"])
                    for k in ("weighted_loss", "plain_loss")
                )
                out[name]["max_rel_loss_diff_vs_one"] = rel
        bad = [k for k, v in out.items() if v.get("status") == "failed" or v.get("max_rel_loss_diff_vs_one", 0) >= 1e-3]
        if bad:
            raise RuntimeError(f"sequence-sharded runs differ from one process or failed: {bad}: {out}")
        return out

    def engines(self) -> dict:
        s = self.size
        data = self._prepared()
        train = ["-m", "tokenweight.cli.main", "train", "--init", "base", "--data", data, "--scheme", "dense:0.75"]
        train += ["--scorer", "self", "--window", s["engine_window"], "--max-steps", 4, "--batch-size", 2]
        train += ["--warmup-steps", 1, "--save-steps", 100, "--max-train-sequences", 16, "--lr", "1e-3"]
        fsdp_yaml = ROOT / "tokenweight/configs/accelerate/fsdp.yaml"
        accelerate = [PY, "-m", "accelerate.commands.launch", "--config_file", fsdp_yaml, "--num_processes", 1]
        runs = {
            "plain": [PY, *train],
            "fsdp2": [*accelerate, "--mixed_precision", "no", *train],
            "zero3": [PY, "-m", "torch.distributed.run", "--nproc_per_node", 1, *train, "--deepspeed", "zero3"],
            "fsdp2_bf16": [*accelerate, "--mixed_precision", "bf16", *train, "--dtype", "bfloat16"],
        }
        out: dict = {}
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            out["zero3"] = "skipped: deepspeed is not installed (pip install -e '.[deepspeed]')"
            runs.pop("zero3")
        losses = {}
        for name, cmd in runs.items():
            folder = self.work / f"engine_{name}"
            t = time.perf_counter()
            self.run([*cmd, "--out", folder])
            log = [json.loads(x) for x in (folder / "log.jsonl").read_text().splitlines()]
            losses[name] = [x["loss"] for x in log]
            out[name] = {"seconds": time.perf_counter() - t, "losses": losses[name]}
        for name in ("fsdp2", "zero3"):
            if name in losses:
                rel = max(abs(a - b) / abs(b) for a, b in zip(losses[name], losses["plain"]))
                out[name]["max_rel_loss_diff_vs_plain"] = rel
                if not rel < 1e-3:
                    raise RuntimeError(f"{name} losses {losses[name]} differ from one plain process {losses['plain']}")
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (automatic without CUDA)")
    ap.add_argument("--out-dir", default=None, help="result folder (GPU default: benchmarks/results)")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for all sections (the script skips the rest)")
    ap.add_argument(
        "--sections", default=None, help="comma-separated sections (default: all; CPU smoke: all but engines)"
    )
    args = ap.parse_args()
    check = Check(args)
    import torch

    summary = {
        "mode": "cpu-smoke" if check.smoke else "gpu",
        "device": torch.cuda.get_device_name() if check.cuda else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "sections": {},
    }
    sections = args.sections.split(",") if args.sections else list(ESTIMATE)
    if check.smoke and not args.sections:
        sections.remove("engines")
        summary["sections"]["engines"] = {
            "status": "skipped: CPU smoke (tests/contracts/test_engines.py runs the engines on CPU)"
        }
    for name in sections:
        left = check.deadline - time.monotonic()
        if name not in ESTIMATE:
            raise SystemExit(f"unknown section {name!r}: choose from {', '.join(ESTIMATE)}")
        if not check.smoke and left < ESTIMATE[name]:
            summary["sections"][name] = {"status": f"skipped: {left:.0f} s of the budget left, needs ~{ESTIMATE[name]}"}
            continue
        t = time.perf_counter()
        try:
            result = getattr(check, name)()
            entry = {"status": "ok", "result": result}
        except Skipped as e:
            entry = {"status": f"skipped: {e}", "result": e.result}
        except Exception as e:  # recorded, and the next section runs
            entry = {
                "status": "failed",
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc()[-3000:],
            }
        entry["seconds"] = round(time.perf_counter() - t, 2)
        summary["sections"][name] = entry
        if name in ("attention", "eval_16k", "engines", "parallel"):
            check.path(name).write_text(json.dumps({**entry, "device": summary["device"]}, indent=2, default=str))
        print(f"{name:12s} {entry['status']:8s} {entry['seconds']:7.1f} s", flush=True)
    check.path("check").write_text(json.dumps(summary, indent=2, default=str))
    for name, entry in summary["sections"].items():
        if entry["status"] != "ok":
            print(f"  {name}: {entry.get('error', entry['status'])[:400]}")
    print(f"wrote {check.path('check')}")
    return 1 if any(e["status"] == "failed" for e in summary["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
