"""The synthetic tasks inside the suite: shared samples, per-model scores by task, length and depth.

The tasks themselves (RULER-style generation, likelihood and generation scoring) live in
:mod:`tokenweight.evaluate.tasks`; this module is the glue the runner needs on top of them:

- :func:`task_samples`: every (task, length) generated once with one seed, so every model is
  scored on identical prompts; a length too short for a task's prompt is skipped and reported,
  not fatal (a default sweep should not die because one task needs 300 tokens);
- :func:`task_rows`: one model's scores, one row per (task, length) with all depths pooled
  (``depth: None``) and one row per needle depth (the NIAH heat map's cells);
- :func:`generation_budget`: answer-sized generation budgets (RULER's are sized for chatty
  instruction-tuned models and dominate the CPU cost for small base models); every sample
  reserves its budget inside its length, as RULER counts lengths.

Sample counts: needle tasks get ``num_samples`` per depth; tasks without a needle get
``num_samples * len(depths)``, so every task has as many samples per length.
"""

from __future__ import annotations

from collections.abc import Sequence

from tqdm.auto import tqdm

from tokenweight.errors import UsageError

#: needle depths of the default sweep (the NIAH heat map's rows)
DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: the ``--help`` group of the task options of ``tokenweight eval``
GROUP = "RULER tasks"


def check_task_options(config) -> None:
    """``EvalConfig``'s task options are valid (ValueError naming the field otherwise)."""
    from tokenweight.config import check_float

    check_float(config, "ruler_threshold", low=0.0, high=100.0)
    if not isinstance(config.haystack, str) or not config.haystack.strip():
        raise ValueError(f"haystack must be essay, noise, data, a file or a folder, got {config.haystack!r}")


def suite_samples(config, tokenizer, names, lengths, depths, rows) -> tuple[dict, list, dict]:
    """``(samples, skipped, task_inputs)`` of a ``tokenweight eval`` run: :func:`task_samples`
    with the haystack of ``config.haystack`` (``data``: the held-out ``rows`` decoded) and the QA
    files of ``config.squad``/``config.hotpotqa``; ``task_inputs`` names their content
    (``{"haystack", "haystack_source", "qa"}``: the results' ``config.task_inputs``, part of the
    cache key)."""
    from tokenweight.evaluate.tasks.registry import TASKS
    from tokenweight.evaluate.tasks.sources import load_haystack, load_qa

    if not names:
        return {}, [], {}
    qa = load_qa(config.squad, config.hotpotqa)
    haystack = None
    if any(TASKS[t].haystack == "essay" for t in names):

        def decode() -> list[str]:
            return [tokenizer.decode(r["input_ids"], skip_special_tokens=True) for r in rows]

        haystack = load_haystack(config.haystack, tokenizer, held_out=decode if rows else None)
    samples, skipped = task_samples(
        tokenizer, names, lengths, config.num_samples, config.seed, depths, haystack,
        qa=qa, max_new_tokens=config.max_new_tokens,
    )  # fmt: skip
    inputs = {
        "haystack": None if haystack is None else haystack.fingerprint(),
        "haystack_source": None if haystack is None else haystack.source,
        "qa": {k: v.digest for k, v in sorted(qa.items())},
    }
    return samples, skipped, inputs


def config_task_names(config) -> list[str]:
    """:func:`task_names` of an ``EvalConfig``: its tasks, the QA ones given their file."""
    return task_names(config.selected_tasks(), {k for k in ("squad", "hotpotqa") if getattr(config, k, None)})


def task_names(tasks: Sequence[str] | None, qa=None) -> list[str]:
    """The tasks to run (None: every registered task, the QA tasks only when ``qa``, the dataset
    names given (``"squad"``, ``"hotpotqa"``), holds theirs); UsageError for an unknown name, or a
    QA task named without its file."""
    if tasks is not None and not tasks:
        return []
    from tokenweight.evaluate import tasks as T
    from tokenweight.evaluate.tasks.sources import qa_flag

    qa = qa or {}
    ready = [t for t in T.TASKS if T.TASKS[t].family != "qa" or T.TASKS[t].params["dataset"] in qa]
    names = ready if tasks is None else list(tasks)
    unknown = [t for t in names if t not in T.TASKS]
    if unknown:
        raise UsageError(f"unknown task(s) {', '.join(unknown)}: choose from {', '.join(T.TASKS)}")
    missing = [t for t in names if t not in ready]
    if missing:
        raise UsageError(
            f"task {missing[0]} needs its QA file: pass {qa_flag(missing[0])} FILE (the JSON RULER downloads)"
        )
    return names


def task_samples(
    tokenizer,
    names: Sequence[str],
    lengths: Sequence[int],
    num_samples: int,
    seed: int,
    depths: Sequence[float],
    haystack=None,
    *,
    qa: dict | None = None,
    max_new_tokens: int | None = None,
) -> tuple[dict, list[dict]]:
    """``({(task, length): [Sample, ...]}, skipped)``, generated once and shared by every model.

    ``haystack``: the essay tasks' :class:`~tokenweight.evaluate.tasks.Haystack` (None: the shipped
    essay). ``qa``: ``{"squad": QADataset, "hotpotqa": QADataset}`` for ``qa_1``/``qa_2``.
    ``skipped``: ``[{"task", "length", "reason"}]`` for lengths that cannot hold a task's shortest
    prompt.

    Lengths are RULER's: each sample reserves its generation budget inside the length
    (``Sample.tokens_to_generate``), the budget generation then uses: ``max_new_tokens`` > 0 that
    many, 0 RULER's per task, None the answer-sized budget of :func:`generation_budget`, found from
    the samples' own answers (a first pass without a reserve gives them, a second pass is the
    sample set). The reserve does not depend on whether generation runs, so likelihood scores are
    the same with and without it.
    """
    from tokenweight.evaluate import tasks as T

    out, skipped = {}, []
    for task in tqdm(names, desc="task samples", disable=None):
        spec = T.TASKS[task]
        count = num_samples if spec.has_depth else num_samples * len(depths)
        data = (qa or {}).get(spec.params.get("dataset"))
        for length in lengths:
            args = (task, tokenizer, length, count, seed, haystack, list(depths))
            try:
                if max_new_tokens is None:  # the answer-sized budget, from the answers themselves
                    reserve = generation_budget(
                        tokenizer, T.generate_samples(*args, tokens_to_generate=0, qa=data), None
                    )
                else:
                    reserve = generation_budget(tokenizer, [], max_new_tokens)
                out[(task, length)] = T.generate_samples(*args, tokens_to_generate=reserve, qa=data)
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
    batch_tokens: int | None = None,
) -> list[dict]:
    """One model's rows: per (task, length) one row with all depths pooled (``depth: None``), then
    one per needle depth; each ``{"task", "length", "depth", "samples", "likelihood",
    "generation"}`` (``generation`` None when off). ``batch_size``/``batch_tokens``: rows and
    tokens per forward pass (:func:`tokenweight.evaluate.batching.token_groups`). Generation
    gives each sample the budget it reserved (``max_new_tokens`` already chose it in
    :func:`task_samples`)."""
    from tokenweight.evaluate import tasks as T

    rows = []
    for (task, length), ss in tqdm(samples.items(), desc=f"{name}: tasks", disable=None):
        lik = T.score_likelihood(model, tokenizer, ss, batch_size=batch_size, batch_tokens=batch_tokens)
        gen = None
        if generation:
            budget = None  # each sample's own: the budget it reserved in its length (task_samples)
            preds = T.generate_predictions(
                model, tokenizer, ss, max_new_tokens=budget, batch_size=batch_size, batch_tokens=batch_tokens
            )
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
