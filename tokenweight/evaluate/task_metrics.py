"""The synthetic tasks inside the suite: shared samples, per-model scores by task, length and depth.

The tasks themselves (RULER-style generation, likelihood and generation scoring) live in
:mod:`tokenweight.evaluate.tasks`; this module is the glue the runner needs on top of them:

- :func:`task_samples`: every (task, length) generated once with one seed, so every model is
  scored on identical prompts; a length too short for a task's prompt is skipped and reported,
  not fatal (a default sweep should not die because one task needs 300 tokens);
- :func:`task_rows`: one model's scores, one row per (task, length) with all depths pooled
  (``depth: None``) and one row per needle depth (the NIAH heat map's cells);
- :func:`generation_budget`: answer-sized generation budgets (RULER's are sized for chatty
  instruction-tuned models and dominate the CPU cost for small base models).

Sample counts: needle tasks get ``num_samples`` per depth; tasks without a needle get
``num_samples * len(depths)``, so every task has as many samples per length.
"""

from __future__ import annotations

from collections.abc import Sequence

from tqdm.auto import tqdm

from tokenweight.errors import UsageError

#: needle depths of the default sweep (the NIAH heat map's rows)
DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def task_names(tasks: Sequence[str] | None) -> list[str]:
    """The tasks to run (None: every registered task); UsageError for an unknown name."""
    if tasks is not None and not tasks:
        return []
    from tokenweight.evaluate import tasks as T

    names = list(T.TASKS) if tasks is None else list(tasks)
    unknown = [t for t in names if t not in T.TASKS]
    if unknown:
        raise UsageError(f"unknown task(s) {', '.join(unknown)}: choose from {', '.join(T.TASKS)}")
    return names


def task_samples(
    tokenizer,
    names: Sequence[str],
    lengths: Sequence[int],
    num_samples: int,
    seed: int,
    depths: Sequence[float],
    haystack_texts: list[str] | None = None,
) -> tuple[dict, list[dict]]:
    """``({(task, length): [Sample, ...]}, skipped)``, generated once and shared by every model.

    ``haystack_texts``: held-out documents (decoded) for the tasks whose RULER haystack is a
    corpus; None: RULER's noise. ``skipped``: ``[{"task", "length", "reason"}]`` for lengths that
    cannot hold a task's shortest prompt.
    """
    from tokenweight.evaluate import tasks as T

    haystack = T.Haystack.from_texts(haystack_texts) if haystack_texts else T.Haystack.noise()
    out, skipped = {}, []
    for task in tqdm(names, desc="task samples", disable=None):
        count = num_samples if T.TASKS[task].has_depth else num_samples * len(depths)
        for length in lengths:
            try:
                out[(task, length)] = T.generate_samples(
                    task, tokenizer, length, count, seed, haystack=haystack, depths=list(depths)
                )
            except T.LengthTooShortError as e:
                skipped.append({"task": task, "length": length, "reason": str(e)})
    return out, skipped


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def aggregate_likelihood(per_sample: list[dict]) -> dict:
    """Means over samples of every numeric per-sample field of ``score_likelihood`` (``rank``
    becomes ``mean_rank``), and ``candidate_accuracy``: the share of samples whose gold value ranks
    first (rank 1) among the candidates (None when the task has no candidates)."""
    keys = [k for k, v in per_sample[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {k: _mean(s.get(k) for s in per_sample) for k in keys if k != "rank"}
    ranks = [s.get("rank") for s in per_sample if s.get("rank") is not None]
    out["mean_rank"] = _mean(ranks)
    out["candidate_accuracy"] = (sum(r == 1 for r in ranks) / len(ranks)) if ranks else None
    return out


def aggregate_generation(per_sample: list[dict], task: str) -> dict:
    """RULER's score (0-100, the task's metric) and both string-match metrics over samples."""
    from tokenweight.evaluate import tasks as T

    n = len(per_sample)
    return {
        "metric": T.TASKS[task].metric,
        "score": 100.0 * sum(r["score"] for r in per_sample) / n,
        "string_match_all": 100.0 * sum(r["string_match_all"] for r in per_sample) / n,
        "string_match_part": 100.0 * sum(r["string_match_part"] for r in per_sample) / n,
    }


def generation_budget(tokenizer, samples, max_new_tokens: int | None) -> int | None:
    """New tokens to generate for a group of samples of one task.

    ``max_new_tokens`` > 0: that many. 0: RULER's budget of the task (``None`` for the tasks
    module). None (auto): room for the longest gold answer written out in full (all outputs joined
    by ", ") times 1.5 plus 8 tokens of slack, at most RULER's budget. RULER's budgets (128 tokens
    for NIAH) are sized for chatty instruction-tuned models; a small base model that answers at
    all answers at once, and the shorter budget makes generation several times cheaper on CPU
    without changing what string matching can find in the first tokens.
    """
    if max_new_tokens:
        return int(max_new_tokens)
    if max_new_tokens == 0:
        return None
    from tokenweight.evaluate import tasks as T

    answers = [" " + ", ".join(s.outputs) for s in samples]
    longest = max(len(x) for x in tokenizer(answers, add_special_tokens=False)["input_ids"])
    ruler = max(T.TASKS[s.task].tokens_to_generate for s in samples)
    return min(ruler, int(1.5 * longest) + 8)


def task_rows(
    model,
    tokenizer,
    samples: dict,
    *,
    batch_size: int,
    generation: bool,
    max_new_tokens: int | None,
    name: str = "",
) -> list[dict]:
    """One model's rows: per (task, length) one row with all depths pooled (``depth: None``), then
    one per needle depth; each ``{"task", "length", "depth", "samples", "likelihood",
    "generation"}`` (``generation`` None when off)."""
    from tokenweight.evaluate import tasks as T

    rows = []
    for (task, length), ss in tqdm(samples.items(), desc=f"{name}: tasks", disable=None):
        lik = T.score_likelihood(model, tokenizer, ss, batch_size=batch_size)
        gen = None
        if generation:
            budget = generation_budget(tokenizer, ss, max_new_tokens)
            preds = T.generate_predictions(model, tokenizer, ss, max_new_tokens=budget, batch_size=batch_size)
            gen = T.score_generation(preds, ss)["per_sample"]
        groups: dict[float | None, list[int]] = {None: list(range(len(ss)))}
        for i, s in enumerate(ss):
            if s.depth is not None:
                groups.setdefault(float(s.depth), []).append(i)
        for depth, idx in groups.items():
            rows.append(
                {
                    "task": task,
                    "length": length,
                    "depth": depth,
                    "samples": len(idx),
                    "likelihood": aggregate_likelihood([lik[i] for i in idx]),
                    "generation": None if gen is None else aggregate_generation([gen[i] for i in idx], task),
                }
            )
    return rows
