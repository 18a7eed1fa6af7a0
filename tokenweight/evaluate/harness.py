"""lm-evaluation-harness tasks from ``tokenweight eval --harness TASKS`` (docs/EVALUATION.md).

Every model of an evaluation is also run through EleutherAI's lm-evaluation-harness (``lm_eval``,
the optional extra ``tokenweight[harness]``), in this process, on the model object the rest of the
suite evaluates (so on the same device, in the same dtype) and with the evaluation's tokenizer:
``lm_eval.simple_evaluate`` over ``lm_eval.models.huggingface.HFLM(pretrained=model)``, with
lm-eval's own defaults for everything tokenweight does not set (seeds, bootstrap iterations,
prompts), so that a number reported under a task's name is the number lm-eval reports for it.

What is kept of lm-eval's output, per model (``models[i].harness`` of results.json): every row of
its ``results`` (tasks and groups, metrics under lm-eval's own keys such as ``acc,none`` and
``acc_stderr,none``; a non-numeric value such as ``"N/A"`` becomes null), with the sample count,
the number of few-shot examples, higher-is-better and the task version. Tables show the rows of
the requested names (a group's aggregate, not its subtasks), or every task when a requested name
is a tag.

Checked before any model is evaluated (:func:`plan_harness`, a ``UsageError`` each): lm_eval is
installed, the include folder exists, every task name is known to lm-eval (with close matches),
every task loads its data (loaded once, the same task objects then serve every model).
Cached per model in ``OUT/.cache/harness-*.json``, keyed by the model's digest, the tasks, the
include folder's content, the limit and few-shot settings, the batch size, the runtime options,
the tokenizer and the lm_eval version: a rerun with other harness tasks evaluates only those
results again, never the rest of the suite.

RULER's synthetic tasks (``ruler``, ``niah_*``) are given the metadata they need the way lm-eval's
``--metadata`` does: the folder of the evaluation's tokenizer and ``max_seq_lengths`` = the task
lengths of the native tasks (both resolved once, by :mod:`tokenweight.evaluate.inputs`).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenweight.config import check_int
from tokenweight.errors import UsageError

#: the EvalConfig fields of the harness (the group of their flags in ``tokenweight eval --help``)
FIELDS = ("harness", "harness_include", "harness_limit", "harness_num_fewshot")
GROUP = "lm-evaluation-harness (pip install 'tokenweight[harness]')"
INSTALL = "pip install 'tokenweight[harness]' (lm_eval)"


def check_options(config) -> None:
    """``ValueError`` naming the field for bad harness options of an ``EvalConfig``."""
    if config.harness is not None:
        if not config.harness or any(not isinstance(t, str) or not t.strip() for t in config.harness):
            raise ValueError(f"harness must be a list of lm-eval task names, got {config.harness!r}")
    else:
        for name in FIELDS[1:]:
            if getattr(config, name) is not None:
                raise ValueError(f"{name} applies to lm-eval tasks: pass --harness TASKS with it")
    check_int(config, "harness_limit", 1, optional=True)
    check_int(config, "harness_num_fewshot", 0, optional=True)


@dataclass(frozen=True)
class HarnessPlan:
    """The checked harness settings of one evaluation (:func:`plan_harness`)."""

    tasks: tuple[str, ...]
    include: str | None  # folder of extra task YAMLs (absolute)
    include_digest: str | None  # of its files: an edited YAML is another plan
    limit: int | None
    num_fewshot: int | None
    metadata: str  # JSON of the TaskManager metadata (RULER's tokenizer and lengths)

    def manager(self):
        """lm-eval's ``TaskManager`` of these tasks (its own and ``include``'s), one per process."""
        return _task_manager(self.include, self.include_digest, self.metadata)

    def task_objects(self) -> tuple:
        """The requested tasks and groups as lm-eval objects, their data loaded: once per process,
        then given to ``simple_evaluate`` for every model (``UsageError`` when one cannot load)."""
        return _load_tasks(self.include, self.include_digest, self.metadata, self.tasks, self.num_fewshot)

    def key(self, config, tokenizer) -> dict:
        """What the harness results of a model depend on besides the model itself (its cache key)."""
        import lm_eval

        from tokenweight import __version__
        from tokenweight.identity import tokenizer_digest

        return {
            "kind": "harness",
            "version": __version__,
            "lm_eval": lm_eval.__version__,
            "tasks": list(self.tasks),
            "include": self.include_digest,
            "limit": self.limit,
            "num_fewshot": self.num_fewshot,
            # RULER's lengths; its tokenizer by content (below), not by the folder's path
            "metadata": {k: v for k, v in json.loads(self.metadata).items() if k != "tokenizer"},
            "batch_size": config.batch_size,
            "runtime": _runtime(config),
            "tokenizer": tokenizer_digest(tokenizer),
        }


def _runtime(config) -> dict | None:
    """Where and how the models run (``auto`` resolved: results made on a CPU are not a GPU's)."""
    if not hasattr(config, "runtime"):
        return None
    rt = config.runtime()
    return {"device": rt.device, "dtype": rt.dtype, "attn_implementation": rt.attn_implementation}


def plan_harness(config, *, lengths, tokenizer_folder: str | None) -> HarnessPlan | None:
    """The harness settings of ``config`` checked against lm-eval; None without ``--harness``.

    ``lengths``: the run's task lengths (:func:`tokenweight.evaluate.inputs.task_lengths`) and
    ``tokenizer_folder``: the folder of its tokenizer (None: in memory), with which RULER's tasks
    size their prompts. One line (``UsageError``) for lm_eval missing, a missing include folder,
    unknown task names, or a task whose data or packages are missing (the tasks' data are loaded
    here, once); no model is loaded.
    """
    if not config.harness:
        return None
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise UsageError(f"--harness needs lm-evaluation-harness: {INSTALL}") from None
    include = None
    if config.harness_include is not None:
        folder = Path(config.harness_include).expanduser()
        if not folder.is_dir():
            raise UsageError(
                f"--harness-include {str(config.harness_include)!r} is not a folder: pass the folder of your task YAMLs"
            )
        include = str(folder.resolve())
    tasks = tuple(dict.fromkeys(t.strip() for t in config.harness))
    metadata = {"max_seq_lengths": [int(x) for x in lengths]}
    if tokenizer_folder:
        metadata["tokenizer"] = tokenizer_folder
    digest = _folder_digest(include) if include else None
    plan = HarnessPlan(tasks, include, digest, config.harness_limit, config.harness_num_fewshot, json.dumps(metadata))
    known = set(plan.manager().all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        import difflib

        hints = sorted({m for t in unknown for m in difflib.get_close_matches(t, known, n=3)})
        where = f" or in {config.harness_include}" if include else " (add your own with --harness-include DIR)"
        raise UsageError(
            f"unknown lm-eval task(s) {', '.join(unknown)}: not among lm-eval's tasks{where}"
            + (f"; close: {', '.join(hints)}" if hints else "; list them with: lm-eval ls tasks")
        )
    plan.task_objects()
    return plan


@functools.lru_cache(maxsize=4)
def _task_manager(include: str | None, include_digest: str | None, metadata: str):
    """lm-eval's task index (its own tasks and ``include``'s), built once per process."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include, metadata=json.loads(metadata))


@functools.lru_cache(maxsize=4)
def _load_tasks(include, include_digest, metadata: str, tasks: tuple[str, ...], num_fewshot) -> tuple:
    """The top-level lm-eval objects of ``tasks`` (a group as its ``Group``, a tag as its tasks).
    ``num_fewshot`` is part of the key: ``simple_evaluate`` sets it on the objects it is given."""
    manager = _task_manager(include, include_digest, metadata)
    objects = []
    for name in tasks:
        try:
            loaded = manager.load([name])
        except Exception as e:  # lm-eval's or datasets' own error, named in the message
            raise UsageError(f"lm-eval task {name!r} cannot load its data: {_first_line(e)}: {_DATA_FIX}") from None
        if name in loaded["groups"]:
            objects.append(loaded["groups"][name])
        elif name in loaded["tasks"]:
            objects.append(loaded["tasks"][name])
        else:  # a tag: lm-eval expands it into its tasks
            objects.extend(loaded["tasks"].values())
    try:
        manager.load(list(objects))  # what simple_evaluate does with them: e.g. no task twice
    except ValueError as e:
        raise UsageError(f"--harness {','.join(tasks)}: {_first_line(e)}: request each task once") from None
    return tuple(objects)


_DATA_FIX = (
    "offline (HF_DATASETS_OFFLINE=1) its dataset must be in the HF datasets cache, and its extra packages "
    "installed (docs/EVALUATION.md, lm-evaluation-harness)"
)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _folder_digest(folder: str) -> str:
    """A digest of every file under ``folder`` (relative path and bytes)."""
    from tokenweight.io_utils import file_digest, fingerprint

    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return fingerprint({str(p.relative_to(root)): file_digest(p) for p in files})


# ----------------------------------------------------------------------------- running


def run_harness(model, tokenizer, plan: HarnessPlan, batch_size: int) -> dict:
    """lm-eval's results for one model object (``models[i].harness``, docs/EVALUATION.md)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    t0 = time.perf_counter()
    hf_log = logging.getLogger("lm_eval.models.huggingface")
    level = hf_log.level
    hf_log.setLevel(logging.ERROR)  # its warning that a model object ignores the loading options
    try:
        # a copy: HFLM may set the tokenizer's pad token, the rest of the suite keeps its own
        lm = HFLM(pretrained=model, tokenizer=copy.deepcopy(tokenizer), batch_size=batch_size)
    finally:
        hf_log.setLevel(level)
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=list(plan.task_objects()),
        num_fewshot=plan.num_fewshot,
        limit=plan.limit,
        task_manager=plan.manager(),
        log_samples=False,
    )
    return summarize(out, plan, time.perf_counter() - t0)


def summarize(out: dict, plan: HarnessPlan, seconds: float) -> dict:
    """The kept part of ``simple_evaluate``'s output (every metric under lm-eval's key)."""
    import lm_eval

    groups = set(out.get("groups") or {}) | set(out.get("group_subtasks") or {})
    rows = []
    for task, res in out["results"].items():
        rows.append(
            {
                "task": task,
                "alias": str(res.get("alias", task)),
                "group": task in groups,
                "metrics": {k: _number(v) for k, v in res.items() if "," in k},
                "samples": ((out.get("n-samples") or {}).get(task) or {}).get("effective"),
                "num_fewshot": (out.get("n-shot") or {}).get(task),
                "higher_is_better": (out.get("higher_is_better") or {}).get(task) or {},
                "version": _plain((out.get("versions") or {}).get(task)),
            }
        )
    return {
        "lm_eval_version": lm_eval.__version__,
        "requested": list(plan.tasks),
        "limit": plan.limit,
        "num_fewshot": plan.num_fewshot,
        "tasks": rows,
        "seconds": round(seconds, 3),
    }


def _number(v: Any) -> float | None:
    import math

    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _plain(v: Any) -> Any:
    return v if v is None or isinstance(v, (str, int, float, bool)) else str(v)


def model_harness(name, source, load, inputs, plan: HarnessPlan | None, cache_dir) -> dict | None:
    """``models[i].harness`` of one model: from ``cache_dir`` when it holds it, else run (``load()``
    gives the model object, loaded once for the whole suite) and cached."""
    from tokenweight.evaluate.cache import entry_path, read_record, write_record

    if plan is None:
        return None
    key = plan.key(inputs.config, inputs.tokenizer) if cache_dir is not None else None
    path = entry_path(cache_dir, key, source, prefix="harness-") if key is not None else None
    cached = read_record(path)
    if cached is not None:
        return cached["entry"]
    entry = run_harness(load(), inputs.tokenizer, plan, inputs.config.batch_size)
    if path is not None:
        write_record(path, entry, None)
    return entry
