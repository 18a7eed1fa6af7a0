"""The main job: the paper's experiment in miniature, stage by stage, cached and resumable.

Stages (each a ``tokenweight`` subcommand run in this process, so the demo exercises exactly the
code a user runs):

1. ``prepare`` the embedded corpus twice, sharing one tokenizer: short sequences (``w`` tokens,
   episodes closer than ``w``) to pretrain on, and disjoint documents in long sequences (``n``
   tokens, episodes up to ``n`` apart) to extend on;
2. ``pretrain`` the short-context base model (the stand-in for the paper's 8k Llama-3): first an
   induction warm-up on a synthetic copy task (``Profile.copy_steps``, ``pretrain --task copy``),
   because a model trained briefly from scratch on natural text does not learn to copy from
   its context at all; then the natural corpus with a share of copy rows mixed in, so that the
   copy circuit survives (docs/TRAINING.md has the measurements behind this); then the gate: the
   base model must already copy episodes closer than ``w`` on held-out pretraining sequences, or
   the demo stops and says the base model is too weak (``--skip-gate`` goes on and records the
   failure in the report);
3. ``score`` the extension data once with the base model as frozen scorer;
4. ``train``: extend the context to ``n`` with every scheme of :data:`SCHEMES`, at equal steps and
   tokens, for each seed (seed = data order, paired across schemes);
5. ``eval``: base model and every run, side by side, same samples;
6. the report folder (``tokenweight.report``).

Caching: ``prepare`` and ``score`` skip or resume by themselves; a run folder with
``summary.json`` is finished, one with a checkpoint is resumed; the evaluation is reused when its
inputs (models and settings) are unchanged; the gate's result is kept in ``gate.json``. An
interrupted demo therefore resumes at the stage it was in, and a rerun of a finished demo only
rebuilds the report. A demo folder belongs to one set of settings (``demo_settings.json``).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tokenweight.errors import UsageError
from tokenweight.io_utils import atomic_write_json, fingerprint

#: (run name, scheme spec, scorer). κ = 0.2 for sparse: see :data:`SPARSE_KAPPA_WHY`.
SCHEMES = (
    ("uniform", "uniform", "none"),
    ("dense-frozen", "dense:0.75", "frozen"),
    ("sparse-frozen", "sparse:0.2", "frozen"),
    ("longce-self", "longce:5", "self"),
    ("dense-self", "dense:0.75", "self"),
)

SPARSE_KAPPA_WHY = (
    "sparse keeps the top 20% of tokens by |L_long - L_short| (kappa = 0.2): about ten times the "
    "share of injected episode-value tokens, so every long-range copy token can be kept together "
    "with the strongest natural long-range tokens, while a fifth of each sequence still carries "
    "the language-modelling signal; much smaller kappa leaves a model of a few million parameters "
    "too few tokens per step to keep its short-context ability"
)


@dataclass
class Profile:
    """Sizes of one demo flavour. ``default`` is sized for a 2-core CPU with no GPU (README.md has its run time)."""

    name: str
    preset: str = "shallow"  # 2 layers: forms an induction head soonest on the copy task (docs/TRAINING.md)
    vocab_size: int = 4096
    window: int = 256
    n: int = 1024
    pretrain_tokens: int = 2_100_000
    extend_tokens: int = 1_200_000
    episodes_per_1k: float = 3.0
    copy_steps: int = 700  # induction warm-up (pretrain --task copy) first; 0: none
    copy_length: int = 64  # tokens per copy row: short rows form the induction head in fewer steps
    copy_batch: int = 32
    copy_lr: float = 3e-3
    copy_fraction: float = 0.25  # share of copy rows among the natural pretraining windows
    pretrain_steps: int = 500
    pretrain_batch: int = 16
    pretrain_lr: float = 2e-3
    extend_steps: int = 150
    extend_batch: int = 4
    extend_lr: float = 5e-4
    seeds: int = 1
    eval_lengths: tuple = (256, 512, 1024)
    eval_tasks: tuple = ("niah_single_1", "niah_single_2", "niah_multikey_1", "vt")
    eval_samples: int = 2  # per needle depth
    eval_depths: tuple = (0.1, 0.5, 0.9)
    eval_sequences: int = 96
    eval_generation: bool = False
    gate: float | None = 0.5  # base model's per-digit recall of episode values closer than w
    gate_sequences: int = 96


PROFILES = {
    "default": Profile("default"),
    "full": Profile(
        "full",
        seeds=3,
        extend_steps=300,
        extend_tokens=2_600_000,
        pretrain_steps=900,
        pretrain_tokens=3_700_000,
        eval_samples=4,
        eval_sequences=192,
        eval_generation=True,
    ),
    "quick": Profile(
        "quick",
        preset="tiny",
        vocab_size=512,
        window=64,
        n=256,
        pretrain_tokens=60_000,
        copy_steps=10,
        copy_length=32,
        copy_batch=8,
        extend_tokens=40_000,
        episodes_per_1k=6.0,
        pretrain_steps=30,
        pretrain_batch=8,
        extend_steps=4,
        extend_batch=2,
        eval_lengths=(64, 128, 256),
        eval_tasks=("niah_single_1",),
        eval_samples=1,
        eval_depths=(0.5,),
        eval_sequences=4,
        gate=None,
    ),
}


@dataclass
class Demo:
    out: Path
    profile: Profile
    schemes: tuple = SCHEMES
    skip_gate: bool = False
    stage_times: dict = field(default_factory=dict)

    # ---------------------------------------------------------------- paths
    @property
    def pre_data(self) -> Path:
        return self.out / "data" / "pretrain"

    @property
    def ext_data(self) -> Path:
        return self.out / "data" / "extend"

    @property
    def base(self) -> Path:
        return self.out / "base"

    @property
    def warmup(self) -> Path:
        return self.out / "warmup"

    @property
    def scores(self) -> Path:
        return self.out / "scores"

    def run_dir(self, name: str, seed: int) -> Path:
        return self.out / "runs" / f"{name}-seed{seed}"

    # ---------------------------------------------------------------- helpers
    def _cli(self, stage: str, argv: list[str]) -> None:
        from tokenweight.cli.main import main

        t = time.perf_counter()
        rc = main([str(a) for a in argv])
        self._add_time(stage, time.perf_counter() - t)
        if rc != 0:
            raise UsageError(
                f"demo stage '{stage}' failed (exit {rc}); fix the error above and rerun "
                f"'tokenweight demo --out {self.out}' to resume from this stage"
            )

    def __post_init__(self):
        # wall time per stage, summed over every invocation of this demo folder (a demo resumed
        # after an interruption or after the gate still reports what all of it took)
        path = self.out / "stage_seconds.json"
        if path.is_file():
            self.stage_times = {**json.loads(path.read_text()), **self.stage_times}

    def _add_time(self, stage: str, seconds: float) -> None:
        self.stage_times[stage] = round(self.stage_times.get(stage, 0.0) + seconds, 3)
        atomic_write_json(self.out / "stage_seconds.json", self.stage_times)

    def _say(self, msg: str) -> None:
        print(f"[demo] {msg}", flush=True)

    # ---------------------------------------------------------------- stages
    def prepare(self) -> None:
        p = self.profile
        ep = ["--episodes-per-1k", p.episodes_per_1k]
        self._cli(
            "prepare",
            [
                "prepare",
                "--corpus",
                "stdlib",
                "--out",
                self.pre_data,
                "--n",
                p.window,
                "--vocab-size",
                p.vocab_size,
                "--max-tokens",
                p.pretrain_tokens,
                *ep,
                "--episode-distance",
                f"{max(8, p.window // 16)}:{p.window - 16}",
            ],
        )
        self._cli(
            "prepare",
            [
                "prepare",
                "--corpus",
                "stdlib",
                "--out",
                self.ext_data,
                "--n",
                p.n,
                "--tokenizer",
                self.pre_data / "tokenizer",
                "--after",
                self.pre_data,
                "--max-tokens",
                p.extend_tokens,
                *ep,
                "--episode-distance",
                f"{max(8, p.window // 16)}:{p.n - 16}",
            ],
        )
        self._say(f"prepared {self.pre_data} (n={p.window}) and {self.ext_data} (n={p.n})")

    def _train_stage(self, stage: str, out: Path, argv: list[str]) -> None:
        if (out / "summary.json").is_file():
            return
        from transformers.trainer_utils import get_last_checkpoint

        resume = out.is_dir() and get_last_checkpoint(str(out)) is not None
        self._cli(stage, argv + ["--out", out] + (["--resume"] if resume else []))

    def pretrain(self) -> None:
        p = self.profile
        start = ["--init", p.preset]
        if p.copy_steps:
            self._train_stage(
                "pretrain",
                self.warmup,
                [
                    "pretrain",
                    "--task",
                    "copy",
                    *start,
                    "--data",
                    self.pre_data,
                    "--window",
                    p.window,
                    "--copy-length",
                    p.copy_length,
                    "--max-steps",
                    p.copy_steps,
                    "--batch-size",
                    p.copy_batch,
                    "--lr",
                    p.copy_lr,
                    "--lr-scheduler",
                    "constant_with_warmup",
                    "--warmup-steps",
                    max(1, p.copy_steps // 25),
                    "--save-steps",
                    max(1, p.copy_steps // 2),
                ],
            )
            start = ["--model", self.warmup / "model"]
        self._train_stage(
            "pretrain",
            self.base,
            [
                "pretrain",
                *start,
                "--data",
                self.pre_data,
                "--window",
                p.window,
                "--max-steps",
                p.pretrain_steps,
                "--batch-size",
                p.pretrain_batch,
                "--lr",
                p.pretrain_lr,
                "--warmup-steps",
                max(1, p.pretrain_steps // 20),
                "--save-steps",
                max(1, p.pretrain_steps // 3),
                *(["--copy-fraction", p.copy_fraction, "--copy-length", p.copy_length] if p.copy_fraction else []),
            ],
        )

    def score(self) -> None:
        p = self.profile
        self._cli(
            "score",
            [
                "score",
                "--data",
                self.ext_data,
                "--scorer",
                self.base / "model",
                "--out",
                self.scores,
                "--window",
                p.window,
                "--device",
                "cpu",
            ],
        )

    def extend(self) -> None:
        p = self.profile
        for seed in range(p.seeds):
            for name, scheme, scorer in self.schemes:
                argv = [
                    "train",
                    "--model",
                    self.base / "model",
                    "--data",
                    self.ext_data,
                    "--scheme",
                    scheme,
                    "--scorer",
                    scorer,
                    "--window",
                    p.window,
                    "--max-steps",
                    p.extend_steps,
                    "--batch-size",
                    p.extend_batch,
                    "--lr",
                    p.extend_lr,
                    "--seed",
                    seed,
                    "--warmup-steps",
                    max(1, p.extend_steps // 10),
                    "--save-steps",
                    max(1, p.extend_steps // 2),
                ]
                if scorer == "frozen":
                    argv += ["--scores", self.scores]
                self._train_stage("train", self.run_dir(name, seed), argv)
                self._say(f"trained {name} seed {seed}")

    def models(self) -> dict[str, str]:
        models = {"base": str(self.base / "model")}
        for seed in range(self.profile.seeds):
            for name, _, _ in self.schemes:
                models[f"{name}-seed{seed}"] = str(self.run_dir(name, seed) / "model")
        return models

    def evaluate(self) -> dict:
        from tokenweight.evaluate.runner import EvalConfig, evaluate_models, write_outputs

        p = self.profile
        config = EvalConfig(
            lengths=list(p.eval_lengths),
            tasks=list(p.eval_tasks),
            num_samples=p.eval_samples,
            window=p.window,
            evaluator="base",
            max_sequences=p.eval_sequences,
            generation=p.eval_generation,
            depths=list(p.eval_depths),
            seed=0,
        )
        models = self.models()
        key = fingerprint(
            {
                "config": asdict(config),
                "models": {k: _model_stamp(v) for k, v in models.items()},
                "data": _manifest_fingerprint(self.ext_data),
            }
        )
        out = self.out / "eval"
        cached = out / "results.json"
        stamp = out / "demo_key.json"
        if cached.is_file() and stamp.is_file() and json.loads(stamp.read_text())["key"] == key:
            return json.loads(cached.read_text())
        t = time.perf_counter()
        results = evaluate_models(
            models, tokenizer=None, data_dir=self.ext_data, config=config, cache_dir=out / ".cache"
        )  # per-model cache: an interrupted eval resumes
        write_outputs(results, out)
        atomic_write_json(stamp, {"key": key})
        self._add_time("eval", time.perf_counter() - t)
        return results

    def gate(self) -> dict:
        """Can the base model copy? Episode recall on held-out pretraining sequences (all closer than w).

        Context extension can only teach a model to copy from further away if it can copy at all;
        a base model that fails here makes every long-context comparison meaningless, so the demo
        checks this right after pretraining, before spending time on the extension runs.
        """
        import torch

        from tokenweight.data import load_prepared
        from tokenweight.evaluate.episodes import score_episodes
        from tokenweight.models import load_model

        cached = self.out / "gate.json"
        if cached.is_file():
            return json.loads(cached.read_text())
        ds, _ = load_prepared(self.pre_data)
        val = ds["validation"].select(range(min(self.profile.gate_sequences, len(ds["validation"]))))
        model = load_model(str(self.base / "model"))
        scores = []
        with torch.no_grad():
            for i in range(0, len(val), 16):
                rows = val[i : i + 16]
                scores += score_episodes(model.eval(), torch.tensor(rows["input_ids"]), rows["episodes"])
        tokens = sum(s["tokens"] for s in scores)
        result = {
            "episodes": len(scores),
            "token_accuracy": sum(s["correct"] for s in scores) / tokens if tokens else None,
            "exact_match": sum(s["exact"] for s in scores) / len(scores) if scores else None,
            "threshold": self.profile.gate,
        }
        atomic_write_json(cached, result)
        return result

    def report(self, evaluation: dict, gate: dict) -> Path:
        from tokenweight.report import assemble_results, build_report

        p = self.profile
        runs = []
        for seed in range(p.seeds):
            for name, scheme, scorer in self.schemes:
                d = self.run_dir(name, seed)
                runs.append(
                    {
                        "name": f"{name}-seed{seed}",
                        "label": name,
                        "scheme": scheme,
                        "scorer": scorer,
                        "seed": seed,
                        "path": str(d / "model"),
                        "log_path": str(d / "log.jsonl"),
                        "train_summary": json.loads((d / "summary.json").read_text()),
                    }
                )
        config = {
            "profile": p.name,
            **{k: v for k, v in asdict(p).items() if k != "name"},
            "schemes": [list(s) for s in self.schemes],
            "sparse_kappa_why": SPARSE_KAPPA_WHY,
            "gate": gate,
            "stage_seconds": self.stage_times,
        }
        machine = {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": _torch_threads(),
        }
        results = assemble_results(evaluation, config=config, runs=runs, base="base", machine=machine)
        sample = self._heatmap_sample()
        out = self.out / "report"
        build_report(results, out, sample=sample)
        return out

    def _heatmap_sample(self) -> dict | None:
        from tokenweight.data import load_prepared
        from tokenweight.models import load_model, load_tokenizer
        from tokenweight.report.heatmap import compute_heatmap

        ds, _ = load_prepared(self.ext_data)
        val = ds["validation"]
        if len(val) == 0:
            return None
        row = max(range(min(len(val), 64)), key=lambda i: len(val[i]["episodes"]))
        tok = load_tokenizer(str(self.ext_data / "tokenizer"))
        text = tok.decode(val[row]["input_ids"], skip_special_tokens=True)
        model = load_model(str(self.run_dir("uniform", 0) / "model"))
        scorer = load_model(str(self.base / "model"))
        specs = sorted({s for _, s, _ in self.schemes})
        return compute_heatmap(model, scorer, tok, text, specs, window=self.profile.window, max_tokens=self.profile.n)

    # ---------------------------------------------------------------- all
    def _check_settings(self) -> None:
        """A demo folder belongs to one profile: refuse to mix stages made with other settings."""
        settings = {"profile": asdict(self.profile), "schemes": [list(s) for s in self.schemes]}
        path = self.out / "demo_settings.json"
        if path.is_file():
            old = json.loads(path.read_text())
            if old != json.loads(json.dumps(settings)):
                diff = sorted(k for k in settings["profile"] if old["profile"].get(k) != settings["profile"][k])
                raise UsageError(
                    f"--out {str(self.out)!r} holds a demo made with other settings "
                    f"({', '.join(diff) or 'schemes'} differ): use another --out, or delete it to start over"
                )
        else:
            atomic_write_json(path, settings)

    def run(self) -> Path:
        t0 = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        self._check_settings()
        self.prepare()
        self.pretrain()
        gate = self.gate()
        p = self.profile
        acc = gate["token_accuracy"]
        self._say(
            f"base model ready: {self.base / 'model'}; gate: recalls {acc if acc is None else round(acc, 3)} "
            f"of episode-value digits closer than w={p.window} ({gate['episodes']} episodes, "
            f"exact match {gate['exact_match']}; threshold {p.gate})"
        )
        gate["passed"] = p.gate is None or (acc is not None and acc >= p.gate)
        if not gate["passed"] and self.skip_gate:
            self._say(
                "gate FAILED; continuing because of --skip-gate: the comparison below is not evidence "
                "about long-range learning, since the base model cannot copy even at short range"
            )
        elif not gate["passed"]:
            recalled = "no" if acc is None else f"{acc:.3f}"
            raise UsageError(
                f"the base model is too weak: it recalls {recalled} of the injected value digits closer than "
                f"w={p.window} tokens (gate: {p.gate}), so context extension cannot be judged on it: train the "
                "induction warm-up or the base model longer (--copy-steps, --pretrain-steps; README 'What the demo "
                "measured'), or pass --skip-gate to run the comparison anyway"
            )
        self.score()
        self.extend()
        evaluation = self.evaluate()
        out = self.report(evaluation, gate)
        self._say(f"done in {time.perf_counter() - t0:.0f} s: report at {out / 'index.html'}")
        return out


def _model_stamp(path: str) -> str:
    """Cheap identity of a saved model: size and mtime of its weight files."""
    p = Path(path)
    files = sorted(p.glob("*.safetensors")) if p.is_dir() else []
    if not files:
        raise UsageError(f"model {path} is missing: rerun 'tokenweight demo' to train it")
    return fingerprint([(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files])


def _manifest_fingerprint(data_dir: Path) -> str | None:
    m = data_dir / "manifest.json"
    return json.loads(m.read_text()).get("fingerprint") if m.is_file() else None


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def make_profile(name: str, **overrides) -> Profile:
    if name not in PROFILES:
        raise UsageError(f"unknown demo profile {name!r}: use one of {', '.join(PROFILES)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(PROFILES[name], **changes)
