"""The results document of ``tokenweight eval``: its schema and its console table.

One JSON document holds every metric of a run, for every model side by side (schema documented in
docs/EVALUATION.md; bump :data:`SCHEMA_VERSION` on any incompatible change). Models are a *list*
(the order given on the command line is the order of every table and plot; JSON objects are
written with sorted keys, so a mapping would lose it).

:func:`check_results` is the executable form of the schema: the runner calls it before writing, the
report code and the tests can call it on what they read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

SCHEMA_VERSION = 1

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


# ----------------------------------------------------------------------------- console table


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if math.isinf(x):
            return "inf"
        return f"{x:.{digits}f}"
    return str(x)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned."""
    cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for k, r in enumerate(cells):
        parts = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(parts).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _span(lo: int, hi: int) -> str:
    return f"{lo}-{hi}"


def lm_table(results: dict) -> str | None:
    """Perplexity (overall, first window, by position bucket) and LongPPL per model."""
    models = [m for m in results["models"] if m["perplexity"] is not None]
    if not models:
        return None
    w = models[0]["perplexity"]["short"]["window"]
    # a bucket [0, w) is the short-context perplexity itself: shown once, as ppl<w
    keep = [i for i, b in enumerate(models[0]["perplexity"]["by_position"]) if (b["start"], b["end"]) != (0, w)]
    buckets = [models[0]["perplexity"]["by_position"][i] for i in keep]
    headers = (
        ["model", "ppl", f"ppl<{w}"] + [f"ppl {_span(b['start'], b['end'])}" for b in buckets] + ["LongPPL", "key%"]
    )
    rows = []
    for m in models:
        p = m["perplexity"]
        lp = m["longppl"] or {}
        share = lp.get("key_share")
        rows.append(
            [m["name"], _fmt(p["overall"]["ppl"], 2), _fmt(p["short"]["ppl"], 2)]
            + [_fmt(p["by_position"][i]["ppl"], 2) for i in keep]
            + [_fmt(lp.get("longppl"), 2), _fmt(None if share is None else 100 * share, 2)]
        )
    d = results.get("data") or {}
    title = (
        f"Language modelling on {d.get('sequences', '?')} held-out sequences of up to {d.get('n', '?')} tokens "
        f"(w = {w})"
    )
    return title + "\n" + _table(headers, rows)


def episode_table(results: dict) -> str | None:
    """Episode recall: exact match (token accuracy) by distance bucket, per model."""
    models = [m for m in results["models"] if m["episodes"] is not None and m["episodes"]["overall"]["episodes"]]
    if not models:
        return None
    buckets = models[0]["episodes"]["by_distance"]
    headers = ["model"] + [f"d {_span(b['start'], b['end'])} (n={b['episodes']})" for b in buckets] + ["overall"]

    def cell(e: dict) -> str:
        return f"{_fmt(e['exact_match'])} ({_fmt(e['token_accuracy'])})"

    rows = [
        [m["name"]] + [cell(b) for b in m["episodes"]["by_distance"]] + [cell(m["episodes"]["overall"])] for m in models
    ]
    return "Episode recall: exact match (token accuracy) by distance\n" + _table(headers, rows)


def task_table(results: dict) -> str | None:
    """Tasks by length (all depths pooled): likelihood token accuracy [generation score] per model."""
    models = results["models"]
    keys = []
    for m in models:
        for r in m["tasks"]:
            if r["depth"] is None and (r["task"], r["length"]) not in keys:
                keys.append((r["task"], r["length"]))
    if not keys:
        return None
    w = (results.get("config") or {}).get("window")
    by = {(m["name"], r["task"], r["length"]): r for m in models for r in m["tasks"] if r["depth"] is None}
    headers = ["task", "length"] + [m["name"] for m in models]
    rows = []
    for task, length in sorted(keys, key=lambda k: (k[0], k[1])):
        row = [task, f"{length}{'*' if w and length <= w else ''}"]
        for m in models:
            r = by.get((m["name"], task, length))
            if r is None:
                row.append("-")
                continue
            text = _fmt(r["likelihood"].get("token_accuracy"))
            gen = r.get("generation")
            if gen and gen.get("score") is not None:
                text += f" [{gen['score']:.0f}]"
            row.append(text)
        rows.append(row)
    title = "Tasks: likelihood token accuracy (teacher-forced answer tokens) [RULER generation score, 0-100]"
    if w:
        title += f"; * = inside the native window w = {w}"
    return title + "\n" + _table(headers, rows)


def ruler_table(results: dict) -> str | None:
    """RULER's summary per model: mean string-match score over the tasks at each length (``+``:
    above the threshold; ``(k/n)``: only k of the n tasks scored, not eligible) and the effective
    length (:mod:`tokenweight.evaluate.effective_length`)."""
    from tokenweight.evaluate.effective_length import effective_label

    models = [m for m in results["models"] if m.get("ruler")]
    if not models:
        return None
    lengths = sorted({b["length"] for m in models for b in m["ruler"]["by_length"]})
    w = (results.get("config") or {}).get("window")
    rows = []
    for length in lengths:
        row = [f"{length}{'*' if w and length <= w else ''}"]
        for m in models:
            b = next((b for b in m["ruler"]["by_length"] if b["length"] == length), None)
            n = len(m["ruler"]["tasks"])
            text = "-" if b is None else f"{b['score']:.1f}{'+' if b['passes'] else ''}"
            row.append(text if b is None or b["complete"] else f"{text} ({b['tasks']}/{n})")
        rows.append(row)
    rows.append(["effective"] + [effective_label(m["ruler"]) for m in models])
    r = models[0]["ruler"]
    title = (
        f"RULER: mean generation score over {len(r['tasks'])} tasks (string match, 0-100) by length; "
        f"+ = above the threshold {r['threshold']:g} (RULER's: Llama-2-7B at 4K); effective = longest such length"
    )
    return title + "\n" + _table(["length"] + [m["name"] for m in models], rows)


def harness_table(results: dict) -> str | None:
    """lm-evaluation-harness: every shown metric (± its stderr) of every requested task, per model."""

    models = [m for m in results["models"] if m.get("harness")]
    if not models:
        return None
    keys, cells = [], {}  # (task, metric key) in first-seen order -> {model: text}
    for m in models:
        for row in shown_rows(m["harness"]):
            for key, label, stderr in metrics_of(row):
                k = (row["task"], key)
                if k not in cells:
                    keys.append((row["alias"].strip(" -") or row["task"], label, k))
                    cells[k] = {}
                x, se = row["metrics"][key], row["metrics"].get(stderr) if stderr else None
                cells[k][m["name"]] = _fmt(x) + (f" ± {_fmt(se)}" if se is not None and x is not None else "")
    rows = [[task, label] + [cells[k].get(m["name"], "-") for m in models] for task, label, k in keys]
    h = models[0]["harness"]
    shots = "each task's default few-shot" if h.get("num_fewshot") is None else f"{h['num_fewshot']}-shot"
    limit = "" if h.get("limit") is None else f", at most {h['limit']} documents per task"
    title = f"lm-evaluation-harness {h['lm_eval_version']} ({shots}{limit}): metric ± stderr"
    return title + "\n" + _table(["task", "metric"] + [m["name"] for m in models], rows)


def format_tables(results: dict) -> str:
    """Every table of a results document, separated by blank lines."""
    tables = (lm_table(results), episode_table(results), task_table(results), ruler_table(results))
    tables += (harness_table(results),)
    parts = [t for t in tables if t]
    ev = results.get("evaluator")
    if ev:
        parts.append(
            f"LongPPL key tokens judged by {ev['name']!r} (Fang et al.: trunc_len {ev.get('trunc_len')}, "
            f"sliding_window {ev.get('sliding_window')}, alpha {ev['alpha']}, beta {ev['beta']}; tokenizer "
            f"{ev.get('tokenizer')}): {ev['key_tokens']} of {ev['eligible_tokens']} candidate evaluator tokens"
        )
    skipped = results.get("skipped_tasks") or []
    if skipped:
        parts.append("\n".join(f"skipped {sk['task']} at length {sk['length']}: {sk['reason']}" for sk in skipped))
    return "\n\n".join(parts) if parts else "(no metrics)"


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
