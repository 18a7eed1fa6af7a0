"""The report's PNG figures (matplotlib ``Figure`` objects, no pyplot state; saved atomically).

- ``training_curves.png``: weighted loss and plain cross-entropy against the optimizer step, one
  line per run (colour = group, line style = seed), plus the logged weight statistics (std, max,
  share of zero weights) when the log has them. The weighted loss is what each run optimises, so
  it is comparable across runs of one scheme only; the plain loss is comparable across all runs.
- ``weight_histograms.png``: the distribution of token weights under each scheme on the sample
  sequence of the heat map (one panel per scheme).
- the evaluation's figures (tokenweight.evaluate.plots.write_plots): perplexity by position,
  episode recall by distance, task accuracy by length, and NIAH depth x length heat maps, drawn for
  the base model, each evaluated model without runs, and one *mean over seeds* per group
  (tokenweight.report.metrics.mean_entry).

Colours: group ``i`` uses the same colour in every figure (the evaluation plots colour models in
order: the base model first, then the models without runs, then the groups).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from tokenweight.io_utils import atomic_file
from tokenweight.report.metrics import groups, mean_entry

#: log fields drawn in training_curves.png: (field, panel title)
CURVE_PANELS = (
    ("weighted_loss", "weighted loss (optimised)"),
    ("plain_loss", "plain cross-entropy"),
    ("weight_std", "weight std"),
    ("weight_max", "weight max"),
    ("weight_zero_share", "share of zero weights"),
)
_STYLES = ("-", "--", ":", "-.")


def _figure(ncols: int, nrows: int, size: tuple[float, float] = (4.6, 3.3)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig, path: Path) -> Path:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path


def _colour(i: int) -> str:
    return f"C{i % 10}"


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
    from tokenweight.evaluate.plots import write_plots as write_eval_plots

    out_dir = Path(out_dir)
    written = [plot_training_curves(results, out_dir / "training_curves.png")]
    if sample:
        written.append(plot_weight_histograms(sample, out_dir / "weight_histograms.png"))
    if results.get("exposure"):
        written.append(plot_exposure(results["exposure"], out_dir / "exposure_histogram.png"))
    doc = evaluation_document(results)
    if doc["models"]:
        written += write_eval_plots(doc, out_dir)
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
    }
    if name in fixed:
        return fixed[name]
    if name.startswith("heatmap_"):
        return f"Accuracy by length and needle depth, task {name[len('heatmap_') : -len('.png')]} (mean over seeds)."
    return name
