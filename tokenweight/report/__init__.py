"""The report of an evaluation (the demo's, or any ``tokenweight eval``'s, with or without training
runs): results.json, report.md, a self-contained index.html, figures; the token heat map.

Python API (names load lazily)::

    from tokenweight.report import assemble_results, build_report, compute_heatmap

    results = assemble_results(eval_doc, config={"n": 1024, "window": 256}, runs=[...], base="base")
    sample = compute_heatmap(model, scorer, tokenizer, text, ["dense:0.75", "sparse:0.3"], window=256)
    build_report(results, "runs/report", sample=sample)

Modules: ``schema`` (the results document and its validator), ``training`` (log.jsonl, summaries),
``metrics`` (per-run values, means over seeds, seed-paired differences), ``verdict``, ``tables``
(tables as data; markdown, HTML and plain text), ``plots`` (every PNG figure: an evaluation's and
a report's), ``evaluation`` (one evaluation's output folder: results.json, table.txt, figures),
``heatmap``, ``markdown``, ``html``, ``build``. The schema is documented in docs/REPORT.md.
"""

from __future__ import annotations

from tokenweight._lazy import lazy_exports

_EXPORTS = {
    "build_report": "tokenweight.report.build",
    "complete_results": "tokenweight.report.build",
    "assemble_results": "tokenweight.report.schema",
    "validate_results": "tokenweight.report.schema",
    "SchemaError": "tokenweight.report.schema",
    "SCHEMA_VERSION": "tokenweight.report.schema",
    "heatmap_html": "tokenweight.report.heatmap",
    "compute_heatmap": "tokenweight.report.heatmap",
    "aggregate": "tokenweight.report.metrics",
    "write_outputs": "tokenweight.report.evaluation",
    "format_tables": "tokenweight.report.evaluation",
    "write_evaluation_plots": "tokenweight.report.plots",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
