"""Stage ``evaluate``: one or more models side by side on identical inputs.

Writes ``out/results.json`` (docs/EVALUATION.md), ``out/table.txt`` and PNG plots. Each model's
entry is cached under ``out/.cache`` as soon as it is done, so an interrupted evaluation continues
with the same call and a rerun with one more model evaluates only that one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tokenweight.config import RuntimeOptions, StageConfig, check_int, option
from tokenweight.errors import UsageError
from tokenweight.evaluate.effective_length import DEFAULT_THRESHOLD
from tokenweight.evaluate.harness import GROUP as HARNESS
from tokenweight.evaluate.harness import check_options as check_harness_options
from tokenweight.evaluate.lm_metrics import check_edges
from tokenweight.evaluate.results import IN_MEMORY
from tokenweight.evaluate.task_metrics import GROUP as TASKS_GROUP
from tokenweight.evaluate.task_metrics import check_task_options
from tokenweight.evaluate.tasks.sources import HAYSTACK_HELP

__all__ = ["EvalConfig", "EvalResult", "evaluate"]

#: fields of the evaluate stage that say where models, data and outputs are, not how they are
#: evaluated: they are not part of the results' ``config`` nor of any cache key
STAGE_FIELDS = ("models", "names", "data", "out", "cache")


@dataclass
class EvalConfig(RuntimeOptions, StageConfig):
    """Settings of an evaluation run (every setting is recorded in the results' ``config``; the
    runtime options are :class:`tokenweight.config.RuntimeOptions`: every model is loaded with them).

    ``lengths`` are the task lengths of the native and of lm-eval's RULER tasks alike, with a length
    inside the native window added when none is (:func:`tokenweight.evaluate.inputs.task_lengths`),
    so that a task the model cannot do even at short context shows as such. Tasks without a needle get ``num_samples *
    len(depths)`` samples, so every task has as many; the same samples for every model.
    ``evaluator`` may also be a model object (Python only). ``window`` None: the prepared data's
    manifest ``window``, else ``n // 4`` as in the paper's 8k -> 32k setting.
    """

    models: list[str] = option(
        factory=list,
        help="model folders (HF format) or hub ids, compared side by side",
        positional=True,
        metavar="MODEL",
    )
    names: list[str] | None = option(None, "display names, one per MODEL (none: folder names)")
    data: str | None = option(
        None,
        "prepared folder: its validation split gives perplexity by position, LongPPL and episode recall",
        metavar="PREPARED_DIR",
    )
    out: str = option("runs/eval", "output folder", metavar="DIR")
    cache: bool = option(True, "reuse OUT/.cache entries of an earlier run (an interrupted evaluation continues)")
    lengths: list[int] = option(factory=lambda: [256, 512, 1024], help="task lengths in tokens")
    tasks: list[str] = option(factory=lambda: ["all"], help="task names, all, or none ('tokenweight tasks' lists them)")
    num_samples: int = option(2, "samples per task, length and needle depth")
    window: int | None = option(None, "native window w (none: the data manifest's window, else n/4)")
    longppl_trunc_len: int = option(
        4096, "LongPPL: short context of the first key-token candidate; earlier tokens are never key tokens (Fang's)"
    )
    longppl_sliding_window: int = option(
        1024, "LongPPL: candidates per short window: each sees trunc_len to trunc_len + this - 1 tokens (Fang's)"
    )
    longppl_alpha: float = option(2.0, "LongPPL key-token threshold on LSD")
    longppl_beta: float = option(-2.0, "LongPPL key-token threshold on LCL")
    evaluator: Any = option(
        None, "LongPPL evaluator: a name from --names or a model folder (none: the first model)", metavar="MODEL"
    )
    evaluator_tokenizer: Any = option(
        None,
        "tokenizer of the LongPPL evaluator, which may differ from the models' (none: the evaluator folder's, "
        "else the data's)",
        metavar="DIR|ID",
    )
    position_edges: list[int] | None = option(
        None, "bucket edges in tokens for perplexity by position (none: multiples of w up to n)"
    )
    distance_edges: list[int] | None = option(
        None, "bucket edges in tokens for episode recall by distance (none: the position edges)"
    )
    batch_size: int = option(4, "sequences or samples per forward pass")
    batch_tokens: int | None = option(
        32768,
        "at most this many tokens per forward pass (rows x padded length; a longer row runs alone), and at "
        "most --batch-size rows (none: --batch-size rows)",
    )
    max_sequences: int | None = option(32, "held-out sequences used (none: all)")
    generation: bool = option(True, "also score tasks by batched greedy generation (slower than likelihood)")
    max_new_tokens: int | None = option(
        None,
        "generation budget in tokens; 0: RULER's per task (128 for NIAH); none: the longest answer x 1.5 + 8, "
        "at most RULER's",
    )
    depths: list[float] | None = option(None, "needle depths in [0, 1] (none: 0,0.25,0.5,0.75,1)")
    seed: int = option(0, "seed of the task samples")
    haystack: str = option("essay", HAYSTACK_HELP, metavar="essay|noise|data|FILE|DIR", group=TASKS_GROUP)
    squad: str | None = option(None, "SQuAD JSON of qa_1 (RULER: dev-v2.0.json)", metavar="FILE", group=TASKS_GROUP)
    hotpotqa: str | None = option(None, "HotpotQA JSON of qa_2 (RULER: dev set)", metavar="FILE", group=TASKS_GROUP)
    ruler_threshold: float = option(DEFAULT_THRESHOLD, "RULER effective length: mean score to beat", group=TASKS_GROUP)
    harness: list[str] | None = option(
        None, "lm-evaluation-harness tasks run on every model, e.g. mmlu,longbench (lm-eval ls tasks)", group=HARNESS
    )
    harness_include: str | None = option(
        None, "folder of your own lm-eval task YAMLs (lm-eval's --include_path)", metavar="DIR", group=HARNESS
    )
    harness_limit: int | None = option(None, "at most N documents per harness task (none: all)", group=HARNESS)
    harness_num_fewshot: int | None = option(
        None, "few-shot examples of the harness tasks (none: each task's default)", group=HARNESS
    )

    def selected_tasks(self) -> list[str] | None:
        """The task names to run: None for every registered task."""
        if self.tasks is None or list(self.tasks) == ["all"]:
            return None
        return [t for t in self.tasks if t != "none"]

    def validate(self) -> None:
        if not self.lengths or any(not isinstance(x, int) or x < 2 for x in self.lengths):
            raise ValueError(f"lengths must be a non-empty list of integers >= 2, got {self.lengths}")
        check_int(self, "num_samples", 1)
        check_int(self, "batch_size", 1)
        check_int(self, "batch_tokens", 1, optional=True)
        self.validate_runtime()
        check_int(self, "window", 2, optional=True)
        check_int(self, "longppl_trunc_len", 1)
        check_int(self, "longppl_sliding_window", 1)
        check_int(self, "max_sequences", 1, optional=True)
        check_int(self, "max_new_tokens", 0, optional=True)
        check_int(self, "seed", 0)
        if self.depths is not None and any(not 0.0 <= d <= 1.0 for d in self.depths):
            raise ValueError(f"depths must lie in [0, 1], got {self.depths}")
        for name in ("position_edges", "distance_edges"):
            if getattr(self, name) is not None:
                check_edges(getattr(self, name), name)
        if self.names is not None:
            if len(self.names) != len(self.models):
                raise ValueError(f"names has {len(self.names)} names for {len(self.models)} models: give one per MODEL")
            if len(set(self.names)) != len(self.names):
                raise ValueError(f"names {self.names} has duplicates: give every model its own name")
        check_harness_options(self)
        check_task_options(self)

    def display_names(self) -> list[str]:
        """``names``, or the models' folder names made unique."""
        if self.names is not None:
            return list(self.names)
        names = [Path(m).name or str(m) for m in self.models]
        return [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]

    def to_json(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in STAGE_FIELDS}
        d["tasks"] = self.selected_tasks()
        ev = self.evaluator
        d["evaluator"] = ev if ev is None or isinstance(ev, str) else IN_MEMORY
        tok = self.evaluator_tokenizer
        d["evaluator_tokenizer"] = (
            tok if tok is None or isinstance(tok, str) else IN_MEMORY if not isinstance(tok, Path) else str(tok)
        )
        return d


@dataclass
class EvalResult:
    """The results document and the files written."""

    results: dict
    written: dict

    @property
    def table(self) -> str:
        return self.written["text"]


def evaluate(config: EvalConfig, *, tokenizer=None) -> EvalResult:
    """Evaluate ``config.models`` (folders, hub ids; Python callers may pass model objects)."""
    from tokenweight.evaluate.runner import plan_evaluation, run_evaluation
    from tokenweight.report.evaluation import write_outputs

    config.check()
    if not config.models:
        raise UsageError(
            "no MODEL given: pass one or more model folders, e.g. tokenweight eval runs/base runs/weighted"
        )
    for m in config.models:
        if isinstance(m, (str, Path)) and not Path(m).exists() and not _is_hub_id(str(m)):
            raise UsageError(f"model path {str(m)!r} does not exist: pass a folder saved with save_pretrained")
    if config.data is not None and not Path(config.data).is_dir():
        raise UsageError(f"--data {config.data!r} is not a folder: pass a folder written by 'tokenweight prepare'")
    names = config.display_names()
    ev = config.evaluator
    if isinstance(ev, str) and ev not in names and not Path(ev).exists():
        raise UsageError(f"--evaluator {ev!r} is neither a model name ({', '.join(names)}) nor an existing folder")
    from tokenweight.io_utils import clean_folder_temporaries
    from tokenweight.outputs import output_lock

    out = Path(config.out)
    with output_lock(out):  # a second evaluation into the same folder is refused at once
        clean_folder_temporaries(out)  # what an evaluation killed mid-write left (its files are atomic)
        # inputs, task lengths, lm-eval tasks: checked before anything is written or any model loaded
        plan = plan_evaluation(dict(zip(names, config.models)), tokenizer, config.data, config=config)
        results = run_evaluation(plan, cache_dir=out / ".cache" if config.cache else None)
        return EvalResult(results, write_outputs(results, out))


def _is_hub_id(name: str) -> bool:
    from tokenweight.identity import is_hub_id

    return is_hub_id(name)
