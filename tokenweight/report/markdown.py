"""``report.md``: the report as markdown, readable as plain text and rendered by any forge.

Same content as ``index.html`` except the token heat map (colour needs HTML): tables as GitHub
markdown, figures as links to the PNG files next to it, the setup as compact JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from tokenweight.report.html import model_counts
from tokenweight.report.plots import caption
from tokenweight.report.tables import Table, tables_markdown


def render_markdown(results: Mapping, tables: Sequence[Table], figures: Sequence[Path], has_heatmap: bool) -> str:
    """The complete ``report.md`` text; figure links are relative (the PNGs sit beside it)."""
    cfg = results["config"]
    lines = [
        "# Token weighting for long context: report",
        "",
        f"tokenweight {results.get('tokenweight_version', '?')}, created {results.get('created', '?')}; "
        f"long context n = {cfg['n']}, native window w = {cfg['window']}; {model_counts(results)}. "
        "Every number is in `results.json`; `index.html` is this report with embedded figures"
        + (" and the token heat map." if has_heatmap else "."),
    ]
    verdict = (results.get("verdict") or {}).get("text")
    if verdict:
        lines += ["", "## Verdict", "", verdict]
    lines += ["", "## Results", "", tables_markdown(tables)]
    if figures:
        lines += ["", "## Figures"]
        for fig in figures:
            lines += ["", f"![{fig.stem}]({fig.name})", "", f"*{caption(fig)}*"]
    lines += ["", "## Setup", "", "Config:", "", "```json", json.dumps(cfg, indent=2, sort_keys=True), "```"]
    ev = results.get("evaluation") or {}
    if ev.get("data") or ev.get("evaluator"):
        shown = {k: ev[k] for k in ("data", "evaluator") if ev.get(k)}
        lines += ["", "Evaluation:", "", "```json", json.dumps(shown, indent=2, sort_keys=True), "```"]
    skipped = ev.get("skipped_tasks") or []
    if skipped:
        lines += ["", "Skipped tasks:", ""]
        lines += [f"- {s.get('task')} at length {s.get('length')}: {s.get('reason')}" for s in skipped]
    if results.get("machine"):
        lines += ["", "Machine:", "", "```json", json.dumps(results["machine"], indent=2, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"
