"""RULER's metrics for generated answers.

RULER post-processes a prediction (strip; control characters become newlines) and scores it by
case-insensitive substring match against the gold answers:

- ``string_match_all``: the share of gold answers found in the prediction (every NIAH variant,
  variable tracking, common and frequent words: all answers are wanted);
- ``string_match_part``: 1 when any gold answer is found (RULER's QA tasks).

A task's :attr:`TaskSpec.metric` says which one is its score. RULER reports the mean over samples
times 100; so does :func:`score_generation` (``score``), next to per-sample values in [0, 1].
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_CONTROL = re.compile(r"[\x00-\x1f]")


def postprocess(prediction: str) -> str:
    """RULER's ``postprocess_pred``: strip, control characters to newlines, strip again."""
    return _CONTROL.sub("\n", prediction.strip()).strip()


def string_match_all(prediction: str, references: Sequence[str]) -> float:
    """Share of ``references`` contained in ``prediction`` (case-insensitive), in [0, 1]."""
    if not references:
        raise ValueError("references must hold at least one gold answer")
    pred = prediction.lower()
    return sum(1.0 for r in references if r.lower() in pred) / len(references)


def string_match_part(prediction: str, references: Sequence[str]) -> float:
    """1.0 when any of ``references`` is contained in ``prediction`` (case-insensitive), else 0.0."""
    if not references:
        raise ValueError("references must hold at least one gold answer")
    pred = prediction.lower()
    return max(1.0 if r.lower() in pred else 0.0 for r in references)


METRICS = {"string_match_all": string_match_all, "string_match_part": string_match_part}


def score_generation(predictions: Sequence[str], samples: Sequence) -> dict:
    """Score generated answers with RULER's metrics.

    Args:
        predictions: one generated continuation per sample (the text after ``sample.prompt``).
        samples: the :class:`Sample` s they answer (any mix of tasks).

    Returns:
        ``{"metric": name or "mixed", "score": 0-100 mean of each sample's task metric,
        "string_match_all": 0-100, "string_match_part": 0-100, "num_samples": n,
        "by_task": {task: {"metric", "score", "num_samples"}},
        "per_sample": [{"task", "score", "string_match_all", "string_match_part"} (values in [0, 1])]}``.
    """
    from tokenweight.evaluate.tasks.registry import TASKS

    if len(predictions) != len(samples):
        raise ValueError(
            f"predictions has {len(predictions)} entries but samples has {len(samples)}: pass one per sample"
        )
    if not samples:
        raise ValueError("samples is empty: nothing to score")
    per = []
    for pred, s in zip(predictions, samples):
        if not isinstance(pred, str):
            raise ValueError(f"predictions must be strings, got {type(pred).__name__}")
        p = postprocess(pred)
        metric = TASKS[s.task].metric if s.task in TASKS else "string_match_all"
        row = {name: fn(p, s.outputs) for name, fn in METRICS.items()}
        per.append({"task": s.task, "score": row[metric], **row})
    by_task: dict[str, dict] = {}
    for row in per:
        t = by_task.setdefault(row["task"], {"metric": None, "score": 0.0, "num_samples": 0})
        t["score"] += row["score"]
        t["num_samples"] += 1
    for name, t in by_task.items():
        t["metric"] = TASKS[name].metric if name in TASKS else "string_match_all"
        t["score"] = 100.0 * t["score"] / t["num_samples"]
    metrics = {t["metric"] for t in by_task.values()}
    n = len(per)
    return {
        "metric": metrics.pop() if len(metrics) == 1 else "mixed",
        "score": 100.0 * sum(r["score"] for r in per) / n,
        "string_match_all": 100.0 * sum(r["string_match_all"] for r in per) / n,
        "string_match_part": 100.0 * sum(r["string_match_part"] for r in per) / n,
        "num_samples": n,
        "by_task": by_task,
        "per_sample": per,
    }
