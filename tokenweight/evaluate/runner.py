"""The evaluation suite over several models, side by side, on identical inputs.

:func:`evaluate_models` is the Python API (the stage ``tokenweight.stages.evaluate`` and the demo
call it): :func:`plan_evaluation` checks and resolves everything a run needs without loading a
model or writing a file, :func:`run_evaluation` evaluates the models and returns the results
document of :mod:`tokenweight.evaluate.results` (written by ``tokenweight.report.evaluation``).
What is shared between models is computed once:

- the held-out sequences (the ``validation`` split of a prepared folder, at most
  ``max_sequences`` of them; packed rows are measured per document, :mod:`.packed`) and their
  batches, the tokenizer, the window and the task lengths (:mod:`.inputs`);
- the LongPPL key tokens (Fang et al.'s, :mod:`tokenweight.evaluate.longppl_suite`): judged as
  character spans of the held-out texts by *one* evaluator for every model (``evaluator``: a model
  of the run by name, another path, or by default the first model; its own tokenizer), so that
  every model's LongPPL is an average over the same text;
- the task samples: generated once per (task, length) with a fixed seed.

Per model, one ``token_nll`` pass per batch gives perplexity by position and short-context
perplexity; one pass over the texts without BOS (as Fang et al.'s) gives LongPPL; one more pass
with logits only at the value positions gives episode recall (batches without episodes skip it);
the tasks module scores the task samples by likelihood and, optionally, by batched greedy
generation. Models are loaded one at a time (only one in memory at once).

Resumable: with ``cache_dir`` (the stage uses ``OUT/.cache``) each model's entry is written as soon
as it is done, keyed by a fingerprint of everything it depends on; a rerun reuses it.

``config`` is the stage's ``EvalConfig`` (:mod:`tokenweight.stages.evaluate`), read by its fields
and methods (``validate``, ``runtime``, ``to_json``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tokenweight.evaluate.cache import entry_path as _cache_path
from tokenweight.evaluate.cache import finite as _finite
from tokenweight.evaluate.cache import read_record as _read_cached
from tokenweight.evaluate.cache import shared_key as _cache_shared
from tokenweight.evaluate.cache import write_record as _write_cached
from tokenweight.evaluate.effective_length import add_summaries
from tokenweight.evaluate.episodes import EpisodeRecall, score_episodes
from tokenweight.evaluate.harness import FIELDS as HARNESS_FIELDS
from tokenweight.evaluate.harness import HarnessPlan, model_harness, plan_harness
from tokenweight.evaluate.inputs import RunInputs, load_inputs
from tokenweight.evaluate.lm_metrics import PositionPerplexity
from tokenweight.evaluate.longppl_suite import KeySpans, longppl_judge
from tokenweight.evaluate.results import IN_MEMORY, SCHEMA_VERSION, check_results
from tokenweight.evaluate.task_metrics import config_task_names, suite_samples, task_rows

# ----------------------------------------------------------------------------- loading


def evaluation_model(source, runtime):
    """The model an evaluation runs, in eval mode: a model object as it is (where it is), a folder
    or hub id loaded by :func:`tokenweight.models.load_model` in ``runtime`` (``Runtime.load``: the
    run's device, dtype and attention). The one place where the evaluation loads models."""
    if isinstance(source, torch.nn.Module):
        return source.eval()
    return runtime.load(source).eval()


# ----------------------------------------------------------------------------- LM metrics


def _lm_metrics(model, batches, window, pos_edges, dist_edges, name) -> tuple:
    """``(perplexity, episodes)`` results of one model over the held-out batches (LongPPL, on the
    texts of these sequences, is :meth:`KeySpans.score`). Packed batches are measured per document
    (:mod:`tokenweight.evaluate.packed`)."""
    from tokenweight.evaluate.packed import position_nll

    ppl = PositionPerplexity(pos_edges, window)
    rec = EpisodeRecall(dist_edges)
    any_episodes = False
    for b in tqdm(batches, desc=f"{name}: perplexity", disable=None):
        ppl.update(*position_nll(model, b))
        if any(b["episodes"]):
            any_episodes = True
            rec.update(score_episodes(model, b["input_ids"], b["episodes"], b["attention_mask"], b["doc_lengths"]))
    return ppl.result(), (rec.result() if any_episodes else None)


# ----------------------------------------------------------------------------- one model, one run


def _evaluate_one(
    name, source, *, load, batches, evaluator, window, pos_edges, dist_edges, samples, tokenizer, config
) -> dict:
    """The results entry of one model (docs/EVALUATION.md, ``models[i]``); ``load()`` gives the model."""
    from tokenweight.models import count_parameters

    tm = time.perf_counter()
    model = load()
    entry = {
        "name": name,
        "source": str(source) if isinstance(source, (str, Path)) else IN_MEMORY,
        "parameters": count_parameters(model),
        "perplexity": None,
        "longppl": None,
        "episodes": None,
        "tasks": [],
        "runtime": _model_runtime(model),
    }
    if batches:
        entry["perplexity"], entry["episodes"] = _lm_metrics(model, batches, window, pos_edges, dist_edges, name)
        if evaluator is not None:
            entry["longppl"] = evaluator.score(model, name)
    if samples:
        entry["tasks"] = task_rows(
            model,
            tokenizer,
            samples,
            batch_size=config.batch_size,
            batch_tokens=config.batch_tokens,
            generation=config.generation,
            max_new_tokens=config.max_new_tokens,
            name=name,
        )
    entry["seconds"] = round(time.perf_counter() - tm, 3)
    return entry


def _model_runtime(model) -> dict:
    """Where and how a model ran: its device, parameter dtype and attention implementation."""
    param = next(model.parameters(), None)
    return {
        "device": str(param.device) if param is not None else "cpu",
        "dtype": str(param.dtype).removeprefix("torch.") if param is not None else None,
        "attn_implementation": getattr(getattr(model, "config", None), "_attn_implementation", None),
    }


def _longppl_evaluator(models: Mapping[str, Any], inputs: RunInputs) -> tuple[KeySpans | None, Any]:
    """``(evaluator, source)``: the LongPPL key-token judge of every model and what it is loaded
    from (:func:`tokenweight.evaluate.longppl_suite.longppl_judge`); ``(None, None)`` without
    held-out text beyond ``longppl_trunc_len`` evaluator tokens."""
    from tokenweight.evaluate.packed import split_documents  # packed rows: each document is its own text

    config = inputs.config
    rows = split_documents(inputs.rows)
    return longppl_judge(models, rows, inputs.tokenizer, config, lambda src: evaluation_model(src, config.runtime()))


def _task_samples(inputs: RunInputs, tasks_to_run: list[str]) -> tuple[dict, list, dict]:
    """``(samples, skipped, task_inputs)`` of :func:`~tokenweight.evaluate.task_metrics.suite_samples`,
    the same for every model."""
    from tokenweight.evaluate.packed import split_documents  # the data haystack's documents

    rows = split_documents(inputs.rows)
    return suite_samples(inputs.config, inputs.tokenizer, tasks_to_run, inputs.lengths, inputs.depths, rows)


def _results_config(inputs: RunInputs) -> dict:
    """The results' ``config``: the settings with everything resolved."""
    cfg = inputs.config.to_json()
    cfg.update(
        device=inputs.config.runtime().device,  # auto resolved: results (and cache keys) name the device
        window=inputs.window,
        lengths=inputs.lengths,
        position_edges=inputs.pos_edges,
        distance_edges=inputs.dist_edges,
        depths=inputs.depths,
    )
    return cfg


def _data_info(data_dir, inputs: RunInputs) -> dict | None:
    """The results' ``data`` record (None without data)."""
    if data_dir is None:
        return None
    from tokenweight.io_utils import fingerprint

    rows = inputs.rows
    info = {
        "dir": str(data_dir),
        "fingerprint": (inputs.manifest or {}).get("fingerprint"),
        "n": inputs.n,
        "sequences": len(rows),
        "tokens": sum(len(r["input_ids"]) for r in rows),
        "episodes": sum(len(r["episodes"]) for r in rows),
    }
    packed = [r["doc_lengths"] for r in rows if r.get("doc_lengths") is not None]
    if packed:  # only then: an unpacked record (and its cache key) stays what it was
        info.update(packed=True, documents=sum(map(len, packed)), packing=fingerprint(packed))
    return info


def _model_entries(
    models: Mapping[str, Any], inputs: RunInputs, evaluator, samples: dict, cache_dir, shared: dict | None, harness
) -> tuple[list[dict], dict | None]:
    """``(entries, evaluator_info)``: every model's results entry in order, from the cache when it
    holds it, else evaluated (and then cached); and the results' ``evaluator`` record. The
    lm-eval results (``harness``: a :class:`~tokenweight.evaluate.harness.HarnessPlan`) are cached
    on their own, so that other harness tasks leave the rest of an entry cached, and vice versa."""
    entries, evaluator_info = [], None
    for name, source in models.items():
        load = functools.cache(lambda s=source: evaluation_model(s, inputs.config.runtime()))  # once, when needed
        path = _cache_path(cache_dir, shared, source)
        cached = _read_cached(path)
        if cached is not None:
            entry, evaluator_info = {**cached["entry"], "name": name, "source": str(source)}, cached["evaluator"]
        else:
            entry = _evaluate_one(
                name,
                source,
                load=load,
                batches=inputs.batches,
                evaluator=evaluator,
                window=inputs.window,
                pos_edges=inputs.pos_edges,
                dist_edges=inputs.dist_edges,
                samples=samples,
                tokenizer=inputs.tokenizer,
                config=inputs.config,
            )
            if evaluator is not None:
                evaluator_info = evaluator.info()
            if path is not None:
                _write_cached(path, entry, evaluator_info)
        entry["harness"] = model_harness(name, source, load, inputs, harness, cache_dir)
        entries.append(entry)
    if evaluator_info is not None:
        evaluator_info["name"] = evaluator.name
    return entries, evaluator_info


def _results_document(cfg: dict, data_info, evaluator_info, skipped: list, entries: list[dict], t0: float) -> dict:
    """The checked results document (docs/EVALUATION.md)."""
    from tokenweight import __version__

    results = {
        "schema_version": SCHEMA_VERSION,
        "tokenweight_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": cfg,
        "data": data_info,
        "evaluator": evaluator_info,
        "skipped_tasks": skipped,
        "models": entries,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return check_results(_finite(add_summaries(results)))


# ----------------------------------------------------------------------------- API


@dataclass
class EvalPlan:
    """A run checked and resolved (:func:`plan_evaluation`): what :func:`run_evaluation` evaluates."""

    models: Mapping[str, Any]  # display name -> model folder, hub id or object, in display order
    data_dir: str | Path | None
    inputs: RunInputs
    tasks: list[str]  # the task names to run
    harness: HarnessPlan | None  # the lm-eval tasks (None without --harness)
    started: float  # time.perf_counter() when planning began (the results' ``seconds``)


def plan_evaluation(models: Mapping[str, Any], tokenizer=None, data_dir=None, *, config) -> EvalPlan:
    """Resolve the run's inputs (:func:`tokenweight.evaluate.inputs.load_inputs`)
    and its lm-eval tasks (:func:`tokenweight.evaluate.harness.plan_harness`, with the same task
    lengths and tokenizer folder as the native tasks). Bad input is a ``ValueError`` or a one-line
    ``UsageError``; no model is loaded and nothing is written."""
    t0 = time.perf_counter()  # ``config``: already checked (its stage, or evaluate_models)
    if not models:
        raise ValueError("models must hold at least one model")
    tasks_to_run = config_task_names(config)
    inputs = load_inputs(models, tokenizer, data_dir, config)
    harness = plan_harness(config, lengths=inputs.lengths, tokenizer_folder=inputs.tokenizer_folder)
    return EvalPlan(dict(models), data_dir, inputs, tasks_to_run, harness, t0)


def evaluate_models(
    models: Mapping[str, Any],
    tokenizer=None,
    data_dir: str | Path | None = None,
    *,
    config,
    cache_dir: str | Path | None = None,
) -> dict:
    """Evaluate several models side by side; return the results document (docs/EVALUATION.md).

    Args:
        models: display name -> model folder (HF format) or model object, in display order.
        tokenizer: a tokenizer, a tokenizer folder, or None (the prepared data's, else the first
            model folder's).
        data_dir: a prepared folder (``tokenweight prepare``): its validation split gives
            perplexity by position, LongPPL and episode recall; None skips those metrics.
        config: the stage's ``EvalConfig`` (:class:`tokenweight.stages.evaluate.EvalConfig`).
        cache_dir: when given, each model's entry is saved there as soon as it is done, keyed by a
            fingerprint of the model's files, the resolved config, the data, the tokenizer and the
            evaluator; a rerun (after a crash, or with one more model) reuses every entry whose
            fingerprint matches (a damaged entry is refused). Models given as objects are never
            cached. One process at a time writes a ``cache_dir``: a second one is refused before
            any model is loaded (:func:`tokenweight.outputs.output_lock`).
    """
    config.check()
    return run_evaluation(plan_evaluation(models, tokenizer, data_dir, config=config), cache_dir)


def run_evaluation(plan: EvalPlan, cache_dir: str | Path | None = None) -> dict:
    """The results document of a planned run (:func:`plan_evaluation`); ``cache_dir``: as
    :func:`evaluate_models`'s, held under its :func:`tokenweight.outputs.output_lock` meanwhile."""
    if cache_dir is None:
        return _run(plan, None)
    from tokenweight.outputs import output_lock

    with output_lock(cache_dir):
        return _run(plan, cache_dir)


def _run(plan: EvalPlan, cache_dir) -> dict:
    models, inputs = plan.models, plan.inputs
    evaluator, ev_source = _longppl_evaluator(models, inputs)
    samples, skipped, task_inputs = _task_samples(inputs, plan.tasks)
    cfg = {**_results_config(inputs), "task_inputs": task_inputs}
    data_info = _data_info(plan.data_dir, inputs)
    shared = _cache_shared(
        cache_dir, {**cfg, "ruler_threshold": None}, data_info, inputs.tokenizer, evaluator, ev_source,
        schema=SCHEMA_VERSION, own_key_fields=HARNESS_FIELDS,
    )  # fmt: skip
    entries, evaluator_info = _model_entries(models, inputs, evaluator, samples, cache_dir, shared, plan.harness)
    return _results_document(cfg, data_info, evaluator_info, skipped, entries, plan.started)
