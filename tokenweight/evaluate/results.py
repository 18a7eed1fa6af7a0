"""The results document of ``tokenweight eval``: its schema and the readers of its lm-eval rows.

One JSON document holds every metric of a run, for every model side by side (schema documented in
docs/EVALUATION.md; bump :data:`SCHEMA_VERSION` on any incompatible change). Models are a *list*
(the order given on the command line is the order of every table and plot; JSON objects are
written with sorted keys, so a mapping would lose it).

:func:`check_results` is the executable form of the schema: the runner calls it before writing, the
report code and the tests can call it on what they read. Its tables and figures are drawn by
``tokenweight.report`` (``report.evaluation``: ``table.txt``; ``report.plots``: the PNG figures).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SCHEMA_VERSION = 1
#: ``source`` of a model, ``evaluator`` or ``evaluator_tokenizer`` given as an object (Python only)
IN_MEMORY = "<in-memory>"

TOP_KEYS = (
    "schema_version",
    "tokenweight_version",
    "created",
    "config",
    "data",
    "evaluator",
    "skipped_tasks",
    "models",
    "seconds",
)
MODEL_KEYS = ("name", "source", "parameters", "perplexity", "longppl", "episodes", "tasks", "seconds")
TASK_ROW_KEYS = ("task", "length", "depth", "samples", "likelihood", "generation")
#: ``models[i].harness`` (optional: null or absent without ``--harness``) and its rows
HARNESS_KEYS = ("lm_eval_version", "requested", "tasks")
HARNESS_ROW_KEYS = ("task", "alias", "group", "metrics", "samples", "num_fewshot", "higher_is_better")
#: ``models[i].ruler`` (optional: null without generation scores)
RULER_KEYS = ("threshold", "tasks", "by_length", "effective_length")


def check_results(results: dict) -> dict:
    """Raise ValueError when ``results`` does not follow the schema; return it unchanged."""

    def need(obj: Any, keys: Sequence[str], where: str) -> None:
        if not isinstance(obj, dict):
            raise ValueError(f"{where} must be an object, got {type(obj).__name__}")
        missing = [k for k in keys if k not in obj]
        if missing:
            raise ValueError(f"{where} lacks key(s) {', '.join(missing)}")

    need(results, TOP_KEYS, "results")
    if results["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"results schema_version is {results['schema_version']!r}, expected {SCHEMA_VERSION}")
    if not isinstance(results["models"], list) or not results["models"]:
        raise ValueError("results.models must be a non-empty list")
    names = [m.get("name") for m in results["models"] if isinstance(m, dict)]
    if len(set(names)) != len(results["models"]):
        raise ValueError(f"results.models must have distinct names, got {names}")
    for m in results["models"]:
        where = f"results.models[{m['name']!r}]"
        need(m, MODEL_KEYS, where)
        if m["perplexity"] is not None:
            need(m["perplexity"], ("overall", "short", "by_position"), f"{where}.perplexity")
        if m["longppl"] is not None:
            need(m["longppl"], ("longppl", "nll", "key_tokens", "eligible_tokens", "key_share"), f"{where}.longppl")
        if m["episodes"] is not None:
            need(m["episodes"], ("overall", "by_distance"), f"{where}.episodes")
        if not isinstance(m["tasks"], list):
            raise ValueError(f"{where}.tasks must be a list")
        for i, row in enumerate(m["tasks"]):
            need(row, TASK_ROW_KEYS, f"{where}.tasks[{i}]")
        if m.get("harness") is not None:
            need(m["harness"], HARNESS_KEYS, f"{where}.harness")
            for i, row in enumerate(m["harness"]["tasks"]):
                need(row, HARNESS_ROW_KEYS, f"{where}.harness.tasks[{i}]")
                need(row["metrics"], (), f"{where}.harness.tasks[{i}].metrics")
        if m.get("ruler") is not None:  # optional: RULER's effective length (tokenweight.evaluate.effective_length)
            need(m["ruler"], RULER_KEYS, f"{where}.ruler")
    return results


# ----------------------------------------------------------------------------- lm-evaluation-harness rows


def shown_rows(harness: dict) -> list[dict]:
    """The rows tables show: those of the requested names; every task row as well when a
    requested name has no row of its own (a tag, which lm-eval expands into its tasks)."""
    rows = harness["tasks"]
    requested = set(harness.get("requested") or [])
    shown = [r for r in rows if r["task"] in requested]
    if requested - {r["task"] for r in rows}:
        shown += [r for r in rows if not r["group"] and r["task"] not in requested]
    return shown


def metrics_of(row: dict) -> list[tuple[str, str, str | None]]:
    """``(key, label, stderr key)`` of a row's metrics: ``("acc,none", "acc", "acc_stderr,none")``;
    the filter is part of the label unless it is lm-eval's ``none``."""
    out = []
    for key in row["metrics"]:
        name, _, filt = key.partition(",")
        if name.endswith("_stderr"):
            continue
        stderr = f"{name}_stderr,{filt}"
        out.append((key, name if filt == "none" else f"{name} ({filt})", stderr if stderr in row["metrics"] else None))
    return out


def higher_is_better(row: dict, key: str) -> bool | None:
    return row.get("higher_is_better", {}).get(key.partition(",")[0])
