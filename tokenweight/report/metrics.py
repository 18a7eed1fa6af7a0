"""The report's numbers: one value per metric and run, grouped over seeds, paired against uniform.

A *metric* reads one number from a run's evaluation entry (or its train summary). Runs of one
setting (same ``label``: scheme and scorer) are a *group*; with several seeds a group reports the
mean and the sample standard deviation (``n - 1`` in the denominator) of each metric.

Differences against uniform are *paired by seed*: the seed fixes a run's data order, so the run of
scheme X with seed k and the uniform run with seed k saw the same batches in the same order, and
``x_k - u_k`` removes the data-order noise they share. The difference is the mean (± sample std)
of these per-seed differences over the seeds both groups have; unpaired seeds are left out.

Which metrics exist depends on the evaluation (w = native window, n = long context):

- ``recall_short`` / ``recall_long``: episode exact match, pooled (episode-weighted) over the
  distance buckets that start below ``w`` / at or beyond ``w`` -- long-range recall is the second;
- ``tasks``: mean over tasks of the likelihood token accuracy at length ``L`` (``n`` when evaluated,
  else the longest length), all needle depths pooled; ``tasks_gen``: the same for generation scores
  (RULER's string match, in percent);
  ``task:<name>``: one task at ``L``;
- ``ppl`` (all positions), ``ppl_short`` (positions ``1 .. w-1``), ``ppl_pos:<lo>-<hi>`` (one
  position bucket; the bucket ``[0, w)`` is left out: it holds exactly the tokens of ``ppl_short``),
  ``longppl``;
- ``wall_time_s``, ``tokens_per_s``: training wall time and throughput, from the run's train
  summary (of the last session when a run was resumed);
- ``harness:<task>:<metric>``: an lm-evaluation-harness metric (``eval --harness``) under lm-eval's
  key, e.g. ``harness:mmlu:acc,none``, for the rows the evaluation's tables show (a group's
  aggregate, not its subtasks); higher/lower is better as lm-eval declares it.

Besides the base model and the groups of runs, a report may hold evaluated *models* without a
training run (``results["models"]``, e.g. a plain ``tokenweight eval`` of a few checkpoints): each
is its own row, and its difference to the base model is a single value (nothing to pair).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from tokenweight.report.schema import run_label
from tokenweight.report.training import summary_value


@dataclass(frozen=True)
class Metric:
    """One column of the report's tables.

    ``get(record)`` reads the value from ``{"eval": <evaluation entry>, "train_summary": ...}``;
    ``better``: "higher", "lower" or None (no direction, e.g. time); ``table``: "main" or "tasks".
    """

    key: str
    label: str
    get: Callable[[Mapping], float | None]
    better: str | None = None
    digits: int = 3
    table: str = "main"

    def to_json(self) -> dict:
        return {"key": self.key, "label": self.label, "better": self.better, "digits": self.digits, "table": self.table}


def _records(results: Mapping) -> list[Mapping]:
    base = [results["base"]] if results.get("base") else []
    return base + list(results.get("models") or []) + list(results["runs"])


def _harness_metrics(records: Sequence[Mapping]) -> list[Metric]:
    """One metric per shown (task, metric) of the models' lm-eval results, in first-seen order."""
    from tokenweight.evaluate.results import higher_is_better, metrics_of, shown_rows

    out: dict[str, Metric] = {}
    for rec in records:
        for row in shown_rows(rec["eval"].get("harness") or {"tasks": []}):
            for key, label, _ in metrics_of(row):
                mkey = f"harness:{row['task']}:{key}"
                if mkey not in out:
                    hib = higher_is_better(row, key)
                    better = None if hib is None else "higher" if hib else "lower"
                    get = lambda r, t=row["task"], k=key: _harness_value(r["eval"], t, k)  # noqa: E731
                    out[mkey] = Metric(mkey, f"{row['task']} {label}", get, better, 3, "harness")
    return list(out.values())


def _harness_value(entry: Mapping, task: str, key: str) -> float | None:
    for row in (entry.get("harness") or {}).get("tasks") or []:
        if row["task"] == task:
            return row["metrics"].get(key)
    return None


def _pooled_recall(entry: Mapping, long: bool, window: int) -> float | None:
    ep = entry.get("episodes")
    if not ep:
        return None
    num = den = 0.0
    for b in ep["by_distance"]:
        if (b["start"] >= window) == long and b["episodes"] and b["exact_match"] is not None:
            num += b["exact_match"] * b["episodes"]
            den += b["episodes"]
    return num / den if den else None


def _task_rows(entry: Mapping, length: int) -> list[Mapping]:
    return [r for r in entry.get("tasks") or [] if r["depth"] is None and r["length"] == length]


def _mean(xs: Iterable[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _tasks_mean(entry: Mapping, length: int, generation: bool) -> float | None:
    rows = _task_rows(entry, length)
    if generation:
        return _mean((r.get("generation") or {}).get("score") for r in rows)
    return _mean(r["likelihood"].get("token_accuracy") for r in rows)


def _one_task(entry: Mapping, length: int, task: str) -> float | None:
    return _mean(r["likelihood"].get("token_accuracy") for r in _task_rows(entry, length) if r["task"] == task)


def _ppl_bucket(entry: Mapping, lo: int, hi: int) -> float | None:
    p = entry.get("perplexity")
    for b in (p or {}).get("by_position", []):
        if (b["start"], b["end"]) == (lo, hi):
            return b["ppl"]
    return None


def task_length(results: Mapping) -> int | None:
    """Length ``L`` of the task columns: ``n`` when some model was evaluated there, else the longest."""
    lengths = {r["length"] for rec in _records(results) for r in rec["eval"].get("tasks") or [] if r["depth"] is None}
    if not lengths:
        return None
    n = results["config"]["n"]
    return n if n in lengths else max(lengths)


def define_metrics(results: Mapping) -> list[Metric]:
    """Every metric that at least one model of ``results`` has a value for, in table order."""
    w = results["config"]["window"]
    L = task_length(results)
    records = _records(results)
    buckets: list[tuple[int, int]] = []
    tasks: list[str] = []
    for rec in records:
        for b in (rec["eval"].get("perplexity") or {}).get("by_position", []):
            if (b["start"], b["end"]) not in buckets:
                buckets.append((b["start"], b["end"]))
        for r in _task_rows(rec["eval"], L) if L else []:
            if r["task"] not in tasks:
                tasks.append(r["task"])

    def ev(path: Sequence[str]):
        def get(rec):
            x = rec["eval"]
            for k in path:
                x = x.get(k) if isinstance(x, Mapping) else None
            return x

        return get

    cands = [
        Metric("recall_long", f"recall d≥{w}", lambda r: _pooled_recall(r["eval"], True, w), "higher"),
        Metric("recall_short", f"recall d<{w}", lambda r: _pooled_recall(r["eval"], False, w), "higher"),
    ]
    if L:
        cands += [
            Metric("tasks", f"tasks@{L}", lambda r: _tasks_mean(r["eval"], L, False), "higher"),
            Metric("tasks_gen", f"tasks@{L} gen %", lambda r: _tasks_mean(r["eval"], L, True), "higher"),
        ]
    cands += [
        Metric("ppl", "ppl", ev(("perplexity", "overall", "ppl")), "lower", 2),
        Metric("ppl_short", f"ppl<{w}", ev(("perplexity", "short", "ppl")), "lower", 2),
    ]
    cands += [
        Metric(
            f"ppl_pos:{lo}-{hi}", f"ppl {lo}-{hi}", lambda r, lo=lo, hi=hi: _ppl_bucket(r["eval"], lo, hi), "lower", 2
        )
        for lo, hi in buckets
        if (lo, hi) != (0, w)  # the same tokens as ppl_short (positions 1 .. w-1)
    ]
    cands += [
        Metric("longppl", "LongPPL", ev(("longppl", "longppl")), "lower", 2),
        Metric("wall_time_s", "train s", lambda r: summary_value(r.get("train_summary"), "wall_time_s"), None, 0),
        Metric("tokens_per_s", "tok/s", lambda r: summary_value(r.get("train_summary"), "tokens_per_s"), None, 0),
    ]
    cands += [
        Metric(f"task:{t}", f"{t}@{L}", lambda r, t=t: _one_task(r["eval"], L, t), "higher", 3, "tasks") for t in tasks
    ]
    cands += _harness_metrics(records)
    return [m for m in cands if any(m.get(rec) is not None for rec in records)]


def mean_std(values: Sequence[float | None]) -> dict:
    """``{"mean", "std", "n"}`` over the non-None values; std is the sample std (None when n < 2)."""
    xs = [float(v) for v in values if v is not None]
    n = len(xs)
    if not n:
        return {"mean": None, "std": None, "n": 0}
    m = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else None
    return {"mean": m, "std": std, "n": n}


def is_uniform(spec: str) -> bool:
    """True when the weighting spec gives every token weight 1 (plain cross-entropy)."""
    from tokenweight.weighting import WeightingScheme

    try:
        return WeightingScheme.parse(spec).is_uniform
    except ValueError:
        return False


def groups(results: Mapping) -> dict[str, list[Mapping]]:
    """label -> its runs sorted by seed; labels in the order of their first run."""
    out: dict[str, list[Mapping]] = {}
    for run in results["runs"]:
        out.setdefault(run_label(run), []).append(run)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in out.items()}


def aggregate(results: Mapping, metrics: Sequence[Metric] | None = None) -> dict:
    """Per-group means/stds and paired differences vs uniform: the ``aggregate`` of results.json.

    Returns ``{"metrics": [...], "task_length", "reference", "base": {key: value},
    "groups": [{"label", "scheme", "scorer", "runs", "seeds", "values": {key: [per run]},
    "stats": {key: {mean, std, n}}, "vs_reference": {key: {mean, std, n, seeds, diffs}} | None}],
    "comparisons": [{"label", "against", "diffs": {key: {mean, std, n, seeds, diffs}}}] (the pairs of
    ``results["config"]["compare"]``, e.g. a smaller scorer against the full-size one),
    "models": [{"name", "values": {key: value}, "vs_base": {key: value - base value} | None}]}``.
    """
    metrics = define_metrics(results) if metrics is None else list(metrics)
    grouped = groups(results)
    ref = next((label for label, runs in grouped.items() if is_uniform(runs[0]["scheme"])), None)
    out_groups = []
    for label, runs in grouped.items():
        values = {m.key: [m.get(r) for r in runs] for m in metrics}
        g = {
            "label": label,
            "scheme": runs[0]["scheme"],
            "scorer": runs[0]["scorer"],
            "runs": [r["name"] for r in runs],
            "seeds": [r["seed"] for r in runs],
            "values": values,
            "stats": {k: mean_std(v) for k, v in values.items()},
            "vs_reference": None,
        }
        if ref is not None and label != ref:
            g["vs_reference"] = paired_differences(runs, grouped[ref], metrics)
        out_groups.append(g)
    comparisons = [
        {"label": a, "against": b, "diffs": paired_differences(grouped[a], grouped[b], metrics)}
        for a, b in results["config"].get("compare") or []
        if a in grouped and b in grouped
    ]
    base = results.get("base")
    base_values = {m.key: m.get(base) for m in metrics} if base else None
    out_models = []
    for rec in results.get("models") or []:
        values = {m.key: m.get(rec) for m in metrics}
        vs_base = None
        if base_values is not None:
            b = base_values
            vs_base = {k: None if v is None or b[k] is None else v - b[k] for k, v in values.items()}
        out_models.append({"name": rec["name"], "values": values, "vs_base": vs_base})
    return {
        "metrics": [m.to_json() for m in metrics],
        "task_length": task_length(results),
        "reference": ref,
        "base": base_values,
        "models": out_models,
        "groups": out_groups,
        "comparisons": comparisons,
    }


def paired_differences(runs: Sequence[Mapping], against: Sequence[Mapping], metrics: Sequence[Metric]) -> dict:
    """Per metric, the seed-paired differences ``run_k - against_k`` over the seeds both have:
    ``{key: {mean, std, n, seeds, diffs}}``."""
    by_seed = {r["seed"]: r for r in against}
    diffs = {}
    for m in metrics:
        pairs = [(r["seed"], m.get(r), m.get(by_seed[r["seed"]])) for r in runs if r["seed"] in by_seed]
        pairs = [(s, x - u) for s, x, u in pairs if x is not None and u is not None]
        diffs[m.key] = {
            **mean_std([d for _, d in pairs]),
            "seeds": [s for s, _ in pairs],
            "diffs": [d for _, d in pairs],
        }
    return diffs


def mean_entry(entries: Sequence[Mapping], name: str) -> dict:
    """Element-wise mean of evaluation entries of one setting (the seeds of a group), for plots.

    Numbers that differ are averaged (a None anywhere makes the mean None), equal values are kept
    as they are (bucket edges, sample counts, task names); task rows are matched by (task, length,
    depth). The result has the shape of one evaluation entry, named ``name``.
    """
    if not entries:
        raise ValueError("entries must hold at least one evaluation entry")

    def avg(xs: list):
        first = xs[0]
        if all(x == first for x in xs[1:]) and not isinstance(first, (dict, list)):
            return first
        if all(isinstance(x, dict) for x in xs):
            keys = [k for k in first if all(k in x for x in xs)]
            return {k: avg([x[k] for x in xs]) for k in keys}
        if all(isinstance(x, list) for x in xs) and len({len(x) for x in xs}) == 1:
            return [avg([x[i] for x in xs]) for i in range(len(first))]
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
            return math.fsum(xs) / len(xs)
        return None

    entries = [dict(e) for e in entries]
    key = lambda r: (r["task"], r["length"], r["depth"] if r["depth"] is not None else -1.0)  # noqa: E731
    common = set.intersection(*({key(r) for r in e.get("tasks") or []} for e in entries))
    for e in entries:
        e["tasks"] = sorted((r for r in e.get("tasks") or [] if key(r) in common), key=key)
    out = avg(entries)
    out["name"] = name
    out["source"] = f"mean of {len(entries)} run(s)" if len(entries) > 1 else entries[0].get("source")
    return out
