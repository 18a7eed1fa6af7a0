"""RULER's effective context length: the longest length at which the mean task score beats a threshold.

RULER (Hsieh et al., 2024, and the README of NVIDIA/RULER) scores every task by string match on
the generated answer (0-100 per task, ``scripts/eval/evaluate.py`` rounds each to two decimals),
averages the tasks at each length, and calls a length effective when that average *exceeds* a
threshold: Llama-2-7B's own average at 4K, 85.6 ("the performance exceeding the threshold is
underlined"). A model's effective length is the longest such length (RULER prints ``>128K`` when
the longest tested length passes, ``<4K`` when none does).

:func:`ruler_summary` does this over one model's result rows (``tokenweight eval``'s ``tasks``):
the generation ``score`` of each task's pooled row (``depth: None``), rounded as RULER rounds it,
averaged over the run's tasks at each length. A length at which some task has no score (the
length was too short for its prompt, so it was skipped) shows its partial average but cannot be
effective: RULER's average is over the same tasks at every length. The likelihood scores, which
RULER does not have, are not part of it. Without generation (``--no-generation``) there is no
string-match score and no summary.
"""

from __future__ import annotations

#: Llama-2-7B's average RULER score at 4K, RULER's threshold of an effective length
DEFAULT_THRESHOLD = 85.6
SUMMARY_KEYS = ("threshold", "tasks", "by_length", "effective_length")


def ruler_summary(rows: list[dict], threshold: float = DEFAULT_THRESHOLD) -> dict | None:
    """The RULER summary of one model's task rows; None without generation scores.

    Returns:
        ``{"threshold", "tasks": [names averaged], "by_length": [{"length", "score" (mean of the
        tasks scored at that length, 0-100), "tasks" (how many), "complete" (all of them),
        "passes" (complete and score > threshold)}], "effective_length": the longest passing
        length, or None}``.
    """
    scores: dict[int, dict[str, float]] = {}
    for r in rows:
        gen = r.get("generation")
        if r.get("depth") is None and gen and gen.get("score") is not None:
            scores.setdefault(int(r["length"]), {})[r["task"]] = round(float(gen["score"]), 2)
    if not scores:
        return None
    tasks = sorted({t for by_task in scores.values() for t in by_task})
    by_length = []
    for length in sorted(scores):
        got = scores[length]
        mean = sum(got.values()) / len(got)
        complete = len(got) == len(tasks)
        by_length.append(
            {
                "length": length,
                "score": mean,
                "tasks": len(got),
                "complete": complete,
                "passes": complete and mean > threshold,
            }
        )
    passing = [b["length"] for b in by_length if b["passes"]]
    return {
        "threshold": float(threshold),
        "tasks": tasks,
        "by_length": by_length,
        "effective_length": max(passing) if passing else None,
    }


def effective_label(summary: dict) -> str:
    """The effective length as RULER's table reads it: the length, ``<L`` below the shortest
    complete length tested, ``>=L`` when it is the longest length tested."""
    complete = [b["length"] for b in summary["by_length"] if b["complete"]]
    eff = summary["effective_length"]
    if eff is None:
        return f"<{min(complete)}" if complete else "-"
    return f">={eff}" if eff == max(b["length"] for b in summary["by_length"]) else str(eff)


def add_summaries(results: dict) -> dict:
    """Every model's ``ruler`` summary (:func:`ruler_summary`) at the results' threshold; returns
    ``results``."""
    threshold = (results.get("config") or {}).get("ruler_threshold", DEFAULT_THRESHOLD)
    for m in results["models"]:
        m["ruler"] = ruler_summary(m.get("tasks") or [], threshold)
    return results
