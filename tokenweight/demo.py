"""The main job: the paper's experiment in miniature, stage by stage, cached and resumable.

The demo builds one typed config per stage from its :class:`Profile` and calls the stages
(``tokenweight.stages``), so it runs exactly the code a user runs:

1. ``prepare`` the embedded corpus twice, sharing one tokenizer: short sequences (``w`` tokens,
   episodes closer than ``w``) to pretrain on, and disjoint documents in long sequences (``n``
   tokens, episodes up to ``n`` apart) to extend on;
2. ``pretrain`` the short-context base model (the stand-in for the paper's 8k Llama-3): first an
   induction warm-up on a synthetic copy task (``Profile.copy_steps``, ``task="copy"``), because a
   model trained briefly from scratch on natural text does not learn to copy from its context at
   all; then the natural corpus with a share of copy rows mixed in, so that the copy circuit
   survives (docs/TRAINING.md has the measurements behind this); then the gate: the base model must
   already copy episodes closer than ``w`` on held-out pretraining sequences, or the demo stops and
   says the base model is too weak (``skip_gate`` goes on and records the failure in the report).
   The default profile ships this base model (:data:`SHIPPED_BASES`, ``tokenweight/assets/base-default``,
   written by ``export_base`` from exactly these stages, with a BASE.json of command, settings,
   digests, versions and gate): unless ``from_scratch``, the demo prepares the pretraining data with
   its tokenizer (the same one prepare trains: BASE.json), copies it to ``base/model`` instead of
   pretraining, and runs the gate on it as before;
3. ``score`` the extension data once with the base model as frozen scorer;
4. ``train``: extend the context to ``n`` with every scheme of :data:`SCHEMES`, at equal steps and
   tokens, for each seed (seed = data order, paired across schemes);
5. ``evaluate``: base model and every run, side by side, same samples;
6. ``report``: the report folder.

Every stage continues an interrupted call and skips finished work by itself (the stages' resume
contract); the gate's result is kept in ``gate.json``. An interrupted demo therefore continues at
the stage it was in, and a rerun of a finished demo only rebuilds the report. A demo folder
belongs to one set of settings (``demo_settings.json``).

The profiles are the embedded defaults: the shipped YAML configs ``configs/demo_*.yaml`` are
written from them (:func:`default_configs`) and a test checks that they agree.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tokenweight.config import StageConfig, check_choice, check_int, option
from tokenweight.errors import UsageError
from tokenweight.io_utils import atomic_write_json

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

#: the base models shipped with the package (``tokenweight/assets``, package data), by profile: the
#: demo uses one instead of pretraining unless ``from_scratch``; each was written by ``export_base``
SHIPPED_BASES = {"default": Path(__file__).parent / "assets" / "base-default"}
BASE_FORMAT = "tokenweight.base/1"
#: the :class:`Profile` fields that decide the base model (pretraining data, warm-up, pretraining):
#: a shipped base belongs to the values recorded in its BASE.json (a test checks that no other
#: field reaches the pretraining stages)
PRETRAIN_FIELDS = (
    "preset",
    "vocab_size",
    "window",
    "pretrain_tokens",
    "episodes_per_1k",
    "copy_steps",
    "copy_length",
    "copy_batch",
    "copy_lr",
    "copy_fraction",
    "pretrain_steps",
    "pretrain_batch",
    "pretrain_lr",
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
class DemoConfig(StageConfig):
    """Options of ``tokenweight demo``."""

    out: str = option("runs/demo", "demo folder; rerun with the same --out to continue", metavar="DIR")
    profile: str = option(
        "default",
        "default (the README's run), quick (tiny everything: what the tests run) or full (3 seeds, more steps: "
        "the README's results)",
        choices=tuple(PROFILES),
    )
    seeds: int | None = option(None, "run every scheme K times (data orders 0..K-1; none: the profile's)")
    copy_steps: int | None = option(None, "induction warm-up steps (copy task; 0: none; none: the profile's)")
    pretrain_steps: int | None = option(None, "pretraining steps (none: the profile's)")
    extend_steps: int | None = option(None, "extension steps (none: the profile's)")
    skip_gate: bool = option(False, "continue when the base model fails the copy gate (the report records it)")
    threads: int | None = option(None, "torch threads (none: torch's own choice)")
    from_scratch: bool = option(
        False,
        "pretrain the base model (copy warm-up, then natural text) instead of using the shipped one; only the "
        "default profile ships one (tokenweight/assets/base-default), the others always pretrain",
    )
    export_base: str | None = option(
        None,
        "pretrain the base model from scratch, run the gate, write it with its tokenizer and BASE.json to DIR "
        "and stop (how tokenweight/assets/base-default is made: docs/TRAINING.md)",
        metavar="DIR",
    )

    def shipped_base(self) -> Path | None:
        """The shipped base model folder this demo uses instead of pretraining (None: it pretrains)."""
        if self.from_scratch or self.export_base is not None:
            return None
        return SHIPPED_BASES.get(self.profile)

    def command(self) -> str:
        """This config as a ``tokenweight demo`` command line (the options that differ from the defaults)."""
        import dataclasses
        import shlex

        parts = ["tokenweight", "demo", "--profile", self.profile]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "profile" or value == f.default:
                continue
            name = f.name.replace("_", "-")
            if isinstance(value, bool):
                parts.append(f"--{name}" if value else f"--no-{name}")
            else:
                parts += [f"--{name}", shlex.quote(str(value))]
        return " ".join(parts)

    def validate(self) -> None:
        check_choice(self, "profile")
        check_int(self, "seeds", 1, optional=True)
        check_int(self, "copy_steps", 0, optional=True)
        check_int(self, "pretrain_steps", 1, optional=True)
        check_int(self, "extend_steps", 1, optional=True)
        check_int(self, "threads", 1, optional=True)
        if self.export_base is not None and not str(self.export_base).strip():
            raise ValueError("export_base must be a folder to write the base model to, got ''")

    def make_profile(self) -> Profile:
        return make_profile(
            self.profile,
            seeds=self.seeds,
            copy_steps=self.copy_steps,
            pretrain_steps=self.pretrain_steps,
            extend_steps=self.extend_steps,
        )


@dataclass
class Demo:
    out: Path
    profile: Profile
    schemes: tuple = SCHEMES
    skip_gate: bool = False
    #: a shipped base model folder (:data:`SHIPPED_BASES`, with its BASE.json) to use instead of
    #: pretraining: the pretraining data is still prepared, with its tokenizer, and ``base/model``
    #: becomes a copy of it; None: pretrain the base model here
    shipped_base: Path | None = None
    stage_times: dict = field(default_factory=dict)
    _record: dict | None = field(default=None, init=False, repr=False)  # the shipped base's checked BASE.json

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

    # ---------------------------------------------------------------- the stage configs
    def prepare_configs(self) -> list:
        from tokenweight.data.pipeline import PrepareConfig

        p = self.profile
        low = max(8, p.window // 16)
        pre = PrepareConfig(
            out=str(self.pre_data),
            corpus="stdlib",
            n=p.window,
            # the shipped base's own tokenizer (the one prepare trains here: BASE.json), so that ids match
            tokenizer=None if self.shipped_base is None else str(self.shipped_base),
            vocab_size=p.vocab_size,
            max_tokens=p.pretrain_tokens,
            episodes_per_1k=p.episodes_per_1k,
            episode_distance=f"{low}:{p.window - 16}",
        )
        ext = PrepareConfig(
            out=str(self.ext_data),
            corpus="stdlib",
            n=p.n,
            tokenizer=str(self.pre_data / "tokenizer"),
            after=str(self.pre_data),
            max_tokens=p.extend_tokens,
            episodes_per_1k=p.episodes_per_1k,
            episode_distance=f"{low}:{p.n - 16}",
        )
        return [pre, ext]

    def warmup_config(self):
        """The induction warm-up (None when the profile has none)."""
        from tokenweight.train.config import PretrainConfig

        p = self.profile
        if not p.copy_steps:
            return None
        return PretrainConfig(
            init=p.preset,
            data=str(self.pre_data),
            out=str(self.warmup),
            task="copy",
            window=p.window,
            copy_length=p.copy_length,
            max_steps=p.copy_steps,
            batch_size=p.copy_batch,
            lr=p.copy_lr,
            lr_scheduler="constant_with_warmup",
            warmup_steps=max(1, p.copy_steps // 25),
            save_steps=max(1, p.copy_steps // 2),
        )

    def pretrain_config(self):
        from tokenweight.train.config import PretrainConfig

        p = self.profile
        start = {"model": str(self.warmup / "model")} if p.copy_steps else {"init": p.preset}
        return PretrainConfig(
            **start,
            data=str(self.pre_data),
            out=str(self.base),
            window=p.window,
            max_steps=p.pretrain_steps,
            batch_size=p.pretrain_batch,
            lr=p.pretrain_lr,
            warmup_steps=max(1, p.pretrain_steps // 20),
            save_steps=max(1, p.pretrain_steps // 3),
            copy_fraction=p.copy_fraction,
            copy_length=p.copy_length if p.copy_fraction else None,
        )

    def score_config(self):
        from tokenweight.stages.score import ScoreConfig

        return ScoreConfig(
            data=str(self.ext_data),
            scorer=str(self.base / "model"),
            out=str(self.scores),
            window=self.profile.window,
            device="cpu",
        )

    def train_config(self, name: str, scheme: str, scorer: str, seed: int):
        from tokenweight.train.config import TrainConfig

        p = self.profile
        return TrainConfig(
            model=str(self.base / "model"),
            data=str(self.ext_data),
            out=str(self.run_dir(name, seed)),
            scheme=scheme,
            scorer=scorer,
            scores=str(self.scores) if scorer == "frozen" else None,
            window=p.window,
            max_steps=p.extend_steps,
            batch_size=p.extend_batch,
            lr=p.extend_lr,
            seed=seed,
            warmup_steps=max(1, p.extend_steps // 10),
            save_steps=max(1, p.extend_steps // 2),
        )

    def eval_config(self):
        from tokenweight.evaluate.runner import EvalConfig

        p = self.profile
        models = self.models()
        return EvalConfig(
            models=list(models.values()),
            names=list(models),
            data=str(self.ext_data),
            out=str(self.out / "eval"),
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

    def report_config(self, gate: dict):
        from tokenweight.stages.report import ReportConfig

        p = self.profile
        settings = {
            "profile": p.name,
            **{k: v for k, v in asdict(p).items() if k != "name"},
            "schemes": [list(s) for s in self.schemes],
            "sparse_kappa_why": SPARSE_KAPPA_WHY,
            "base_model": self.base_settings(),
            "gate": gate,
            "stage_seconds": self.stage_times,
        }
        machine = {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": _torch_threads(),
        }
        return ReportConfig(
            runs=[str(self.run_dir(name, seed)) for seed in range(p.seeds) for name, _, _ in self.schemes],
            evaluation=str(self.out / "eval"),
            base="base",
            out=str(self.out / "report"),
            heatmap_model=str(self.run_dir(self.schemes[0][0], 0) / "model"),
            heatmap_scorer=str(self.base / "model"),
            heatmap_data=str(self.ext_data),
            window=p.window,
            schemes=sorted({s for _, s, _ in self.schemes}),
            settings=settings,
            machine=machine,
        )

    def models(self) -> dict[str, str]:
        models = {"base": str(self.base / "model")}
        for seed in range(self.profile.seeds):
            for name, _, _ in self.schemes:
                models[f"{name}-seed{seed}"] = str(self.run_dir(name, seed) / "model")
        return models

    # ---------------------------------------------------------------- helpers
    def __post_init__(self):
        # wall time per stage, summed over every invocation of this demo folder (a demo resumed
        # after an interruption or after the gate still reports what all of it took)
        path = self.out / "stage_seconds.json"
        if path.is_file():
            self.stage_times = {**json.loads(path.read_text()), **self.stage_times}

    def _timed(self, stage: str, fn, config):
        t = time.perf_counter()
        try:
            return fn(config)
        finally:
            self.stage_times[stage] = round(self.stage_times.get(stage, 0.0) + time.perf_counter() - t, 3)
            atomic_write_json(self.out / "stage_seconds.json", self.stage_times)

    def _say(self, msg: str) -> None:
        print(f"[demo] {msg}", flush=True)

    # ---------------------------------------------------------------- stages
    def prepare(self) -> None:
        from tokenweight.stages.prepare import prepare

        results = [self._timed("prepare", prepare, config) for config in self.prepare_configs()]
        state = "prepared" if any(r.wrote for r in results) else "up to date:"
        self._say(f"{state} {self.pre_data} (n={self.profile.window}) and {self.ext_data} (n={self.profile.n})")

    def pretrain(self) -> None:
        from tokenweight.stages.pretrain import pretrain

        if self.shipped_base is not None:
            self._timed("base", lambda _: self.install_shipped_base(), None)
            return
        warmup = self.warmup_config()
        if warmup is not None:
            self._timed("pretrain", pretrain, warmup)
        self._timed("pretrain", pretrain, self.pretrain_config())

    def score(self) -> None:
        from tokenweight.stages.score import score

        self._timed("score", score, self.score_config())

    def extend(self) -> None:
        from tokenweight.stages.train import train

        for seed in range(self.profile.seeds):
            for name, scheme, scorer in self.schemes:
                result = self._timed("train", train, self.train_config(name, scheme, scorer, seed))
                self._say(f"{name} seed {seed}: {'already trained' if result.already_done else 'trained'}")

    def evaluate(self) -> dict:
        from tokenweight.stages.evaluate import evaluate

        # per-model entries are cached under eval/.cache: unchanged models are not evaluated again
        return self._timed("eval", evaluate, self.eval_config()).results

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

    def report(self, gate: dict) -> Path:
        from tokenweight.stages.report import report

        return report(self.report_config(gate)).out

    # ---------------------------------------------------------------- the base model: shipped or exported
    def shipped_record(self) -> dict:
        """The shipped base's BASE.json, checked once against the folder and the profile."""
        if self._record is None:
            self._record = check_shipped_base(self.shipped_base, self.profile)
        return self._record

    def base_settings(self) -> dict:
        """Where the base model comes from (``demo_settings.json`` and the report's settings)."""
        if self.shipped_base is None:
            return {"source": "from_scratch"}
        r = self.shipped_record()
        return {
            "source": "shipped",
            "asset": self.shipped_base.name,
            "model_digest": r["model_digest"],
            "tokenizer_digest": r["tokenizer_digest"],
            "command": r["command"],
        }

    def pretraining_settings(self) -> dict:
        """This profile's from-scratch pretraining stages without their paths (recorded in BASE.json)."""
        twin = Demo(Path("runs/demo"), self.profile)
        pre, warmup = twin.prepare_configs()[0], twin.warmup_config()

        def strip(config) -> dict:
            return {k: v for k, v in config.to_dict().items() if k not in _PATH_FIELDS}

        return json.loads(
            json.dumps(
                {
                    "prepare": {"corpus": pre.corpus, **pre.identity()},
                    "warmup": None if warmup is None else strip(warmup),
                    "pretrain": strip(twin.pretrain_config()),
                }
            )
        )

    def install_shipped_base(self) -> None:
        """``base/model`` = a copy of the shipped base model (checked against its BASE.json)."""
        import shutil

        from tokenweight.identity import model_digest
        from tokenweight.io_utils import atomic_dir

        record = self.shipped_record()
        corpus = json.loads((self.pre_data / "manifest.json").read_text())["inputs"]["fingerprint"]
        if corpus != record["corpus"]["fingerprint"]:
            self._say(
                f"note: the shipped base model was pretrained on the standard library of Python "
                f"{record['corpus']['python']}, this is Python {platform.python_version()} with another one: "
                "--from-scratch pretrains on this one"
            )
        target = self.base / "model"
        if (target / "config.json").is_file() and model_digest(target) == record["model_digest"]:
            return
        with atomic_dir(target) as tmp:
            for f in sorted(self.shipped_base.iterdir()):
                if f.is_file():
                    shutil.copyfile(f, tmp / f.name)
        self._say(f"base model: the shipped one, {self.shipped_base} (model {record['model_digest']}; BASE.json)")

    def export_base(self, dest: Path, command: str) -> Path:
        """Pretrain from scratch, pass the gate, and write the base model with its tokenizer and a
        BASE.json (command, settings, digests, versions, gate) to ``dest``: a shipped base."""
        import shutil

        import tokenizers
        import torch
        import transformers

        from tokenweight import __version__
        from tokenweight.data.tokenizer import encoder_digest
        from tokenweight.identity import load_tokenizer, model_digest, tokenizer_digest
        from tokenweight.io_utils import atomic_dir, checksums

        if self.shipped_base is not None:
            raise ValueError("export_base pretrains from scratch: make the Demo with shipped_base=None")
        gate = self.base_ready()
        trained = load_tokenizer(self.pre_data / "tokenizer", require_fast=True)  # what prepare trained here
        trained_ids = {"tokenizer_digest": tokenizer_digest(trained), "encoder_digest": encoder_digest(trained)}
        manifest = json.loads((self.pre_data / "manifest.json").read_text())
        with atomic_dir(dest) as tmp:
            for f in sorted((self.base / "model").iterdir()):
                if f.is_file() and f.name != "training_args.bin":  # a pickle of the trainer's arguments: not shipped
                    shutil.copyfile(f, tmp / f.name)  # the usual permissions (the trainer writes 0600 files)
            tok = load_tokenizer(tmp, require_fast=True)
            ids = {"tokenizer_digest": tokenizer_digest(tok), "encoder_digest": encoder_digest(tok)}
            if ids != trained_ids:
                raise UsageError(
                    f"the base model's tokenizer {ids} is not the one prepare trained ({trained_ids}): "
                    f"delete {str(self.out)!r} and export again"
                )
            files = checksums(tmp)
            record = {
                "format": BASE_FORMAT,
                "command": command,
                "profile": self.profile.name,
                "profile_settings": asdict(self.profile),
                "pretraining": self.pretraining_settings(),
                "model_digest": model_digest(tmp),
                **ids,
                "tokenizer_check": {
                    "trained_by_prepare": trained_ids,
                    "same": True,
                    "how": "tokenizer_digest (vocabulary, BOS/EOS/UNK) and encoder_digest (pre-tokenizer, model) "
                    f"of {self.pre_data / 'tokenizer'}, the tokenizer prepare trained in this run, equal this folder's",
                },
                "corpus": {
                    "fingerprint": manifest["inputs"]["fingerprint"],
                    "python": platform.python_version(),
                    "selection": manifest["selection"],
                },
                "gate": gate,
                "pretrain_seconds": self.stage_times.get("pretrain"),
                "versions": {
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "tokenizers": tokenizers.__version__,
                    "tokenweight": __version__,
                },
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": _torch_threads()},
                "files": files,
                "bytes": sum(c["bytes"] for c in files.values()),
            }
            atomic_write_json(tmp / "BASE.json", record)
        self._say(
            f"exported the base model to {dest} ({record['bytes'] / 1e6:.1f} MB, model {record['model_digest']}, "
            f"tokenizer {record['tokenizer_digest']}; gate: recall {gate['token_accuracy']}, passed {gate['passed']})"
        )
        return dest

    # ---------------------------------------------------------------- all
    def _check_settings(self) -> None:
        """A demo folder belongs to one profile: refuse to mix stages made with other settings."""
        settings = {
            "profile": asdict(self.profile),
            "schemes": [list(s) for s in self.schemes],
            "base_model": self.base_settings(),
        }
        path = self.out / "demo_settings.json"
        if path.is_file():
            old = json.loads(path.read_text())
            new = json.loads(json.dumps(settings))
            if old != new:
                diff = sorted(k for k in new["profile"] if old.get("profile", {}).get(k) != new["profile"][k])
                diff += [k for k in ("schemes", "base_model") if old.get(k) != new[k]]
                raise UsageError(
                    f"--out {str(self.out)!r} holds a demo made with other settings "
                    f"({', '.join(diff) or 'schemes'} differ): use another --out, or delete it to start over"
                )
        else:
            atomic_write_json(path, settings)

    def base_ready(self) -> dict:
        """Prepare, pretrain (or install the shipped base) and pass the gate: the gate's result."""
        if self.shipped_base is not None:
            self.shipped_record()  # refuse a missing or altered asset before anything is written
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
                + ("" if self.shipped_base is None else " (the shipped base model: add --from-scratch to pretrain one)")
            )
        return gate

    def run(self) -> Path:
        t0 = time.perf_counter()
        gate = self.base_ready()
        self.score()
        self.extend()
        self.evaluate()
        out = self.report(gate)
        self._say(f"done in {time.perf_counter() - t0:.0f} s: report at {out / 'index.html'}")
        return out


def run_demo(config: DemoConfig) -> Path:
    """The whole experiment of ``config`` (the library entry of ``tokenweight demo``)."""
    config.validate()
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    demo = Demo(Path(config.out), config.make_profile(), skip_gate=config.skip_gate, shipped_base=config.shipped_base())
    if config.export_base is not None:
        return demo.export_base(Path(config.export_base), command=config.command())
    return demo.run()


# ----------------------------------------------------------------------------- the shipped base model


def check_shipped_base(folder: Path, profile: Profile | None = None) -> dict:
    """The BASE.json record of the shipped base model ``folder``, checked against the folder.

    ``UsageError`` (one line) when the folder or its BASE.json is missing, when the model or the
    tokenizer is not the one recorded (:func:`tokenweight.identity.model_digest`,
    :func:`~tokenweight.identity.tokenizer_digest`, ``encoder_digest``), or, given ``profile``, when
    the profile's pretraining settings (:data:`PRETRAIN_FIELDS`) are not the ones it was pretrained with.
    """
    from tokenweight.data.tokenizer import encoder_digest
    from tokenweight.identity import load_tokenizer, model_digest, tokenizer_digest

    fix = "reinstall tokenweight (pip install -e .), or pass --from-scratch to pretrain the base model here"
    path = Path(folder) / "BASE.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        why = "missing" if not path.is_file() else f"unreadable ({type(e).__name__})"
        raise UsageError(f"the shipped base model {str(folder)!r} is {why} (no valid BASE.json): {fix}") from None
    if record.get("format") != BASE_FORMAT:
        raise UsageError(f"{str(path)!r} is not a {BASE_FORMAT} record (format {record.get('format')!r}): {fix}")
    tok = load_tokenizer(folder, require_fast=True)
    got = {
        "model_digest": model_digest(folder),
        "tokenizer_digest": tokenizer_digest(tok),
        "encoder_digest": encoder_digest(tok),
    }
    for key, value in got.items():
        if value != record.get(key):
            raise UsageError(
                f"the shipped base model {str(folder)!r} does not match its BASE.json ({key} {value}, "
                f"{record.get(key)} recorded): {fix}"
            )
    if profile is not None:
        want = record["profile_settings"]
        diff = [k for k in PRETRAIN_FIELDS if json.loads(json.dumps(getattr(profile, k))) != want.get(k)]
        if diff:
            shown = ", ".join(f"{k} {getattr(profile, k)} (shipped: {want.get(k)})" for k in diff)
            raise UsageError(
                f"the shipped base model was pretrained with other settings ({shown}): pass --from-scratch to "
                "pretrain the base model with these"
            )
    return record


#: where a shipped config expects the user's folders (paths are given on the command line)
_PATH_FIELDS = ("model", "data", "out", "scores")

_CONFIG_HEADERS = {
    "demo_warmup": (
        "The embedded default, step 1 of 3: the induction warm-up of the short-context base model (a copy\n"
        "task; --data only gives the tokenizer). docs/TRAINING.md explains why it is needed.\n"
        "  tokenweight pretrain --config tokenweight/configs/demo_warmup.yaml --data DATA --out runs/warmup"
    ),
    "demo_pretrain": (
        "The embedded default, step 2 of 3: pretrain the base model at w tokens on the natural corpus, with\n"
        "a share of copy rows, continuing from the warm-up.\n"
        "  tokenweight pretrain --config tokenweight/configs/demo_pretrain.yaml --model runs/warmup/model \\\n"
        "      --data DATA --out runs/base"
    ),
    "demo_train": (
        "The embedded default, step 3 of 3: extend the base model from w to the data's n with the paper's\n"
        "best general setting, dense with lambda = 0.75, self-scored (the baseline: --scheme uniform).\n"
        "  tokenweight train --config tokenweight/configs/demo_train.yaml --model runs/base/model \\\n"
        "      --data DATA --out runs/dense"
    ),
}


def default_configs() -> dict[str, dict]:
    """The default profile's training stages as the shipped ``configs/demo_*.yaml`` hold them:
    every setting that differs from its config class's default, without paths (given per run)."""
    import dataclasses

    demo = Demo(Path("runs/demo"), PROFILES["default"])
    configs = {
        "demo_warmup": demo.warmup_config(),
        "demo_pretrain": demo.pretrain_config(),
        "demo_train": demo.train_config("dense-self", "dense:0.75", "self", 0),
    }
    out = {}
    for name, config in configs.items():
        if config is None:
            continue
        fresh = type(config)()
        out[name] = {
            f.name: getattr(config, f.name)
            for f in dataclasses.fields(config)
            if f.name not in _PATH_FIELDS and getattr(config, f.name) != getattr(fresh, f.name)
        }
    return out


def render_default_configs() -> dict[str, str]:
    """``{file name: YAML text}`` of :func:`default_configs`: how the shipped files are written."""
    import yaml

    texts = {}
    for name, values in default_configs().items():
        header = "".join(f"# {line}".rstrip() + "\n" for line in _CONFIG_HEADERS[name].splitlines())
        note = "# Written by tokenweight.demo.render_default_configs() from the default profile (tested).\n"
        texts[f"{name}.yaml"] = header + note + yaml.safe_dump(values, sort_keys=False)
    return texts


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def make_profile(name: str, **overrides) -> Profile:
    if name not in PROFILES:
        raise UsageError(f"unknown demo profile {name!r}: use one of {', '.join(PROFILES)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(PROFILES[name], **changes)
