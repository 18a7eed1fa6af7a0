"""The PNG figures of an evaluation and of a report (matplotlib ``Figure`` objects, no pyplot
global state, no backend switch for the host program; saved atomically).

An evaluation's figures (:func:`write_evaluation_plots`: ``tokenweight eval``'s output folder, and
the report's evaluation figures):

- ``ppl_by_position.png``: perplexity by position bucket, one line per model, the native window
  marked: where long context helps (or where weighting costs) at a glance.
- ``episodes_by_distance.png``: episode recall (exact match and token accuracy) by distance.
- ``tasks_by_length.png``: likelihood token accuracy by length, one panel per task, one line per
  model; lengths inside the native window are left of the dashed line.
- ``heatmap_<task>.png``: for tasks with needle depths, the familiar NIAH heat map (depth x length,
  colour = accuracy), one panel per model on a shared colour scale.

A report's figures (:func:`write_plots`):

- ``training_curves.png``: weighted loss and plain cross-entropy against the optimizer step, one
  line per run (colour = group, line style = seed), plus the logged weight statistics (std, max,
  share of zero weights) when the log has them. The weighted loss is what each run optimises, so
  it is comparable across runs of one scheme only; the plain loss is comparable across all runs.
- ``weight_histograms.png``: the distribution of token weights under each scheme on the sample
  sequence of the heat map (one panel per scheme).
- the evaluation's figures above, drawn for the base model, each evaluated model without runs,
  and one *mean over seeds* per group (tokenweight.report.metrics.mean_entry).

Colours: group ``i`` uses the same colour in every figure (the evaluation plots colour models in
order: the base model first, then the models without runs, then the groups).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from tokenweight.io_utils import atomic_file
from tokenweight.report.metrics import groups, mean_entry
from tokenweight.report.verdict import FRONTIER_TARGET, frontier_points

#: log fields drawn in training_curves.png: (field, panel title)
CURVE_PANELS = (
    ("weighted_loss", "weighted loss (optimised)"),
    ("plain_loss", "plain cross-entropy"),
    ("weight_std", "weight std"),
    ("weight_max", "weight max"),
    ("weight_zero_share", "share of zero weights"),
)
_STYLES = ("-", "--", ":", "-.")


#: panel size (inches) and resolution of an evaluation's figures; the report's own: (4.6, 3.3), 100
EVAL_SIZE, EVAL_DPI = (5.0, 3.6), 110


def _figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (4.6, 3.3)):
    """A constrained-layout figure of ``nrows x ncols`` panels of ``size`` inches; ``axes[row][col]``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig, path: Path, dpi: int = 100) -> Path:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def _colour(i: int) -> str:
    return f"C{i % 10}"


# ----------------------------------------------------------------------------- an evaluation's figures


def _window(results: dict) -> int | None:
    return (results.get("config") or {}).get("window")


def plot_ppl_by_position(results: dict, path: Path) -> Path | None:
    models = [m for m in results["models"] if m["perplexity"] is not None]
    if not models:
        return None
    fig, axes = _figure(size=EVAL_SIZE)
    ax = axes[0][0]
    for m in models:
        b = m["perplexity"]["by_position"]
        xs = [(e["start"] + e["end"]) / 2 for e in b if e["ppl"] is not None]
        ys = [e["ppl"] for e in b if e["ppl"] is not None]
        ax.plot(xs, ys, marker="o", label=m["name"])
    w = _window(results)
    if w:
        ax.axvline(w, color="grey", linestyle="--", linewidth=1, label=f"w = {w}")
    ax.set_xlabel("token position (bucket centre)")
    ax.set_ylabel("perplexity")
    ax.set_title("Perplexity by position")
    ax.legend(fontsize="small")
    return _save(fig, path, EVAL_DPI)


def plot_episodes(results: dict, path: Path) -> Path | None:
    models = [m for m in results["models"] if m["episodes"] is not None and m["episodes"]["overall"]["episodes"]]
    if not models:
        return None
    fig, axes = _figure(ncols=2, size=EVAL_SIZE)
    w = _window(results)
    for ax, key, label in (
        (axes[0][0], "exact_match", "exact match"),
        (axes[0][1], "token_accuracy", "token accuracy"),
    ):
        for m in models:
            b = [e for e in m["episodes"]["by_distance"] if e[key] is not None]
            ax.plot([(e["start"] + e["end"]) / 2 for e in b], [e[key] for e in b], marker="o", label=m["name"])
        if w:
            ax.axvline(w, color="grey", linestyle="--", linewidth=1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("distance definition -> use (tokens, bucket centre)")
        ax.set_ylabel(label)
        ax.set_title(f"Episode recall: {label}")
        ax.legend(fontsize="small")
    return _save(fig, path, EVAL_DPI)


def _task_rows_by_model(results: dict) -> dict[str, dict[str, list[dict]]]:
    """task -> model name -> its rows (all depths)."""
    out: dict[str, dict[str, list[dict]]] = {}
    for m in results["models"]:
        for r in m["tasks"]:
            out.setdefault(r["task"], {}).setdefault(m["name"], []).append(r)
    return out


def plot_tasks_by_length(results: dict, path: Path) -> Path | None:
    tasks = _task_rows_by_model(results)
    if not tasks:
        return None
    names = sorted(tasks)
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = _figure(ncols, nrows, size=(4.2, 3.2))
    w = _window(results)
    for i, task in enumerate(names):
        ax = axes[i // ncols][i % ncols]
        for model, rows in tasks[task].items():
            pooled = sorted((r for r in rows if r["depth"] is None), key=lambda r: r["length"])
            ax.plot(
                [r["length"] for r in pooled],
                [r["likelihood"]["token_accuracy"] for r in pooled],
                marker="o",
                label=model,
            )
        if w:
            ax.axvline(w, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log", base=2)
        lengths = sorted({r["length"] for rows in tasks[task].values() for r in rows})
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.minorticks_off()
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(task)
        ax.set_xlabel("length (tokens)")
        ax.set_ylabel("token accuracy")
        ax.legend(fontsize="x-small")
    for j in range(len(names), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    return _save(fig, path, EVAL_DPI)


def plot_depth_heatmap(results: dict, task: str, path: Path) -> Path | None:
    """Depth x length heat map of likelihood token accuracy, one panel per model."""
    per_model = _task_rows_by_model(results).get(task, {})
    grids = {}
    for model, rows in per_model.items():
        cells = {(r["depth"], r["length"]): r["likelihood"]["token_accuracy"] for r in rows if r["depth"] is not None}
        if cells:
            grids[model] = cells
    if not grids:
        return None
    depths = sorted({d for g in grids.values() for d, _ in g})
    lengths = sorted({n for g in grids.values() for _, n in g})
    fig, axes = _figure(ncols=len(grids), size=(1.2 + 0.9 * len(lengths), 1.2 + 0.45 * len(depths)))
    image = None
    for ax, (model, cells) in zip(axes[0], grids.items()):
        grid = [[cells.get((d, n), float("nan")) for n in lengths] for d in depths]
        image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto", origin="upper")
        ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
        ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
        for yi, row in enumerate(grid):
            for xi, v in enumerate(row):
                if v == v:  # not NaN
                    ax.text(xi, yi, f"{v:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xlabel("length (tokens)")
        ax.set_ylabel("needle depth")
        ax.set_title(f"{task}: {model}", fontsize="medium")
    fig.colorbar(image, ax=list(axes[0]), shrink=0.9, label="token accuracy")
    return _save(fig, path, EVAL_DPI)


def write_evaluation_plots(results: Mapping, out_dir: str | Path) -> list[Path]:
    """Write every figure that an evaluation's results document supports into ``out_dir``; return
    their paths."""
    out = Path(out_dir)
    written = [
        plot_ppl_by_position(results, out / "ppl_by_position.png"),
        plot_episodes(results, out / "episodes_by_distance.png"),
        plot_tasks_by_length(results, out / "tasks_by_length.png"),
    ]
    for task in sorted(_task_rows_by_model(results)):
        written.append(plot_depth_heatmap(results, task, out / f"heatmap_{task}.png"))
    return [p for p in written if p is not None]


# ----------------------------------------------------------------------------- a report's figures


def plot_training_curves(results: Mapping, path: Path) -> Path | None:
    """Loss (and weight statistics) against step for every run that has a curve."""
    grouped = groups(results)
    offset = (1 if results.get("base") else 0) + len(results.get("models") or [])
    panels = [
        (k, t)
        for k, t in CURVE_PANELS
        if any(k in rec for runs in grouped.values() for r in runs for rec in r.get("curve") or [])
    ]
    if not panels:
        return None
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = _figure(ncols, nrows)
    for p, (key, title) in enumerate(panels):
        ax = axes[p // ncols][p % ncols]
        for gi, (label, runs) in enumerate(grouped.items()):
            for si, run in enumerate(runs):
                pts = [(rec["step"], rec[key]) for rec in run.get("curve") or [] if key in rec]
                if pts:
                    ax.plot(
                        *zip(*pts),
                        color=_colour(gi + offset),
                        linestyle=_STYLES[si % len(_STYLES)],
                        linewidth=1.1,
                        label=f"{label} s{run['seed']}",
                    )
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if p == 0:
            ax.legend(fontsize="x-small")
    for j in range(len(panels), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    return _save(fig, path)


def plot_weight_histograms(sample: Mapping, path: Path) -> Path | None:
    """Histogram of the scored tokens' weights, one panel per scheme of ``sample["weights"]``."""
    weights = {k: [x for x in v if x is not None] for k, v in (sample.get("weights") or {}).items()}
    weights = {k: v for k, v in weights.items() if v}
    if not weights:
        return None
    ncols = min(len(weights), 3)
    nrows = math.ceil(len(weights) / ncols)
    fig, axes = _figure(ncols, nrows, size=(4.0, 3.0))
    for p, (scheme, ws) in enumerate(weights.items()):
        ax = axes[p // ncols][p % ncols]
        ax.hist(ws, bins=40, color=_colour(p), alpha=0.85)
        mean = sum(ws) / len(ws)
        zeros = sum(1 for x in ws if x == 0) / len(ws)
        ax.set_title(f"{scheme}\nmean {mean:.2f}, max {max(ws):.2f}, zeros {zeros:.0%}", fontsize="small")
        ax.set_xlabel("token weight")
        ax.set_ylabel("tokens")
        ax.set_yscale("log")
    for j in range(len(weights), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    return _save(fig, path)


def plot_exposure(exposure: Mapping, path: Path) -> Path | None:
    """The training data's exposure histogram (EXACT, tokenweight.exposure): targets per log bucket
    of their effective context (visible same-document prefix), the tail ``e >= τ`` in colour."""
    buckets = {int(k): int(v) for k, v in (exposure.get("buckets") or {}).items()}
    if not buckets:
        return None
    base, tail = float(exposure.get("base", 2.0)), int(exposure["tail"])
    ks = sorted(buckets)
    fig, axes = _figure(1, 1, size=(6.4, 3.4))
    ax = axes[0][0]
    total = sum(buckets.values())
    colours = [_colour(1) if base ** (k + 1) > tail else "0.7" for k in ks]  # a bucket that reaches the tail
    ax.bar(range(len(ks)), [buckets[k] / total for k in ks], color=colours)
    ax.set_xticks(range(len(ks)), [f"{base**k:g}" for k in ks], rotation=45, fontsize="small")
    ax.set_xlabel(f"effective context e (bucket from {base:g}^k)")
    ax.set_ylabel("share of targets")
    share = exposure.get("tail_share")
    ax.set_title(f"{exposure.get('label', 'training data')}: targets with e >= {tail}: {share:.1%}", fontsize="small")
    return _save(fig, path)


def plot_frontier(results: Mapping, path: Path) -> Path | None:
    """The trade-off of every setting against uniform: task gain (y) against short-context perplexity
    cost in percent (x), with standard errors over the paired seeds; the shaded corner is the target
    (``verdict.FRONTIER_TARGET``: at least +10 points of tasks at at most +2% perplexity below w)."""
    points = frontier_points(results)
    if not points:
        return None
    fig, axes = _figure(1, 1, size=(6.0, 4.2))
    ax = axes[0][0]
    target = FRONTIER_TARGET
    xs = [p["ppl_short_pct"] for p in points]
    ys = [p["tasks"] for p in points]
    left, right = min(0.0, *xs) - 1, max(target["ppl_short_pct"], *xs) + 1
    top = max(target["tasks"], *ys) + 0.03
    ax.axhspan(target["tasks"], top, xmin=0, xmax=(target["ppl_short_pct"] - left) / (right - left), color="0.9")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.axvline(0, color="0.6", lw=0.8)
    for i, p in enumerate(points):
        ax.errorbar(
            p["ppl_short_pct"], p["tasks"], xerr=p["ppl_short_pct_se"], yerr=p["tasks_se"], fmt="o", color=_colour(i)
        )
        ax.annotate(
            p["label"], (p["ppl_short_pct"], p["tasks"]), fontsize="x-small", xytext=(4, 3), textcoords="offset points"
        )
    ax.set_xlim(left, right)
    ax.set_ylim(min(0.0, *ys) - 0.03, top)
    ax.set_xlabel("short-context cost: ppl < w vs uniform (%)")
    ax.set_ylabel("task gain vs uniform (tasks at the longest length)")
    ax.set_title("The trade-off, one point per setting (shaded: the target)", fontsize="small")
    return _save(fig, path)


def evaluation_document(results: Mapping) -> dict:
    """An evaluation-shaped document (docs/EVALUATION.md) of the base model, the models without
    runs and each group's mean."""
    models = [dict(results["base"]["eval"], name=results["base"]["name"])] if results.get("base") else []
    models += [dict(m["eval"], name=m["name"]) for m in results.get("models") or []]
    for label, runs in groups(results).items():
        models.append(mean_entry([r["eval"] for r in runs], label))
    ev = dict(results.get("evaluation") or {})
    cfg = dict(ev.get("config") or {})
    cfg.setdefault("window", results["config"]["window"])
    return {**ev, "config": cfg, "models": models}


def write_plots(results: Mapping, out_dir: Path, sample: Mapping | None = None) -> list[Path]:
    """Write every figure the inputs support into ``out_dir``; return the paths, in display order."""
    out_dir = Path(out_dir)
    written = [plot_training_curves(results, out_dir / "training_curves.png")]
    if sample:
        written.append(plot_weight_histograms(sample, out_dir / "weight_histograms.png"))
    if results.get("exposure"):
        written.append(plot_exposure(results["exposure"], out_dir / "exposure_histogram.png"))
    doc = evaluation_document(results)
    if doc["models"]:
        written += write_evaluation_plots(doc, out_dir)
    written.append(plot_frontier(results, out_dir / "frontier.png"))
    return [p for p in written if p is not None]


def caption(path: Path) -> str:
    """What a figure of :func:`write_plots` shows, by file name (for report.md and index.html)."""
    name = Path(path).name
    fixed = {
        "training_curves.png": "Training curves: weighted loss (what each run optimises), plain cross-entropy, "
        "and the logged weight statistics, per run (colour = setting, line style = seed).",
        "weight_histograms.png": "Token weights on the sample sequence under each scheme (log scale).",
        "exposure_histogram.png": "Exposure histogram of the training data: share of targets by the length of "
        "their visible same-document context (log buckets); coloured buckets reach the tail e >= w that "
        "exposure balancing (exact:<α>) up-weights.",
        "ppl_by_position.png": (
            "Perplexity by token position (mean over seeds); the dashed line is the native window w."
        ),
        "episodes_by_distance.png": "Episode recall by distance between definition and use (mean over seeds).",
        "tasks_by_length.png": "Task accuracy (likelihood token accuracy) by length (mean over seeds).",
        "frontier.png": "The trade-off: each setting's task gain against its short-context perplexity cost, "
        "both paired against uniform (mean ± standard error over seeds); shaded: +10 points at <= 2% cost.",
    }
    if name in fixed:
        return fixed[name]
    if name.startswith("heatmap_"):
        return f"Accuracy by length and needle depth, task {name[len('heatmap_') : -len('.png')]} (mean over seeds)."
    return name
