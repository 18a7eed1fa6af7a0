"""The output folder of one evaluation (``tokenweight eval``, the stage
:mod:`tokenweight.stages.evaluate`): ``results.json``, ``table.txt`` (the tables printed on the
console) and the PNG figures (:func:`tokenweight.report.plots.write_evaluation_plots`).

The tables are :class:`tokenweight.report.tables.Table` objects rendered as plain text
(:func:`tokenweight.report.tables.to_text`): perplexity and LongPPL by model, episode recall by
distance, tasks by length, RULER's summary and the lm-evaluation-harness metrics (the rows that
:func:`tokenweight.evaluate.results.shown_rows` selects), in the models' order.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tokenweight.evaluate.results import check_results, metrics_of, shown_rows
from tokenweight.report.tables import Table, to_text


def write_outputs(results: dict, out_dir: str | Path) -> dict[str, Any]:
    """Write ``results.json``, ``table.txt`` and the PNG plots into ``out_dir`` (atomically).

    Returns ``{"json": path, "table": path, "plots": [paths], "text": table}``. Holds the
    folder's :func:`tokenweight.outputs.output_lock` (a second writer is refused at once).
    """
    from tokenweight.io_utils import atomic_write_json, atomic_write_text
    from tokenweight.outputs import output_lock
    from tokenweight.report.plots import write_evaluation_plots

    check_results(results)
    out = Path(out_dir)
    with output_lock(out):
        out.mkdir(parents=True, exist_ok=True)
        text = format_tables(results)
        atomic_write_json(out / "results.json", results)
        atomic_write_text(out / "table.txt", text + "\n")
        plots = write_evaluation_plots(results, out)
    return {"json": out / "results.json", "table": out / "table.txt", "plots": plots, "text": text}


# ----------------------------------------------------------------------------- tables


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if math.isinf(x):
            return "inf"
        return f"{x:.{digits}f}"
    return str(x)


def _span(lo: int, hi: int) -> str:
    return f"{lo}-{hi}"


def lm_table(results: dict) -> Table | None:
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
    return Table(title, headers, rows)


def episode_table(results: dict) -> Table | None:
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
    return Table("Episode recall: exact match (token accuracy) by distance", headers, rows)


def task_table(results: dict) -> Table | None:
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
    return Table(title, headers, rows)


def ruler_table(results: dict) -> Table | None:
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
    return Table(title, ["length"] + [m["name"] for m in models], rows)


def harness_table(results: dict) -> Table | None:
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
    return Table(title, ["task", "metric"] + [m["name"] for m in models], rows)


def format_tables(results: dict) -> str:
    """Every table of a results document, separated by blank lines."""
    tables = (lm_table(results), episode_table(results), task_table(results), ruler_table(results))
    tables += (harness_table(results),)
    parts = [to_text(t) for t in tables if t]
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
