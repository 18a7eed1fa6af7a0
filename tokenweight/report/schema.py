"""The results document of the demo report: its structure, its validator, and how to assemble it.

The demo trains several runs (schemes x scorers x seeds), evaluates the base model and every run
with *one* call of ``tokenweight.evaluate.evaluate_models`` (shared held-out sequences, shared
LongPPL key tokens, shared task samples), and hands the report one dict. The evaluation's per-model
entries are embedded unchanged (``base.eval``, ``runs[i].eval``: one element of the evaluation
document's ``models`` list, docs/EVALUATION.md), so nothing is reshaped twice; the rest of the
evaluation document (its config, data, LongPPL evaluator) is kept under ``evaluation``.

Why a hand-written validator: the report is the last step of a long run; a malformed input must fail
with a message naming the exact path (``runs[3].seed``), before any file is written, and without a
new dependency. The full schema is documented in docs/REPORT.md; bump :data:`SCHEMA_VERSION` on any
incompatible change.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any, TypedDict

SCHEMA_VERSION = 1

#: the ``scorer`` of a run: a frozen short-context model (score cache), the model itself
#: (self-scoring), or none (uniform weights need no short-context pass)
SCORERS = ("frozen", "self", "none")

#: keys of one model entry of the evaluation document (tokenweight.evaluate.results.MODEL_KEYS)
EVAL_MODEL_KEYS = ("name", "perplexity", "longppl", "episodes", "tasks")


class ModelRef(TypedDict, total=False):
    """``base``: the short-context model every run starts from."""

    name: str  # its name in the evaluation
    path: str | None  # model folder
    eval: dict  # its entry of the evaluation document's ``models``


class Run(TypedDict, total=False):
    """One training run (one scheme, one scorer, one seed)."""

    name: str  # unique, also its model name in the evaluation
    label: str  # group shared by the seeds of one setting (default: "<scheme> (<scorer>)")
    scheme: str  # weighting spec, e.g. "dense:0.75" (tokenweight.WeightingScheme)
    scorer: str  # one of SCORERS
    seed: int  # seed of the run; runs of equal seed saw the same data order (paired comparisons)
    path: str | None  # model folder
    log_path: str | None  # the run's log.jsonl (training curves)
    train_summary: dict  # the trainer's summary JSON, as written
    eval: dict  # its entry of the evaluation document's ``models``
    curve: list  # filled by build_report from log_path: [{step, loss, plain_loss, ...}]


class Results(TypedDict, total=False):
    schema_version: int
    tokenweight_version: str
    created: str  # ISO 8601, UTC
    config: dict  # free mapping; "n" (long context) and "window" (w) are required
    machine: dict  # free mapping (python, torch, cpu, threads, device, ...)
    evaluation: dict  # the evaluation document without "models"
    base: ModelRef | None
    runs: list[Run]
    models: list[ModelRef]  # evaluated models that are neither the base nor a run (no training record)
    aggregate: dict  # filled by build_report (tokenweight.report.metrics.aggregate)
    verdict: dict  # {"text": str, ...}; build_report writes an automatic one when absent


class SchemaError(ValueError):
    """The results document does not follow the schema; the message names the offending path."""


def _fail(path: str, what: str) -> None:
    raise SchemaError(f"results{path}: {what}")


def _need(obj: Any, keys: Sequence[str], path: str) -> None:
    if not isinstance(obj, dict):
        _fail(path, f"must be an object, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        _fail(path, f"lacks key(s) {', '.join(missing)}")


def _type(value: Any, types: tuple, path: str, what: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        _fail(path, f"must be {what}, got {value!r}")


def _finite_numbers(obj: Any, path: str) -> None:
    """JSON has no NaN/inf: every number must be finite (``None`` stands for a missing value)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        _fail(path, f"holds a non-finite number {obj!r}: use null for a missing value")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                _fail(path, f"has a non-string key {k!r}")
            _finite_numbers(v, f"{path}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _finite_numbers(v, f"{path}[{i}]")
    elif obj is not None and not isinstance(obj, (str, bool, Real)):
        _fail(path, f"holds a value of type {type(obj).__name__}, which JSON cannot hold")


def _check_eval_entry(entry: Any, name: str, path: str) -> None:
    _need(entry, EVAL_MODEL_KEYS, path)
    if entry["name"] != name:
        _fail(f"{path}.name", f"is {entry['name']!r} but the model is named {name!r}")
    if not isinstance(entry["tasks"], list):
        _fail(f"{path}.tasks", "must be a list")


def validate_results(results: Any) -> dict:
    """Raise :class:`SchemaError` (a ValueError) when ``results`` breaks the schema; return it.

    Checks structure and types (docs/REPORT.md), unique run names, one scheme/scorer per label,
    and that every number is finite (``json.dumps`` would otherwise write NaN, which is not JSON).
    """
    _need(results, ("schema_version", "config", "runs"), "")
    if results["schema_version"] != SCHEMA_VERSION:
        _fail(".schema_version", f"is {results['schema_version']!r}, this code reads version {SCHEMA_VERSION}")
    cfg = results["config"]
    _need(cfg, ("n", "window"), ".config")
    _type(cfg["n"], (int,), ".config.n", "an integer >= 2")
    _type(cfg["window"], (int,), ".config.window", "an integer >= 2")
    if cfg["n"] < 2 or not 2 <= cfg["window"] <= cfg["n"]:
        _fail(".config", f"needs 2 <= window <= n, got window={cfg['window']}, n={cfg['n']}")
    for key in ("machine", "evaluation", "aggregate", "verdict", "exposure", "selection"):
        _type(results.get(key), (dict,), f".{key}", "an object or null", optional=True)
    if isinstance(results.get("verdict"), dict):
        _type(results["verdict"].get("text"), (str,), ".verdict.text", "a string")
    base = results.get("base")
    if base is not None:
        _need(base, ("name", "eval"), ".base")
        _type(base["name"], (str,), ".base.name", "a string")
        _check_eval_entry(base["eval"], base["name"], ".base.eval")
    runs = results["runs"]
    _type(runs, (list,), ".runs", "a list")
    names, labels = set(), {}
    _type(results.get("models"), (list,), ".models", "a list or null", optional=True)
    for i, m in enumerate(results.get("models") or []):
        _need(m, ("name", "eval"), f".models[{i}]")
        _type(m["name"], (str,), f".models[{i}].name", "a non-empty string")
        if not m["name"] or m["name"] in names or (base is not None and m["name"] == base["name"]):
            _fail(f".models[{i}].name", f"{m['name']!r} is empty or not unique among base and models")
        names.add(m["name"])
        _check_eval_entry(m["eval"], m["name"], f".models[{i}].eval")
    for i, run in enumerate(runs):
        p = f".runs[{i}]"
        _need(run, ("name", "scheme", "scorer", "seed", "eval"), p)
        _type(run["name"], (str,), f"{p}.name", "a non-empty string")
        if not run["name"] or run["name"] in names or (base is not None and run["name"] == base["name"]):
            _fail(f"{p}.name", f"{run['name']!r} is empty or not unique among base, models and runs")
        names.add(run["name"])
        _type(run["scheme"], (str,), f"{p}.scheme", "a weighting spec string")
        if run["scorer"] not in SCORERS:
            _fail(f"{p}.scorer", f"is {run['scorer']!r}, must be one of {', '.join(SCORERS)}")
        _type(run["seed"], (int,), f"{p}.seed", "an integer")
        _type(run.get("label"), (str,), f"{p}.label", "a string", optional=True)
        for key in ("path", "log_path"):
            _type(run.get(key), (str,), f"{p}.{key}", "a string or null", optional=True)
        _type(run.get("train_summary"), (dict,), f"{p}.train_summary", "an object or null", optional=True)
        _type(run.get("curve"), (list,), f"{p}.curve", "a list or null", optional=True)
        _check_eval_entry(run["eval"], run["name"], f"{p}.eval")
        label = run_label(run)
        setting = (run["scheme"], run["scorer"])
        if labels.setdefault(label, setting) != setting:
            _fail(f"{p}.label", f"{label!r} groups runs of different settings {labels[label]} and {setting}")
    seeds: dict[str, list[int]] = {}
    for i, run in enumerate(runs):
        s = seeds.setdefault(run_label(run), [])
        if run["seed"] in s:
            _fail(f".runs[{i}].seed", f"{run['seed']} appears twice in group {run_label(run)!r}")
        s.append(run["seed"])
    _finite_numbers(results, "")
    return results


def run_label(run: Mapping) -> str:
    """The group a run belongs to: its ``label``, else ``"<scheme> (<scorer>)"``."""
    label = run.get("label")
    if label:
        return str(label)
    return str(run["scheme"]) if run["scorer"] == "none" else f"{run['scheme']} ({run['scorer']})"


def assemble_results(
    evaluation: Mapping,
    *,
    config: Mapping,
    runs: Sequence[Mapping],
    base: str | Mapping | None = "base",
    models: Sequence[str | Mapping] = (),
    machine: Mapping | None = None,
    verdict: Mapping | None = None,
) -> dict:
    """Build the report's results document from an evaluation document and the run records.

    Args:
        evaluation: the document returned by ``tokenweight.evaluate.evaluate_models`` for the base
            model and every run (model names = ``base`` name and run names).
        config: the demo's settings; must hold ``n`` and ``window``.
        runs: per run ``{name, scheme, scorer, seed, [label, path, log_path, train_summary]}``;
            its ``eval`` is taken from ``evaluation["models"]`` by name.
        base: the base model's name in the evaluation, or ``{name, path}``; None when not evaluated.
        models: other evaluated models to report (names or ``{name, path}``): models without a
            training run, e.g. every model of a plain ``tokenweight eval`` when there are no run folders.
        machine, verdict: optional mappings (see :class:`Results`).

    Returns a validated :class:`Results` dict (``aggregate`` is filled later by ``build_report``).
    """
    evaluated = {m["name"]: m for m in evaluation.get("models", [])}

    def entry(name: str, where: str) -> dict:
        if name not in evaluated:
            raise SchemaError(f"{where} {name!r} is not a model of the evaluation (models: {', '.join(evaluated)})")
        return evaluated[name]

    base_ref = None
    if base is not None:
        b = {"name": base} if isinstance(base, str) else dict(base)
        base_ref = {"name": b["name"], "path": b.get("path"), "eval": entry(b["name"], "base")}
    out_models = []
    for m in models:
        ref = {"name": m} if isinstance(m, str) else dict(m)
        out_models.append({"name": ref["name"], "path": ref.get("path"), "eval": entry(ref["name"], "model")})
    out_runs = []
    for r in runs:
        run = {k: r.get(k) for k in ("name", "label", "scheme", "scorer", "seed", "path", "log_path", "train_summary")}
        run["eval"] = entry(r["name"], "run")
        out_runs.append(run)
    from tokenweight import __version__

    results = {
        "schema_version": SCHEMA_VERSION,
        "tokenweight_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": dict(config),
        "machine": dict(machine) if machine is not None else None,
        "evaluation": {k: v for k, v in evaluation.items() if k != "models"},
        "base": base_ref,
        "models": out_models,
        "runs": out_runs,
    }
    if verdict is not None:
        results["verdict"] = dict(verdict)
    return validate_results(results)
