"""The experiment: :class:`Demo` builds each stage's config from its profile and runs the stages."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tokenweight.demo.base import BaseModelSteps
from tokenweight.demo.profiles import (
    DENSE_FROZEN,
    SCHEMES,
    SELECTED_SCHEME,
    SMALL_SCORER_COMPARISON,
    SMALL_SCORER_MIN_RATIO,
    SMALL_SCORER_SCHEME,
    SPARSE_KAPPA_WHY,
    Profile,
    torch_threads,
)
from tokenweight.errors import UsageError
from tokenweight.io_utils import atomic_write_json

#: the loss chunk of every training stage of the demo: its rows in one chunk, as its published
#: numbers and its shipped base model were made (the library's default is smaller)
DEMO_CHUNK_SIZE = 1024


@dataclass
class Demo(BaseModelSteps):
    out: Path
    profile: Profile
    schemes: tuple = SCHEMES
    skip_gate: bool = False
    #: a shipped base model folder (:data:`SHIPPED_BASES`, with its BASE.json) to use instead of
    #: pretraining: the pretraining data is still prepared, with its tokenizer, and ``base/model``
    #: becomes a copy of it; None: pretrain the base model here
    shipped_base: Path | None = None
    #: the runtime options of every stage config below (``device``, ``dtype``,
    #: ``attn_implementation``; :class:`tokenweight.config.RuntimeOptions`); empty: their defaults
    runtime: dict = field(default_factory=dict)
    #: the corpus of both prepared folders: a prepare INPUT (a folder of text files, ...); None: the
    #: embedded stdlib corpus
    corpus: str | None = None
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

    @property
    def selected_data(self) -> Path:
        """The extension data's documents kept by ``tokenweight select`` (``Profile.select_keep``)."""
        return self.out / "data" / "selected"

    @property
    def small(self) -> Path:
        """The smaller frozen scorer's warm-up and pretraining (``Profile.small_scorer``)."""
        return self.out / "small-scorer"

    @property
    def small_scores(self) -> Path:
        return self.out / "scores-small"

    def _base_folders(self, small: bool) -> tuple[Path, Path]:
        """(warm-up, base) folders of the base model, or of the smaller scorer."""
        return (self.small / "warmup", self.small / "base") if small else (self.warmup, self.base)

    def run_dir(self, name: str, seed: int) -> Path:
        return self.out / "runs" / f"{name}-seed{seed}"

    # ---------------------------------------------------------------- the stage configs
    def prepare_configs(self) -> list:
        from tokenweight.stages.prepare import PrepareConfig

        p = self.profile
        low = max(8, p.window // 16)
        source = {"corpus": "stdlib"} if self.corpus is None else {"inputs": [str(self.corpus)]}
        pre = PrepareConfig(
            out=str(self.pre_data),
            **source,
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
            **source,
            n=p.n,
            tokenizer=str(self.pre_data / "tokenizer"),
            after=str(self.pre_data),
            max_tokens=p.extend_tokens,
            pack=p.pack,
            episodes_per_1k=p.episodes_per_1k,
            episode_distance=f"{low}:{p.n - 16}",
        )
        return [pre, ext]

    def warmup_config(self, small: bool = False):
        """The induction warm-up (None when the profile has none); ``small``: of the smaller scorer,
        the same recipe from its own preset."""
        from tokenweight.stages.pretrain import PretrainConfig

        p = self.profile
        if not p.copy_steps:
            return None
        warmup, _ = self._base_folders(small)
        return PretrainConfig(
            **self.runtime,
            init=p.small_scorer if small else p.preset,
            data=str(self.pre_data),
            out=str(warmup),
            task="copy",
            window=p.window,
            copy_length=p.copy_length,
            max_steps=p.copy_steps,
            batch_size=p.copy_batch,
            lr=p.copy_lr,
            lr_scheduler="constant_with_warmup",
            warmup_steps=max(1, p.copy_steps // 25),
            save_steps=max(1, p.copy_steps // 2),
            chunk_size=DEMO_CHUNK_SIZE,
        )

    def pretrain_config(self, small: bool = False):
        from tokenweight.stages.pretrain import PretrainConfig

        p = self.profile
        warmup, base = self._base_folders(small)
        start = {"model": str(warmup / "model")} if p.copy_steps else {"init": p.small_scorer if small else p.preset}
        return PretrainConfig(
            **start,
            **self.runtime,
            data=str(self.pre_data),
            out=str(base),
            window=p.window,
            max_steps=p.pretrain_steps,
            batch_size=p.pretrain_batch,
            lr=p.pretrain_lr,
            warmup_steps=max(1, p.pretrain_steps // 20),
            save_steps=max(1, p.pretrain_steps // 3),
            chunk_size=DEMO_CHUNK_SIZE,
            copy_fraction=p.copy_fraction,
            copy_length=p.copy_length if p.copy_fraction else None,
        )

    def score_config(self, small: bool = False):
        from tokenweight.stages.score import ScoreConfig

        return ScoreConfig(
            data=str(self.ext_data),
            scorer=str(self._base_folders(small)[1] / "model"),
            out=str(self.small_scores if small else self.scores),
            window=self.profile.window,
            **self.runtime,
        )

    def train_config(self, name: str, scheme: str, scorer: str, seed: int):
        from tokenweight.stages.train import TrainConfig

        p = self.profile
        return TrainConfig(
            **self.runtime,
            model=str(self.base / "model"),
            data=str(self.selected_data if name == SELECTED_SCHEME[0] else self.ext_data),
            out=str(self.run_dir(name, seed)),
            scheme=scheme,
            scorer="frozen" if scorer == "frozen-small" else scorer,
            scores={"frozen": str(self.scores), "frozen-small": str(self.small_scores)}.get(scorer),
            window=p.window,
            max_steps=p.extend_steps,
            batch_size=p.extend_batch,
            lr=p.extend_lr,
            seed=seed,
            warmup_steps=max(1, p.extend_steps // 10),
            save_steps=max(1, p.extend_steps // 2),
            chunk_size=DEMO_CHUNK_SIZE,
            weight_norm="document" if p.pack else "sequence",
        )

    def eval_config(self):
        from tokenweight.stages.evaluate import EvalConfig

        p = self.profile
        models = self.models()
        return EvalConfig(
            **self.runtime,
            models=list(models.values()),
            names=list(models),
            data=str(self.ext_data),
            out=str(self.out / "eval"),
            lengths=list(p.eval_lengths),
            tasks=list(p.eval_tasks),
            num_samples=p.eval_samples,
            window=p.window,
            evaluator="base",
            # Fang et al.'s 4096 + 1024 scaled to the base model's window: candidates see 3w/4 to w - 1 tokens
            haystack="data",  # the held-out code the models were trained on (RULER's essays are prose)
            longppl_trunc_len=p.window * 3 // 4,
            longppl_sliding_window=max(1, p.window // 4),
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
            "corpus": "stdlib" if self.corpus is None else str(self.corpus),
            "base_model": self.base_settings(),
            "gate": gate,
            "stage_seconds": self.stage_times,
        }
        if p.small_scorer:
            settings["small_scorer"] = self.small_scorer_record()
        machine = {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch_threads(),
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
            compare=self.comparisons(),
            settings=settings,
            machine=machine,
        )

    def comparisons(self) -> list[str]:
        """The report's paired comparisons beyond "vs uniform": the small scorer against the full-size
        one (the paper's fourth claim) and, when the profile trains runs beyond the paper's
        (``extra_runs``, ``select_keep``), each of those and ``exact`` against dense frozen, the
        paper's headline scheme they set out to beat; a run with first-window protection
        (``<spec>*protect``) also against its unprotected run, which isolates what protection did."""
        from tokenweight.weighting import WeightingScheme

        p = self.profile
        pairs = [SMALL_SCORER_COMPARISON] if p.small_scorer else []
        if p.extra_runs or p.select_keep:
            paper = {name for name, _, _ in SCHEMES if name != "exact"} | {SMALL_SCORER_SCHEME[0]}
            runs = [(name, WeightingScheme.parse(spec), scorer) for name, spec, scorer in self.schemes]
            by_run = {(scheme, scorer): name for name, scheme, scorer in runs}
            for name, scheme, scorer in runs:
                if name in paper:
                    continue
                pairs.append((name, DENSE_FROZEN))
                parent = by_run.get((replace(scheme, protect=None), scorer)) if scheme.protect is not None else None
                if parent not in (None, DENSE_FROZEN):
                    pairs.append((name, parent))
        return [":".join(pair) for pair in pairs]

    def models(self) -> dict[str, str]:
        models = {"base": str(self.base / "model")}
        for seed in range(self.profile.seeds):
            for name, _, _ in self.schemes:
                models[f"{name}-seed{seed}"] = str(self.run_dir(name, seed) / "model")
        return models

    # ---------------------------------------------------------------- helpers
    def __post_init__(self):
        if self.profile.small_scorer and SMALL_SCORER_SCHEME not in self.schemes:
            self.schemes = (*self.schemes, SMALL_SCORER_SCHEME)
        extra = [*self.profile.extra_runs, *([SELECTED_SCHEME] if self.profile.select_keep else [])]
        self.schemes = (*self.schemes, *(tuple(r) for r in extra if tuple(r) not in self.schemes))
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

    def pretrain_small(self) -> None:
        """The smaller frozen scorer: the base model's warm-up and pretraining, from its own preset."""
        from tokenweight.stages.pretrain import pretrain

        for config in (self.warmup_config(small=True), self.pretrain_config(small=True)):
            if config is not None:
                self._timed("pretrain_small", pretrain, config)
        record = self.small_scorer_record()
        self._say(
            f"smaller scorer ready: {self.small / 'base' / 'model'} ({record['parameters']:,} parameters, "
            f"{record['ratio']:.2f}x fewer than the base model); it recalls {record['gate']['token_accuracy']} "
            "of episode-value digits closer than w"
        )

    def small_scorer_record(self) -> dict:
        """Preset, parameters (counted on the trained models) and gate of the smaller scorer: the
        report's settings (the size rule is checked before any work, :meth:`check_small_scorer`)."""
        from tokenweight.models import count_parameters

        runtime = self._runtime()
        counts = [count_parameters(runtime.load(str(f / "model"))) for f in (self.base, self.small / "base")]
        ratio = counts[0] / counts[1]
        return {
            "preset": self.profile.small_scorer,
            "parameters": counts[1],
            "base_parameters": counts[0],
            "ratio": round(ratio, 3),
            "gate": self.gate(small=True),
        }

    def score(self) -> None:
        from tokenweight.stages.score import score

        self._timed("score", score, self.score_config())
        if self.profile.small_scorer:
            self._timed("score", score, self.score_config(small=True))

    def extend(self) -> None:
        from tokenweight.stages.train import train

        for seed in range(self.profile.seeds):
            for name, scheme, scorer in self.schemes:
                if name == SELECTED_SCHEME[0]:  # after uniform seed 0, which scores the selection
                    from tokenweight.stages.select import select

                    self._say(self._timed("select", select, self.select_config()).line())
                result = self._timed("train", train, self.train_config(name, scheme, scorer, seed))
                self._say(f"{name} seed {seed}: {'already trained' if result.already_done else 'trained'}")

    def select_config(self):
        """LongFilter's selection of the extension data, scored by the uniform run of seed 0 (a model
        that reads the full rows: what LongFilter scores with)."""
        from tokenweight.stages.select import SelectConfig

        return SelectConfig(
            **self.runtime,
            data=str(self.ext_data),
            scorer=str(self.run_dir("uniform", 0) / "model"),
            out=str(self.selected_data),
            keep=self.profile.select_keep,
            window=self.profile.window,
        )

    def evaluate(self) -> dict:
        from tokenweight.stages.evaluate import evaluate

        # per-model entries are cached under eval/.cache: unchanged models are not evaluated again
        return self._timed("eval", evaluate, self.eval_config()).results

    def _runtime(self):
        from tokenweight.config import RuntimeOptions

        return RuntimeOptions(**self.runtime).runtime()

    def gate(self, small: bool = False) -> dict:
        """Can the base model copy? Episode recall on held-out pretraining sequences (all closer than w).

        Context extension can only teach a model to copy from further away if it can copy at all;
        a base model that fails here makes every long-context comparison meaningless, so the demo
        checks this right after pretraining, before spending time on the extension runs.
        ``small``: the same measurement of the smaller scorer (recorded, not enforced: how well a
        weak scorer serves is what its run measures).
        """
        import torch

        from tokenweight.data import load_prepared
        from tokenweight.evaluate.episodes import score_episodes

        cached = self.out / ("gate-small.json" if small else "gate.json")
        if cached.is_file():
            return json.loads(cached.read_text())
        ds, _ = load_prepared(self.pre_data)
        val = ds["validation"].select(range(min(self.profile.gate_sequences, len(ds["validation"]))))
        model = self._runtime().load(str(self._base_folders(small)[1] / "model"))
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

    # ---------------------------------------------------------------- all
    def _check_settings(self) -> None:
        """A demo folder belongs to one profile: refuse to mix stages made with other settings.

        Two changes only add runs, and continue the folder instead: another number of seeds
        (``--seeds``; the report covers seeds ``0..K-1``) and more runs (a profile whose
        ``extra_runs`` and schemes keep the folder's in order and add to them). Every run is a function
        of its own settings, so the runs already made are the ones a fresh folder would make."""
        settings = {
            "profile": asdict(self.profile),
            "schemes": [list(s) for s in self.schemes],
            "base_model": self.base_settings(),
            **({} if self.corpus is None else {"corpus": str(Path(self.corpus).expanduser().resolve())}),
        }
        path = self.out / "demo_settings.json"
        new = json.loads(json.dumps(settings))
        if path.is_file():
            old = json.loads(path.read_text())
            # a profile field added later, at its "off" value, does not make an older folder differ
            old_profile = old.get("profile", {})
            for k, v in new["profile"].items():
                if k not in old_profile and v in (None, [], False):
                    old_profile[k] = None
            if old == new:
                return
            diff = sorted(k for k in new["profile"] if old_profile.get(k) != new["profile"][k])
            diff += [k for k in ("schemes", "base_model", "corpus") if old.get(k) != new.get(k)]
            if not _only_adds_runs(old, new, diff):
                raise UsageError(
                    f"--out {str(self.out)!r} holds a demo made with other settings "
                    f"({', '.join(diff) or 'schemes'} differ): use another --out, or delete it to start over"
                )
            added = len(new["schemes"]) - len(old["schemes"])
            self._say(
                f"continuing {self.out} with {new['profile']['seeds']} seed(s) (it had {old_profile['seeds']})"
                + (f" and {added} more run(s) per seed" if added else "")
            )
        atomic_write_json(path, new)

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

    def check_small_scorer(self) -> None:
        """Refuse, before any work, a smaller-scorer preset that is not >= 4x smaller than the base model
        (counted on freshly built models of both presets at the profile's vocabulary and window)."""
        from tokenweight.models import count_parameters, init_model

        p = self.profile
        if not p.small_scorer:
            return
        base, small = (count_parameters(init_model(x, p.vocab_size, p.window)) for x in (p.preset, p.small_scorer))
        if base / small < SMALL_SCORER_MIN_RATIO:
            raise UsageError(
                f"--small-scorer {p.small_scorer} ({small:,} parameters) is only {base / small:.2f}x smaller than the "
                f"base model's preset {p.preset} ({base:,}): choose a smaller preset (>= {SMALL_SCORER_MIN_RATIO:g}x "
                "fewer parameters), or 'none'"
            )

    def run(self) -> Path:
        t0 = time.perf_counter()
        self.check_small_scorer()
        gate = self.base_ready()
        if self.profile.small_scorer:
            self.pretrain_small()
        self.score()
        self.extend()
        self.evaluate()
        out = self.report(gate)
        self._say(f"done in {time.perf_counter() - t0:.0f} s: report at {out / 'index.html'}")
        return out


def _only_adds_runs(old: dict, new: dict, diff: list[str]) -> bool:
    """Whether two demo settings differ only in the seeds and in added runs (the old runs all kept, in
    their order; a new one may come between them, as extra runs come before the selected run)."""
    if not set(diff) <= {"seeds", "extra_runs", "schemes"}:
        return False
    kept = (old["profile"].get("extra_runs") or [], new["profile"].get("extra_runs") or [])
    return _in_order(*kept) and _in_order(old["schemes"], new["schemes"])


def _in_order(before: list, after: list) -> bool:
    """Every entry of ``before`` is in ``after``, in the same order."""
    it = iter(after)
    return all(any(x == y for y in it) for x in before)
