"""The report's tables, built once as data and rendered as markdown and as HTML.

Tables (their rows are the metrics of tokenweight.report.metrics that the evaluation provides,
their columns the models: a report has far more metrics than settings, so the tables grow
downwards and fit the page width):

- *comparison*: the base model, the evaluated models without runs, and every group (scheme +
  scorer), ``mean ± std`` over seeds;
- *vs uniform*: every group's seed-paired difference to the uniform group, ``mean ± std (n)``;
- *tasks*: one row per task at length ``L``, same layout as the comparison;
- *lm-evaluation-harness*: the requested lm-eval tasks' metrics, same layout, and their
  seed-paired differences to uniform;
- *vs base*: every evaluated model without runs minus the base model (single values);
- *runs*: every single run (one row per seed, metrics as columns), the numbers behind the means
  (the perplexities in a second table when there are many metrics);
- *selection*: the units a selection kept and dropped;
- *trade-off*: the frontier figure's numbers, each setting judged against the target.

A :class:`Table` holds already formatted cells, so the markdown and the HTML show identical text;
:func:`to_text` renders one as plain text (the console tables of an evaluation,
:mod:`tokenweight.report.evaluation`).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tokenweight.report.schema import run_label
from tokenweight.report.verdict import FRONTIER_TARGET, frontier_points, meets_target

DASH = "–"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""
    #: per row, per column: "better" / "worse" / "" (colours the vs-uniform cells in HTML)
    marks: list[list[str]] = field(default_factory=list)


def fmt(x: float | None, digits: int) -> str:
    """A number with ``digits`` decimals; None as a dash."""
    return DASH if x is None else f"{x:.{digits}f}"


def fmt_stats(s: Mapping, digits: int, signed: bool = False, show_n: bool = False) -> str:
    """``mean ± std`` (std shown only when there are >= 2 values), optionally ``(n=k)``."""
    if s.get("mean") is None:
        return DASH
    text = _signed(s["mean"], digits) if signed else f"{s['mean']:.{digits}f}"
    if s.get("std") is not None:
        text += f" ± {s['std']:.{digits}f}"
    if show_n:
        text += f" (n={s['n']})"
    return text


def _metrics(agg: Mapping, *tables: str) -> list[Mapping]:
    return [m for m in agg["metrics"] if m["table"] in tables]


def _columns(agg: Mapping, base_name: str | None) -> list[tuple[str, str, Mapping, bool]]:
    """``(name, seeds, values, is_group)`` of every model column: base, models, groups."""
    cols = []
    if agg.get("base") is not None and base_name:
        cols.append((base_name, DASH, agg["base"], False))
    cols += [(m["name"], DASH, m["values"], False) for m in agg.get("models") or []]
    cols += [(g["label"], str(len(g["seeds"])), g["stats"], True) for g in agg["groups"]]
    return cols


def _stat_table(agg: Mapping, base_name: str | None, table: str, title: str, note: str) -> Table | None:
    """Metrics as rows, models as columns (a report has many more metrics than settings, so the
    table grows downwards and fits the page; the seeds row only when runs were grouped)."""
    metrics = _metrics(agg, table)
    cols = _columns(agg, base_name)
    if not metrics or not cols:
        return None
    rows = [["seeds"] + [c[1] for c in cols]] if any(c[3] for c in cols) else []
    for m in metrics:
        cells = [
            fmt_stats(v[m["key"]], m["digits"]) if grouped else fmt(v[m["key"]], m["digits"]) for *_, v, grouped in cols
        ]
        rows.append([m["label"]] + cells)
    return Table(title, ["metric"] + [c[0] for c in cols], rows, note)


def _arrows(metrics: Sequence[Mapping]) -> str:
    return ", ".join(f"{m['label']} {'↑' if m['better'] == 'higher' else '↓'}" for m in metrics if m["better"])


def _note(agg: Mapping, what: str, metrics: Sequence[Mapping]) -> str:
    """``what`` (how a cell is made), the averaging over seeds when runs were grouped, the arrows."""
    arrows = _arrows(metrics)
    parts = [what] if what else []
    if agg["groups"]:
        parts.append("mean ± sample std over seeds (a single seed shows no std)")
    if arrows:
        parts.append(f"higher/lower is better: {arrows}")
    return "; ".join(parts) + "." if parts else ""


def comparison_table(agg: Mapping, base_name: str | None) -> Table | None:
    return _stat_table(agg, base_name, "main", "Comparison", _note(agg, "", _metrics(agg, "main")))


def tasks_table(agg: Mapping, base_name: str | None) -> Table | None:
    what = "likelihood token accuracy of the answer, all needle depths pooled"
    return _stat_table(agg, base_name, "tasks", f"Tasks at length {agg.get('task_length')}", _note(agg, what, []))


def harness_table(agg: Mapping, base_name: str | None) -> Table | None:
    what = "lm-eval's metrics (tokenweight eval --harness) of the requested tasks"
    return _stat_table(agg, base_name, "harness", "lm-evaluation-harness", _note(agg, what, _metrics(agg, "harness")))


def reference_table(agg: Mapping, tables: Sequence[str] = ("main", "tasks"), title: str | None = None) -> Table | None:
    """Paired differences to the uniform group (metrics as rows, settings as columns), with
    better/worse marks from the verdict's rule."""
    from tokenweight.report.verdict import judge

    ref = agg.get("reference")
    groups = [g for g in agg["groups"] if g["vs_reference"]]
    metrics = _metrics(agg, *tables)
    if ref is None or not groups or not metrics:
        return None
    rows, marks = [], []
    for m in metrics:
        ds = [g["vs_reference"][m["key"]] for g in groups]
        rows.append([m["label"]] + [fmt_stats(d, m["digits"], signed=True, show_n=True) for d in ds])
        marks.append([""] + [j if (j := judge(d, m["better"])) in ("better", "worse") else "" for d in ds])
    note = (
        f"difference to {ref} per seed (same seed = same data order), mean ± sample std over the n "
        "paired seeds; marked better/worse when |mean| > 2 standard errors."
    )
    return Table(title or f"Difference vs {ref}", ["metric"] + [g["label"] for g in groups], rows, note, marks)


def base_table(agg: Mapping, base_name: str | None) -> Table | None:
    """Each evaluated model (without a run) minus the base model: single values, nothing to pair."""
    models = [m for m in agg.get("models") or [] if m["vs_base"] is not None]
    metrics = _metrics(agg, "main", "tasks", "harness")
    if not models or not base_name or not metrics:
        return None
    rows = [[m["label"]] + [_signed(x["vs_base"][m["key"]], m["digits"]) for x in models] for m in metrics]
    note = f"value minus {base_name}'s, one evaluation each (no runs to pair, so no noise estimate)."
    return Table(f"Difference vs {base_name}", ["metric"] + [m["name"] for m in models], rows, note)


def _signed(x: float | None, digits: int) -> str:
    """``+0.012``; a value that rounds to zero is ``+0.000``, never ``-0.000``."""
    if x is None:
        return DASH
    text = f"{x:+.{digits}f}"
    return "+" + text[1:] if float(text) == 0 else text


#: at most this many metric columns in one runs table (more: the perplexities get their own table)
RUNS_COLUMNS = 8


def runs_tables(results: Mapping, agg: Mapping) -> list[Table]:
    """One row per run: every seed's own numbers (metrics as columns, as many as fit a page: with
    more than :data:`RUNS_COLUMNS` metrics, the perplexities are a second table)."""
    if not results["runs"]:
        return []
    metrics = _metrics(agg, "main")
    by_name = {}
    for g in agg["groups"]:
        for i, name in enumerate(g["runs"]):
            by_name[name] = {m["key"]: g["values"][m["key"]][i] for m in metrics}
    parts = [("Runs", metrics)]
    if len(metrics) > RUNS_COLUMNS:
        ppl = [m for m in metrics if m["key"].startswith("ppl")]
        parts = [("Runs", [m for m in metrics if m not in ppl]), ("Runs: perplexity", ppl)]
    tables = []
    for title, ms in parts:
        headers = ["run", "group", "seed"] + [m["label"] for m in ms]
        rows = [
            [r["name"], run_label(r), str(r["seed"])] + [fmt(by_name[r["name"]][m["key"]], m["digits"]) for m in ms]
            for r in results["runs"]
        ]
        tables.append(Table(title, headers, rows, "every run on its own (the values behind the means)."))
    return tables


def selection_table(results: Mapping) -> Table | None:
    """The selection a run trained on (``results.selection``): kept against dropped units, their mean
    score and their long-range episodes (the injected copies farther apart than w) per 1000 targets."""
    sel = results.get("selection")
    if not sel:
        return None
    rows = []
    for side in ("kept", "dropped"):
        s = sel[side]
        eps = s.get("long_episodes_per_1k")
        rows.append([side, str(s["units"]), f"{s['targets']:,}", fmt(s.get("mean_score"), 4), fmt(eps, 2)])
    title = f"Selection {sel['label']}: {sel['method']}, keep {sel['keep']:g} of the {sel['unit']}s"
    note = (
        "the units kept and dropped by tokenweight select (docs/DATA.md): the mean of their targets' scores and "
        "their long-range episodes (definition and use at least w apart) per 1000 targets."
    )
    return Table(title, [sel["unit"] + "s", "units", "targets", "mean score", "long episodes / 1k"], rows, note)


def frontier_table(results: Mapping) -> Table | None:
    """The numbers of the frontier figure: every setting's paired task gain and short-context cost
    against the reference, with standard errors, and whether it reaches the target."""
    points = frontier_points(results)
    if not points:
        return None

    def pm(x: float, se: float | None, digits: int) -> str:
        return f"{x:+.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")

    rows = [
        [
            p["label"],
            str(p["seeds"]),
            pm(p["tasks"], p["tasks_se"], 3),
            pm(p["ppl_short_pct"], p["ppl_short_pct_se"], 1) + "%",
            meets_target(p),
        ]
        for p in sorted(points, key=lambda p: -p["tasks"])
    ]
    gain, cost = FRONTIER_TARGET["tasks"], FRONTIER_TARGET["ppl_short_pct"]
    title = f"The trade-off: task gain against short-context cost (target: +{gain:.2f} at <= {cost:g}%)"
    note = (
        "paired against the reference by seed, mean ± standard error; 'clearly': both the gain and the cost "
        "meet the target beyond 2 standard errors; 'on the means': only the means do (frontier.png plots it)."
    )
    headers = ["setting", "seeds", "tasks gain", "ppl<w cost", "meets the target"]
    return Table(title, headers, rows, note)


def all_tables(results: Mapping, agg: Mapping) -> list[Table]:
    base_name = (results.get("base") or {}).get("name")
    harness_vs = "lm-evaluation-harness: difference vs " + str(agg.get("reference"))
    tables = [
        comparison_table(agg, base_name),
        reference_table(agg),
        tasks_table(agg, base_name),
        harness_table(agg, base_name),
        reference_table(agg, ("harness",), harness_vs),
        base_table(agg, base_name),
        *runs_tables(results, agg),
        selection_table(results),
        frontier_table(results),
    ]
    return [t for t in tables if t is not None]


# ----------------------------------------------------------------------------- rendering


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def to_markdown(table: Table) -> str:
    """A GitHub-flavoured markdown table under a ``###`` title, the note in italics below."""
    lines = [f"### {table.title}", ""]
    lines.append("| " + " | ".join(_md_cell(h) for h in table.headers) + " |")
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(table.headers) - 1)) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    if table.note:
        lines += ["", f"*{table.note}*"]
    return "\n".join(lines)


def to_html(table: Table) -> str:
    """An HTML ``<table>`` (every text escaped) with a caption; marked cells get a class."""
    esc = html.escape
    out = [f'<table class="tw-table"><caption>{esc(table.title)}</caption>', "<thead><tr>"]
    out += [f"<th>{esc(h)}</th>" for h in table.headers]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(table.rows):
        marks = table.marks[i] if i < len(table.marks) else [""] * len(row)
        cells = []
        for j, c in enumerate(row):
            tag = "th" if j == 0 else "td"
            cls = f' class="{marks[j]}"' if marks[j] else ""
            cells.append(f"<{tag}{cls}>{esc(c)}</{tag}>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    if table.note:
        out.append(f'<p class="note">{esc(table.note)}</p>')
    return "\n".join(out)


def to_text(table: Table) -> str:
    """Plain text (the console and ``table.txt`` of an evaluation): the title, then the columns
    padded to their widths (the first left-aligned, the others right-aligned) under a rule of
    dashes; the note is not shown."""
    cells = [list(map(str, table.headers))] + [[str(c) for c in r] for r in table.rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(table.headers))]
    lines = [table.title]
    for k, r in enumerate(cells):
        parts = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(parts).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def tables_markdown(tables: Sequence[Table]) -> str:
    return "\n\n".join(to_markdown(t) for t in tables)
