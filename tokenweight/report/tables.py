"""The report's tables, built once as data and rendered as markdown and as HTML.

Tables (columns are the metrics of tokenweight.report.metrics that the evaluation provides):

- *comparison*: the base model and every group (scheme + scorer), ``mean ± std`` over seeds;
- *vs uniform*: every group's seed-paired difference to the uniform group, ``mean ± std (n)``;
- *tasks*: one column per task at length ``L``, same layout as the comparison;
- *runs*: every single run (one row per seed), the numbers behind the means.

A :class:`Table` holds already formatted cells, so the markdown and the HTML show identical text.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tokenweight.report.schema import run_label

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
    text = f"{s['mean']:+.{digits}f}" if signed else f"{s['mean']:.{digits}f}"
    if s.get("std") is not None:
        text += f" ± {s['std']:.{digits}f}"
    if show_n:
        text += f" (n={s['n']})"
    return text


def _metrics(agg: Mapping, table: str) -> list[Mapping]:
    return [m for m in agg["metrics"] if m["table"] == table]


def _stat_table(agg: Mapping, base_name: str | None, table: str, title: str, note: str) -> Table | None:
    metrics = _metrics(agg, table)
    if not metrics:
        return None
    headers = ["model", "seeds"] + [m["label"] for m in metrics]
    rows = []
    if agg.get("base") is not None and base_name:
        rows.append([base_name, DASH] + [fmt(agg["base"][m["key"]], m["digits"]) for m in metrics])
    for g in agg["groups"]:
        rows.append(
            [g["label"], str(len(g["seeds"]))] + [fmt_stats(g["stats"][m["key"]], m["digits"]) for m in metrics]
        )
    return Table(title, headers, rows, note)


def comparison_table(agg: Mapping, base_name: str | None) -> Table | None:
    arrows = ", ".join(
        f"{m['label']} {'↑' if m['better'] == 'higher' else '↓'}" for m in _metrics(agg, "main") if m["better"]
    )
    note = (
        f"mean ± sample std over seeds (a single seed shows no std); higher/lower is better: {arrows}."
        if arrows
        else "mean ± sample std over seeds."
    )
    return _stat_table(agg, base_name, "main", "Comparison", note)


def tasks_table(agg: Mapping, base_name: str | None) -> Table | None:
    L = agg.get("task_length")
    return _stat_table(
        agg,
        base_name,
        "tasks",
        f"Tasks at length {L}",
        "likelihood token accuracy of the answer, all needle depths pooled; mean ± std over seeds.",
    )


def reference_table(agg: Mapping) -> Table | None:
    """Paired differences to the uniform group, with better/worse marks from the verdict's rule."""
    from tokenweight.report.verdict import judge

    ref = agg.get("reference")
    groups = [g for g in agg["groups"] if g["vs_reference"]]
    metrics = _metrics(agg, "main") + _metrics(agg, "tasks")
    if ref is None or not groups:
        return None
    headers = ["model"] + [m["label"] for m in metrics]
    rows, marks = [], []
    for g in groups:
        d = g["vs_reference"]
        rows.append([g["label"]] + [fmt_stats(d[m["key"]], m["digits"], signed=True, show_n=True) for m in metrics])
        marks.append(
            [""] + [j if (j := judge(d[m["key"]], m["better"])) in ("better", "worse") else "" for m in metrics]
        )
    note = (
        f"difference to {ref} per seed (same seed = same data order), mean ± sample std over the n "
        "paired seeds; marked better/worse when |mean| > 2 standard errors."
    )
    return Table(f"Difference vs {ref}", headers, rows, note, marks)


def runs_table(results: Mapping, agg: Mapping) -> Table | None:
    """One row per run: every seed's own numbers."""
    if not results["runs"]:
        return None
    metrics = _metrics(agg, "main")
    by_name = {}
    for g in agg["groups"]:
        for i, name in enumerate(g["runs"]):
            by_name[name] = {m["key"]: g["values"][m["key"]][i] for m in metrics}
    headers = ["run", "group", "seed"] + [m["label"] for m in metrics]
    rows = [
        [r["name"], run_label(r), str(r["seed"])] + [fmt(by_name[r["name"]][m["key"]], m["digits"]) for m in metrics]
        for r in results["runs"]
    ]
    return Table("Runs", headers, rows, "every run on its own (the values behind the means).")


def all_tables(results: Mapping, agg: Mapping) -> list[Table]:
    base_name = (results.get("base") or {}).get("name")
    tables = [
        comparison_table(agg, base_name),
        reference_table(agg),
        tasks_table(agg, base_name),
        runs_table(results, agg),
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


def tables_markdown(tables: Sequence[Table]) -> str:
    return "\n\n".join(to_markdown(t) for t in tables)
