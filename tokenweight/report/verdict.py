"""The automatic verdict: what each weighting did against uniform, in a few sentences with numbers.

The demo may pass its own ``verdict``; when it does not, the report writes this one from the
aggregate (tokenweight.report.metrics). It compares every group with the uniform group on the
headline metrics -- long-range episode recall, the long tasks, LongPPL (the long-context side) and
short-context perplexity (the cost side) -- using the seed-paired differences.

A difference is called *clear* when at least two seeds are paired and ``|mean| > 2 · std / √n``
(the mean is more than about two standard errors from zero; with few seeds this is a rough screen,
not a significance test, and the text says how many seeds stand behind each number). With one
seed there is no noise estimate and the text says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

#: metrics the verdict talks about, in this order
HEADLINE = ("recall_long", "tasks", "tasks_gen", "longppl", "ppl_short")


def judge(diff: Mapping, better: str | None) -> str:
    """'better' | 'worse' | 'within noise' | 'single seed' for one paired difference."""
    m, s, n = diff.get("mean"), diff.get("std"), diff.get("n", 0)
    if m is None or n == 0:
        return "n/a"
    if n < 2 or s is None:
        return "single seed"
    if abs(m) <= 2 * s / math.sqrt(n) or better is None or m == 0:
        return "within noise"
    return "better" if (m > 0) == (better == "higher") else "worse"


def _fmt(x: float, digits: int) -> str:
    return f"{x:+.{digits}f}"


#: the trade-off sought (issue #21): a task gain of at least +10 points at most +2% perplexity below w,
#: both against the reference; the frontier figure shades it and the frontier table judges each setting
FRONTIER_TARGET = {"tasks": 0.10, "ppl_short_pct": 2.0}


def frontier_points(results: Mapping) -> list[dict]:
    """One point per setting against the reference (uniform): the mean paired difference of the task
    score (``tasks``, at the longest length) and of short-context perplexity (``ppl_short``) in percent
    of the reference's, each with its standard error over the paired seeds (None for one seed)."""
    agg = results.get("aggregate") or {}
    groups_ = agg.get("groups") or []
    ref = next((g for g in groups_ if g.get("label") == agg.get("reference")), None)
    if ref is None:
        return []
    base = (ref.get("stats", {}).get("ppl_short") or {}).get("mean")
    points = []
    for g in groups_:
        vs = g.get("vs_reference") or {}
        tasks, short = vs.get("tasks"), vs.get("ppl_short")
        if g is ref or not tasks or not short or not base:
            continue

        def se(d, scale=1.0):
            return None if d.get("std") is None or not d.get("n") else scale * d["std"] / d["n"] ** 0.5

        points.append(
            {
                "label": g["label"],
                "tasks": tasks["mean"],
                "tasks_se": se(tasks),
                "ppl_short_pct": 100 * short["mean"] / base,
                "ppl_short_pct_se": se(short, 100 / base),
                "seeds": tasks.get("n"),
            }
        )
    return points


def meets_target(point: Mapping, target: Mapping = FRONTIER_TARGET) -> str:
    """Whether one frontier point reaches the target: 'clearly' when both ends hold beyond 2 standard
    errors (gain - 2 SE >= target gain and cost + 2 SE <= target cost, over at least 2 paired seeds,
    the verdict's rule), 'on the means' when only the means do, else 'no'. The bounds are closed, up
    to floating-point rounding of the means (1e-9)."""
    eps = 1e-9
    gain, cost = point["tasks"] + eps, point["ppl_short_pct"] - eps
    if gain < target["tasks"] or cost > target["ppl_short_pct"]:
        return "no"
    g_se, c_se = point.get("tasks_se"), point.get("ppl_short_pct_se")
    if g_se is None or c_se is None or (point.get("seeds") or 0) < 2:
        return "on the means"
    if gain - 2 * g_se >= target["tasks"] and cost + 2 * c_se <= target["ppl_short_pct"]:
        return "clearly"
    return "on the means"


def auto_verdict(agg: Mapping) -> dict:
    """``{"text", "auto": True, "judgements": {label: {metric: judgement}}}`` from an aggregate."""
    metrics = {m["key"]: m for m in agg["metrics"] if m["key"] in HEADLINE}
    ref = agg.get("reference")
    if ref is None:
        return {"text": _without_reference(agg, metrics), "auto": True, "judgements": {}}
    lines, judgements = [], {}
    n_ref = len(next(g for g in agg["groups"] if g["label"] == ref)["seeds"])
    lines.append(
        f"Differences against {ref}, paired by seed (mean ± std over the paired seeds; "
        f"{n_ref} seed(s) of {ref}); 'clear' = |mean| > 2 standard errors."
    )
    for g in agg["groups"]:
        if g["label"] == ref or not g["vs_reference"]:
            continue
        parts, judgements[g["label"]] = _judged_parts(g["vs_reference"], metrics)
        if parts:
            lines.append(f"- {g['label']}: " + "; ".join(parts) + ".")
    best = _best(agg, metrics)
    if best:
        lines.append(best)
    comparisons = {}
    for c in agg.get("comparisons") or []:
        line, comparisons[f"{c['label']}:{c['against']}"] = _comparison(c, metrics)
        lines.append(line)
    return {"text": "\n".join(lines), "auto": True, "judgements": judgements, "comparisons": comparisons}


def _judged_parts(diffs: Mapping, metrics: Mapping) -> tuple[list[str], dict]:
    """``(["<label> <mean ± std> (<judgement>)", ...], {metric: judgement})`` for the headline
    metrics of one set of paired differences (a metric without a difference is left out)."""
    parts, judged = [], {}
    for key in HEADLINE:
        d = diffs.get(key)
        if key not in metrics or d is None or d["mean"] is None:
            continue
        j = judge(d, metrics[key]["better"])
        judged[key] = j
        num = _fmt(d["mean"], metrics[key]["digits"])
        if d["std"] is not None:
            num += f" ± {d['std']:.{metrics[key]['digits']}f}"
        tag = {"better": "clearly better", "worse": "clearly worse"}.get(j, j)
        parts.append(f"{metrics[key]['label']} {num} ({tag})")
    return parts, judged


def _comparison(c: Mapping, metrics: Mapping) -> tuple[str, dict]:
    """One verdict line for a requested comparison ``label`` vs ``against``, and its judgements.

    The comparison *lost little* when no headline metric is clearly worse (every paired difference
    within 2 standard errors, or better); it *lost* when one is clearly worse. With one seed there
    is no noise estimate, and the line says so instead of judging.
    """
    parts, judged = _judged_parts(c["diffs"], metrics)
    worse = [metrics[k]["label"] for k, j in judged.items() if j == "worse"]
    if not judged:
        outcome = "no metric to compare"
    elif all(j in ("single seed", "n/a") for j in judged.values()):
        outcome = "one seed only: no noise estimate, so no judgement"
    elif worse:
        outcome = f"it LOST: clearly worse on {', '.join(worse)}"
    else:
        outcome = "it lost little: no headline metric is clearly worse (all within 2 standard errors, or better)"
    seeds = max((d.get("n", 0) for d in c["diffs"].values()), default=0)
    line = (
        f"- {c['label']} vs {c['against']} (paired by seed, {seeds} seed(s)): "
        + "; ".join(parts)
        + f". Verdict: {outcome}."
    )
    return line, {"judgements": judged, "outcome": outcome}


def _without_reference(agg: Mapping, metrics: Mapping) -> str:
    """No uniform runs: the evaluated models' differences to the base model, when there are any."""
    lines = ["No uniform (plain cross-entropy) run to compare against: see the tables."]
    models = [m for m in agg.get("models") or [] if m["vs_base"] is not None]
    if models:
        lines = ["Differences against the base model (one evaluation each, so no noise estimate):"]
        for m in models:
            parts = [
                f"{metrics[k]['label']} {_fmt(m['vs_base'][k], metrics[k]['digits'])}"
                for k in HEADLINE
                if k in metrics and m["vs_base"].get(k) is not None
            ]
            if parts:
                lines.append(f"- {m['name']}: " + "; ".join(parts) + ".")
    return "\n".join(lines)


def _best(agg: Mapping, metrics: Mapping) -> str | None:
    """One sentence naming the best group on long-range recall (else the long tasks)."""
    for key in ("recall_long", "tasks", "longppl"):
        if key not in metrics:
            continue
        scored = [(g["stats"][key]["mean"], g["label"]) for g in agg["groups"] if g["stats"][key]["mean"] is not None]
        if len(scored) < 2:
            continue
        sign = 1 if metrics[key]["better"] == "higher" else -1
        value, label = max(scored, key=lambda t: sign * t[0])
        if sum(1 for v, _ in scored if v == value) > 1:
            digits = metrics[key]["digits"]
            return f"No single best mean {metrics[key]['label']}: several settings tie at {value:.{digits}f}."
        return f"Best mean {metrics[key]['label']}: {label} ({value:.{metrics[key]['digits']}f})."
    return None
