"""``build_report``: the demo's results dict in, a report folder out.

Writes into ``out_dir`` (each file atomically; a rerun replaces them):

- ``results.json``: the validated input with ``runs[i].curve`` (from each run's ``log.jsonl``),
  ``aggregate`` (means, stds, seed-paired differences: tokenweight.report.metrics) and ``verdict``
  (the caller's, else tokenweight.report.verdict's) filled in, plus ``sample`` (the heat map's
  numbers) when given: every number the report shows;
- ``report.md`` and ``index.html`` (self-contained, figures embedded);
- the PNG figures of tokenweight.report.plots.

The input dict is not modified.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

from tokenweight.io_utils import atomic_write_json, atomic_write_text
from tokenweight.report.heatmap import sample_html
from tokenweight.report.html import render_index
from tokenweight.report.markdown import render_markdown
from tokenweight.report.metrics import aggregate
from tokenweight.report.plots import write_plots
from tokenweight.report.schema import validate_results
from tokenweight.report.tables import all_tables
from tokenweight.report.training import decimate, read_log
from tokenweight.report.verdict import auto_verdict


def complete_results(results: Mapping, sample: Mapping | None = None) -> dict:
    """A validated deep copy of ``results`` with curves, aggregate and verdict filled in."""
    res = copy.deepcopy(dict(results))
    validate_results(res)
    for run in res["runs"]:
        if run.get("curve") is None and run.get("log_path"):
            run["curve"] = decimate(read_log(run["log_path"]))
    res["aggregate"] = aggregate(res)
    verdict = res.get("verdict") or {}
    if not verdict.get("text") or verdict.get("auto"):  # an automatic verdict follows the numbers
        res["verdict"] = auto_verdict(res["aggregate"])
    if sample is not None:
        res["sample"] = {k: v for k, v in sample.items()}
    return validate_results(res)


def build_report(results: dict, out_dir, *, sample: dict | None = None) -> dict:
    """Write report.md, index.html, results.json and the figures into ``out_dir``; return what
    results.json holds (the completed results).

    Args:
        results: the results document (tokenweight.report.schema, docs/REPORT.md).
        out_dir: the report folder (created when missing).
        sample: the token heat map's numbers (``tokenweight.report.heatmap.compute_heatmap``):
            drawn in index.html, and its weights give the weight histograms.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = complete_results(results, sample)
    tables = all_tables(res, res["aggregate"])
    figures = write_plots(res, out, sample)
    heat = sample_html(sample) if sample else None
    atomic_write_json(out / "results.json", res)
    atomic_write_text(out / "report.md", render_markdown(res, tables, figures, heat is not None))
    atomic_write_text(out / "index.html", render_index(res, tables, figures, heat))
    return res
