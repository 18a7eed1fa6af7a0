"""PNG plots of a results document (matplotlib, Agg; no display needed).

- ``ppl_by_position.png``: perplexity by position bucket, one line per model, the native window
  marked: where long context helps (or where weighting costs) at a glance.
- ``episodes_by_distance.png``: episode recall (exact match and token accuracy) by distance.
- ``tasks_by_length.png``: likelihood token accuracy by length, one panel per task, one line per
  model; lengths inside the native window are left of the dashed line.
- ``heatmap_<task>.png``: for tasks with needle depths, the familiar NIAH heat map (depth x length,
  colour = accuracy), one panel per model on a shared colour scale.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot global state, no backend switch
for the host program) and saved atomically.
"""

from __future__ import annotations

from pathlib import Path

from tokenweight.io_utils import atomic_file


def _figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (5.0, 3.6)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, path: Path) -> Path:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path


def _window(results: dict) -> int | None:
    return (results.get("config") or {}).get("window")


def plot_ppl_by_position(results: dict, path: Path) -> Path | None:
    models = [m for m in results["models"] if m["perplexity"] is not None]
    if not models:
        return None
    fig, axes = _figure()
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
    return _save(fig, path)


def plot_episodes(results: dict, path: Path) -> Path | None:
    models = [m for m in results["models"] if m["episodes"] is not None and m["episodes"]["overall"]["episodes"]]
    if not models:
        return None
    fig, axes = _figure(ncols=2)
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
    return _save(fig, path)


def _task_rows(results: dict) -> dict[str, dict[str, list[dict]]]:
    """task -> model name -> its rows (all depths)."""
    out: dict[str, dict[str, list[dict]]] = {}
    for m in results["models"]:
        for r in m["tasks"]:
            out.setdefault(r["task"], {}).setdefault(m["name"], []).append(r)
    return out


def plot_tasks_by_length(results: dict, path: Path) -> Path | None:
    tasks = _task_rows(results)
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
    return _save(fig, path)


def plot_depth_heatmap(results: dict, task: str, path: Path) -> Path | None:
    """Depth x length heat map of likelihood token accuracy, one panel per model."""
    per_model = _task_rows(results).get(task, {})
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
    return _save(fig, path)


def write_plots(results: dict, out_dir: str | Path) -> list[Path]:
    """Write every plot that the results support into ``out_dir``; return their paths."""
    out = Path(out_dir)
    written = [
        plot_ppl_by_position(results, out / "ppl_by_position.png"),
        plot_episodes(results, out / "episodes_by_distance.png"),
        plot_tasks_by_length(results, out / "tasks_by_length.png"),
    ]
    for task in sorted(_task_rows(results)):
        written.append(plot_depth_heatmap(results, task, out / f"heatmap_{task}.png"))
    return [p for p in written if p is not None]
