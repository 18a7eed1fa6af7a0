"""``index.html``: the whole report in one self-contained file.

Self-contained means it opens offline, mailed or archived, years later: the CSS is inline, every
figure is embedded as a ``data:image/png;base64`` URI, and there is no script and no reference to
any other file or host. Every text that comes from the inputs (run names, specs, config values,
tokens) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from tokenweight.report.plots import caption
from tokenweight.report.tables import Table, to_html

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
  padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em}
h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.meta{color:#666;font-size:.9em}
.verdict{background:#f6f8fa;border-left:4px solid #4a7;padding:.6em 1em;white-space:normal}
table.tw-table{border-collapse:collapse;margin:.8em 0;font-size:.88em}
table.tw-table caption{text-align:left;font-weight:600;padding:.3em 0}
.tw-wrap{max-width:100%;overflow-x:auto}
table.tw-table th,table.tw-table td{border:1px solid #ddd;padding:.25em .55em;text-align:right;white-space:nowrap}
table.tw-table th:first-child{text-align:left}
table.tw-table thead th{background:#f3f3f3;white-space:normal;vertical-align:bottom}
td.better{background:#dff3e3} td.worse{background:#fbe3e3}
p.note{color:#666;font-size:.85em;margin-top:-.4em}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:.15em 1em;font-size:.88em}
dl.kv dt{font-weight:600} dl.kv dd{margin:0;font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
"""


def data_uri(png: Path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def _kv(mapping: Mapping | None) -> str:
    """A definition list of a mapping; nested values as compact JSON."""
    if not mapping:
        return "<p class='meta'>(none)</p>"
    items = []
    for k, v in mapping.items():
        text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, ensure_ascii=False)
        items.append(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(text)}</dd>")
    return '<dl class="kv">' + "".join(items) + "</dl>"


def verdict_html(text: str) -> str:
    """Verdict text -> paragraphs, with runs of ``- `` lines as a list."""
    out, items = [], []
    for line in text.splitlines():
        if line.startswith("- "):
            items.append(f"<li>{html.escape(line[2:])}</li>")
            continue
        if items:
            out.append("<ul>" + "".join(items) + "</ul>")
            items = []
        if line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    if items:
        out.append("<ul>" + "".join(items) + "</ul>")
    return '<div class="verdict">' + "".join(out) + "</div>"


def model_counts(results: Mapping) -> str:
    """``15 run(s)``, ``2 run(s), 1 other evaluated model(s)`` or, without runs, ``3 evaluated model(s)``."""
    models = len(results.get("models") or [])
    if not results["runs"]:
        return f"{models + (1 if results.get('base') else 0)} evaluated model(s)"
    return f"{len(results['runs'])} run(s)" + (f", {models} other evaluated model(s)" if models else "")


def render_index(results: Mapping, tables: Sequence[Table], figures: Sequence[Path], heatmap: str | None) -> str:
    """The complete ``index.html`` text."""
    esc = html.escape
    cfg = results["config"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>tokenweight report: n = {cfg['n']}, w = {cfg['window']}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Token weighting for long context: report</h1>",
        f"<p class='meta'>tokenweight {esc(str(results.get('tokenweight_version', '?')))}, "
        f"created {esc(str(results.get('created', '?')))}; long context n = {cfg['n']}, native window "
        f"w = {cfg['window']}; {model_counts(results)}. Every number is in results.json.</p>",
    ]
    verdict = results.get("verdict") or {}
    if verdict.get("text"):
        parts += ["<h2>Verdict</h2>", verdict_html(verdict["text"])]
    parts.append("<h2>Results</h2>")
    parts += [f'<div class="tw-wrap">{to_html(t)}</div>' for t in tables]  # a table wider than the page scrolls alone
    if figures:
        parts.append("<h2>Figures</h2>")
        for fig in figures:
            parts.append(
                f'<figure><img src="{data_uri(fig)}" alt="{esc(fig.stem, quote=True)}">'
                f"<figcaption>{esc(caption(fig))}</figcaption></figure>"
            )
    if heatmap:
        parts += [
            "<h2>Token weights on a sample</h2>",
            "<p class='meta'>Every token coloured by its weight under each scheme; hover a token "
            "for its long- and short-context NLL and its weight.</p>",
            heatmap,
        ]
    parts.append("<h2>Setup</h2><h3>Config</h3>" + _kv(cfg))
    ev = results.get("evaluation") or {}
    if ev:
        parts.append(
            "<h3>Evaluation</h3>"
            + _kv({k: ev[k] for k in ("data", "evaluator", "config", "skipped_tasks", "seconds") if k in ev})
        )
    parts.append("<h3>Machine</h3>" + _kv(results.get("machine")))
    others = [m for m in [results.get("base")] + list(results.get("models") or []) if m]
    if others:
        parts.append("<h3>Models</h3>")
        parts.append(_kv({m["name"]: m.get("path") or m["eval"].get("source") for m in others}))
    if results["runs"]:
        parts.append("<h3>Runs</h3>")
        for run in results["runs"]:
            info = {k: run.get(k) for k in ("scheme", "scorer", "seed", "path", "log_path") if run.get(k) is not None}
            info.update(run.get("train_summary") or {})
            parts.append(f"<h4>{esc(run['name'])}</h4>" + _kv(info))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
