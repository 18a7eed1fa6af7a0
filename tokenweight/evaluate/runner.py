"""The evaluation suite over several models, side by side, on identical inputs.

:func:`evaluate_models` is the Python API (the CLI and the demo call it); it returns the results
document of :mod:`tokenweight.evaluate.results`, and :func:`write_outputs` writes it (JSON, console
table, plots). What is shared between models is computed once:

- the held-out sequences (the ``validation`` split of a prepared folder, at most
  ``max_sequences`` of them; packed rows are measured per document, :mod:`.packed`) and their batches;
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

Resumable: with ``cache_dir`` (the CLI uses ``OUT/.cache``) each model's entry is written as soon as
it is done, keyed by a fingerprint of everything it depends on; a rerun reuses it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tokenweight.config import RuntimeOptions, StageConfig, check_int, option
from tokenweight.errors import UsageError
from tokenweight.evaluate.cache import entry_path as _cache_path
from tokenweight.evaluate.cache import finite as _finite
from tokenweight.evaluate.cache import read_record as _read_cached
from tokenweight.evaluate.cache import shared_key as _cache_shared
from tokenweight.evaluate.cache import write_record as _write_cached
from tokenweight.evaluate.effective_length import DEFAULT_THRESHOLD, add_summaries
from tokenweight.evaluate.episodes import EpisodeRecall, score_episodes
from tokenweight.evaluate.harness import FIELDS as HARNESS_FIELDS
from tokenweight.evaluate.harness import GROUP as HARNESS
from tokenweight.evaluate.harness import check_options as check_harness_options
from tokenweight.evaluate.harness import model_harness, plan_harness
from tokenweight.evaluate.lm_metrics import PositionPerplexity, check_edges, default_edges
from tokenweight.evaluate.longppl_suite import KeySpans, longppl_judge
from tokenweight.evaluate.results import SCHEMA_VERSION, check_results
from tokenweight.evaluate.task_metrics import (
    DEFAULT_DEPTHS,
    check_task_options,
    config_task_names,
    suite_samples,
    task_rows,
)
from tokenweight.evaluate.task_metrics import GROUP as TASKS_GROUP
from tokenweight.evaluate.tasks.sources import HAYSTACK_HELP
from tokenweight.identity import check_model_tokenizer, has_tokenizer, load_tokenizer
from tokenweight.io_utils import atomic_write_json

IN_MEMORY = "<in-memory>"


#: fields of the evaluate stage that say where models, data and outputs are, not how they are
#: evaluated: they are not part of the results' ``config`` nor of any cache key
STAGE_FIELDS = ("models", "names", "data", "out", "cache")


@dataclass
class EvalConfig(RuntimeOptions, StageConfig):
    """Settings of an evaluation run (every setting is recorded in the results' ``config``; the
    runtime options are :class:`tokenweight.config.RuntimeOptions`: every model is loaded with them).

    ``lengths`` gets a length inside the native window when it has none, so that a task the model
    cannot do even at short context shows as such. Tasks without a needle get ``num_samples *
    len(depths)`` samples, so every task has as many; the same samples for every model.
    ``evaluator`` may also be a model object (Python only). ``window`` None: the prepared data's
    manifest ``window``, else ``n // 4`` as in the paper's 8k -> 32k setting.
    """

    models: list[str] = option(
        factory=list,
        help="model folders (HF format) or hub ids, compared side by side",
        positional=True,
        metavar="MODEL",
    )
    names: list[str] | None = option(None, "display names, one per MODEL (none: folder names)")
    data: str | None = option(
        None,
        "prepared folder: its validation split gives perplexity by position, LongPPL and episode recall",
        metavar="PREPARED_DIR",
    )
    out: str = option("runs/eval", "output folder", metavar="DIR")
    cache: bool = option(True, "reuse OUT/.cache entries of an earlier run (an interrupted evaluation continues)")
    lengths: list[int] = option(factory=lambda: [256, 512, 1024], help="task lengths in tokens")
    tasks: list[str] = option(factory=lambda: ["all"], help="task names, all, or none ('tokenweight tasks' lists them)")
    num_samples: int = option(2, "samples per task, length and needle depth")
    window: int | None = option(None, "native window w (none: the data manifest's window, else n/4)")
    longppl_trunc_len: int = option(
        4096, "LongPPL: short context of the first key-token candidate; earlier tokens are never key tokens (Fang's)"
    )
    longppl_sliding_window: int = option(
        1024, "LongPPL: candidates per short window: each sees trunc_len to trunc_len + this - 1 tokens (Fang's)"
    )
    longppl_alpha: float = option(2.0, "LongPPL key-token threshold on LSD")
    longppl_beta: float = option(-2.0, "LongPPL key-token threshold on LCL")
    evaluator: Any = option(
        None, "LongPPL evaluator: a name from --names or a model folder (none: the first model)", metavar="MODEL"
    )
    evaluator_tokenizer: Any = option(
        None,
        "tokenizer of the LongPPL evaluator, which may differ from the models' (none: the evaluator folder's, "
        "else the data's)",
        metavar="DIR|ID",
    )
    position_edges: list[int] | None = option(
        None, "bucket edges in tokens for perplexity by position (none: multiples of w up to n)"
    )
    distance_edges: list[int] | None = option(
        None, "bucket edges in tokens for episode recall by distance (none: the position edges)"
    )
    batch_size: int = option(4, "sequences or samples per forward pass")
    batch_tokens: int | None = option(
        32768,
        "at most this many tokens per forward pass (rows x padded length; a longer row runs alone), and at "
        "most --batch-size rows (none: --batch-size rows)",
    )
    max_sequences: int | None = option(32, "held-out sequences used (none: all)")
    generation: bool = option(True, "also score tasks by batched greedy generation (slower than likelihood)")
    max_new_tokens: int | None = option(
        None,
        "generation budget in tokens; 0: RULER's per task (128 for NIAH); none: the longest answer x 1.5 + 8, "
        "at most RULER's",
    )
    depths: list[float] | None = option(None, "needle depths in [0, 1] (none: 0,0.25,0.5,0.75,1)")
    seed: int = option(0, "seed of the task samples")
    haystack: str = option("essay", HAYSTACK_HELP, metavar="essay|noise|data|FILE|DIR", group=TASKS_GROUP)
    squad: str | None = option(None, "SQuAD JSON of qa_1 (RULER: dev-v2.0.json)", metavar="FILE", group=TASKS_GROUP)
    hotpotqa: str | None = option(None, "HotpotQA JSON of qa_2 (RULER: dev set)", metavar="FILE", group=TASKS_GROUP)
    ruler_threshold: float = option(DEFAULT_THRESHOLD, "RULER effective length: mean score to beat", group=TASKS_GROUP)
    harness: list[str] | None = option(
        None, "lm-evaluation-harness tasks run on every model, e.g. mmlu,longbench (lm-eval ls tasks)", group=HARNESS
    )
    harness_include: str | None = option(
        None, "folder of your own lm-eval task YAMLs (lm-eval's --include_path)", metavar="DIR", group=HARNESS
    )
    harness_limit: int | None = option(None, "at most N documents per harness task (none: all)", group=HARNESS)
    harness_num_fewshot: int | None = option(
        None, "few-shot examples of the harness tasks (none: each task's default)", group=HARNESS
    )

    def selected_tasks(self) -> list[str] | None:
        """The task names to run: None for every registered task."""
        if self.tasks is None or list(self.tasks) == ["all"]:
            return None
        return [t for t in self.tasks if t != "none"]

    def validate(self) -> None:
        if not self.lengths or any(not isinstance(x, int) or x < 2 for x in self.lengths):
            raise ValueError(f"lengths must be a non-empty list of integers >= 2, got {self.lengths}")
        check_int(self, "num_samples", 1)
        check_int(self, "batch_size", 1)
        check_int(self, "batch_tokens", 1, optional=True)
        self.validate_runtime()
        check_int(self, "window", 2, optional=True)
        check_int(self, "longppl_trunc_len", 1)
        check_int(self, "longppl_sliding_window", 1)
        check_int(self, "max_sequences", 1, optional=True)
        check_int(self, "max_new_tokens", 0, optional=True)
        check_int(self, "seed", 0)
        if self.depths is not None and any(not 0.0 <= d <= 1.0 for d in self.depths):
            raise ValueError(f"depths must lie in [0, 1], got {self.depths}")
        for name in ("position_edges", "distance_edges"):
            if getattr(self, name) is not None:
                check_edges(getattr(self, name), name)
        if self.names is not None:
            if len(self.names) != len(self.models):
                raise ValueError(f"names has {len(self.names)} names for {len(self.models)} models: give one per MODEL")
            if len(set(self.names)) != len(self.names):
                raise ValueError(f"names {self.names} has duplicates: give every model its own name")
        check_harness_options(self)
        check_task_options(self)

    def display_names(self) -> list[str]:
        """``names``, or the models' folder names made unique."""
        if self.names is not None:
            return list(self.names)
        names = [Path(m).name or str(m) for m in self.models]
        return [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]

    def to_json(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in STAGE_FIELDS}
        d["tasks"] = self.selected_tasks()
        ev = self.evaluator
        d["evaluator"] = ev if ev is None or isinstance(ev, str) else IN_MEMORY
        tok = self.evaluator_tokenizer
        d["evaluator_tokenizer"] = (
            tok if tok is None or isinstance(tok, str) else IN_MEMORY if not isinstance(tok, Path) else str(tok)
        )
        return d


# ----------------------------------------------------------------------------- loading


def load_model(source, runtime=None):
    """A model from a path (``runtime.load``: :func:`tokenweight.models.load_model` with the run's
    device, dtype and attention; None: the defaults) or an already built model (used where it is).

    The one place where the evaluation loads models; the model is put in eval mode.
    """
    if isinstance(source, torch.nn.Module):
        return source.eval()
    from tokenweight.models import resolve_runtime

    return (runtime or resolve_runtime()).load(source).eval()


def _load_tokenizer(tokenizer, data_dir, models: Mapping[str, Any]) -> tuple[Any, str]:
    """``(tokenizer, where it comes from)``: the one given, else the prepared data's, else the first
    model folder's that holds one."""
    if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
        return tokenizer, "the tokenizer given"
    if tokenizer is not None:
        return load_tokenizer(tokenizer), f"the tokenizer {str(tokenizer)!r}"
    if data_dir is not None:
        return load_tokenizer(Path(data_dir) / "tokenizer"), f"the data {str(data_dir)!r}"
    for src in models.values():
        if isinstance(src, (str, Path)) and has_tokenizer(src):
            return load_tokenizer(src), f"model {str(src)!r}"
    raise UsageError(
        "no tokenizer: pass --data PREPARED_DIR (its tokenizer/ is used) or a model folder that holds a tokenizer"
    )


def _load_validation(data_dir, max_sequences: int | None):
    """``(rows, manifest)``: the held-out sequences as dicts with input_ids, episodes and
    doc_lengths (packed folders, :mod:`tokenweight.evaluate.packed`: a row is cut to its documents'
    tokens; None: one document per row)."""
    from tokenweight.data import load_prepared
    from tokenweight.evaluate.packed import read_doc_lengths

    dsd, manifest = load_prepared(data_dir)
    if "validation" not in dsd or len(dsd["validation"]) == 0:
        raise UsageError(
            f"prepared data {str(data_dir)!r} has no validation sequences: prepare it with a validation split"
        )
    val = dsd["validation"]
    if max_sequences is not None:
        val = val.select(range(min(max_sequences, len(val))))
    cols = ["input_ids"] + (["episodes"] if "episodes" in val.column_names else [])
    rows = [{"input_ids": r["input_ids"], "episodes": r.get("episodes") or []} for r in val.select_columns(cols)]
    for r, lengths in zip(rows, read_doc_lengths(val, f"prepared data {str(data_dir)!r}, validation") or []):
        r["input_ids"], r["doc_lengths"] = r["input_ids"][: sum(lengths)], lengths  # the rest is padding
    return rows, manifest


def _batches(rows: list[dict], batch_size: int, batch_tokens: int | None = None) -> list[dict]:
    """Right-padded batches of consecutive rows, at most ``batch_size`` rows and ``batch_tokens``
    tokens each (:func:`tokenweight.evaluate.batching.token_groups`): ``input_ids`` [b, n] long,
    ``attention_mask`` [b, n], ``episodes``, ``doc_lengths`` (None unless packed). They stay on the
    CPU; each pass moves them to its model."""
    from tokenweight.evaluate.batching import token_groups

    out = []
    for group in token_groups([len(r["input_ids"]) for r in rows], batch_size, batch_tokens):
        chunk = [rows[i] for i in group]
        n = max(len(r["input_ids"]) for r in chunk)
        ids = torch.zeros(len(chunk), n, dtype=torch.long)
        mask = torch.zeros(len(chunk), n, dtype=torch.long)
        for j, r in enumerate(chunk):
            ids[j, : len(r["input_ids"])] = torch.as_tensor(r["input_ids"], dtype=torch.long)
            mask[j, : len(r["input_ids"])] = 1
        packed = [r.get("doc_lengths") for r in chunk]
        packed = None if all(x is None for x in packed) else [x or [len(r["input_ids"])] for x, r in zip(packed, chunk)]
        out.append({"input_ids": ids, "attention_mask": mask, "episodes": [r["episodes"] for r in chunk]})
        out[-1]["doc_lengths"] = packed
    return out


def _resolve_window(config: EvalConfig, manifest: dict | None, n: int | None) -> int:
    if config.window is not None:
        return int(config.window)
    if manifest and manifest.get("window"):
        return int(manifest["window"])
    if n:
        return max(2, n // 4)
    return min(int(x) for x in config.lengths)


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


# ----------------------------------------------------------------------------- API


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


@dataclass
class _RunInputs:
    """What every model of a run is evaluated on, loaded and resolved once (:func:`_load_inputs`)."""

    config: EvalConfig
    tokenizer: Any
    rows: list[dict]  # held-out sequences (input_ids, episodes); empty without data
    manifest: dict | None  # the prepared data's manifest
    batches: list[dict]  # the rows' padded batches (:func:`_batches`)
    n: int | None  # the longest held-out sequence; None without data
    window: int  # native window w
    lengths: list[int]  # task lengths, sorted, one inside the window
    depths: list[float]  # needle depths of the task samples
    pos_edges: list[int] | None  # bucket edges of perplexity by position
    dist_edges: list[int] | None  # bucket edges of episode recall by distance


def _load_inputs(models: Mapping[str, Any], tokenizer, data_dir, config: EvalConfig) -> _RunInputs:
    """The held-out rows and batches, the tokenizer, and the window, lengths, depths and edges they resolve."""
    rows, manifest, batches, n = [], None, [], None
    if data_dir is not None:
        rows, manifest = _load_validation(data_dir, config.max_sequences)
        batches = _batches(rows, config.batch_size, config.batch_tokens)
        n = max(len(r["input_ids"]) for r in rows)
    tok, ref_name = _load_tokenizer(tokenizer, data_dir, models)
    fix = {  # the data's tokenizer: None, the default fix (prepare the data with the model's)
        "given": "pass the model's own tokenizer, or a model trained with this tokenizer",
        "none": "evaluate models with different tokenizers in separate runs, or pass --data PREPARED_DIR",
    }.get("given" if tokenizer is not None else "none" if data_dir is None else "")
    for src in (m for m in models.values() if isinstance(m, (str, Path))):  # before any model is loaded
        check_model_tokenizer(src, tok, ref_name=ref_name, fix=fix)
    window = _resolve_window(config, manifest, n)
    lengths = sorted({int(x) for x in config.lengths})
    if not any(x <= window for x in lengths):
        lengths = [window] + lengths
    pos_edges = config.position_edges or (default_edges(n, window) if n else None)
    return _RunInputs(
        config=config,
        tokenizer=tok,
        rows=rows,
        manifest=manifest,
        batches=batches,
        n=n,
        window=window,
        lengths=lengths,
        depths=list(config.depths) if config.depths is not None else list(DEFAULT_DEPTHS),
        pos_edges=pos_edges,
        dist_edges=config.distance_edges or pos_edges,
    )


def _longppl_evaluator(models: Mapping[str, Any], inputs: _RunInputs) -> tuple[KeySpans | None, Any]:
    """``(evaluator, source)``: the LongPPL key-token judge of every model and what it is loaded
    from (:func:`tokenweight.evaluate.longppl_suite.longppl_judge`); ``(None, None)`` without
    held-out text beyond ``longppl_trunc_len`` evaluator tokens."""
    from tokenweight.evaluate.packed import split_documents  # packed rows: each document is its own text

    config = inputs.config
    rows = split_documents(inputs.rows)
    return longppl_judge(models, rows, inputs.tokenizer, config, lambda src: load_model(src, config.runtime()))


def _task_samples(inputs: _RunInputs, tasks_to_run: list[str]) -> tuple[dict, list, dict]:
    """``(samples, skipped, task_inputs)`` of :func:`~tokenweight.evaluate.task_metrics.suite_samples`,
    the same for every model."""
    from tokenweight.evaluate.packed import split_documents  # the data haystack's documents

    rows = split_documents(inputs.rows)
    return suite_samples(inputs.config, inputs.tokenizer, tasks_to_run, inputs.lengths, inputs.depths, rows)


def _results_config(inputs: _RunInputs) -> dict:
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


def _data_info(data_dir, inputs: _RunInputs) -> dict | None:
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
    models: Mapping[str, Any], inputs: _RunInputs, evaluator, samples: dict, cache_dir, shared: dict | None, harness
) -> tuple[list[dict], dict | None]:
    """``(entries, evaluator_info)``: every model's results entry in order, from the cache when it
    holds it, else evaluated (and then cached); and the results' ``evaluator`` record. The
    lm-eval results (``harness``: a :class:`~tokenweight.evaluate.harness.HarnessPlan`) are cached
    on their own, so that other harness tasks leave the rest of an entry cached, and vice versa."""
    entries, evaluator_info = [], None
    for name, source in models.items():
        load = functools.cache(lambda s=source: load_model(s, inputs.config.runtime()))  # once, when needed
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


def evaluate_models(
    models: Mapping[str, Any],
    tokenizer=None,
    data_dir: str | Path | None = None,
    config: EvalConfig | None = None,
    cache_dir: str | Path | None = None,
) -> dict:
    """Evaluate several models side by side; return the results document (docs/EVALUATION.md).

    Args:
        models: display name -> model folder (HF format) or model object, in display order.
        tokenizer: a tokenizer, a tokenizer folder, or None (the prepared data's, else the first
            model folder's).
        data_dir: a prepared folder (``tokenweight prepare``): its validation split gives
            perplexity by position, LongPPL and episode recall; None skips those metrics.
        config: :class:`EvalConfig` (defaults when None).
        cache_dir: when given, each model's entry is saved there as soon as it is done, keyed by a
            fingerprint of the model's files, the resolved config, the data, the tokenizer and the
            evaluator; a rerun (after a crash, or with one more model) reuses every entry whose
            fingerprint matches (a damaged entry is refused). Models given as objects are never
            cached. One process at a time writes a ``cache_dir``: a second one is refused at once
            (:func:`tokenweight.io_utils.output_lock`).
    """
    if cache_dir is not None:
        from tokenweight.io_utils import output_lock

        with output_lock(cache_dir):
            return _evaluate_models(models, tokenizer, data_dir, config, cache_dir)
    return _evaluate_models(models, tokenizer, data_dir, config, cache_dir)


def _evaluate_models(models, tokenizer, data_dir, config, cache_dir) -> dict:
    t0 = time.perf_counter()
    config = config or EvalConfig()
    config.validate()
    if not models:
        raise ValueError("models must hold at least one model")
    tasks_to_run = config_task_names(config)
    harness = plan_harness(config, list(models.values()), data_dir, tokenizer)  # before any model is loaded
    inputs = _load_inputs(models, tokenizer, data_dir, config)
    evaluator, ev_source = _longppl_evaluator(models, inputs)
    samples, skipped, task_inputs = _task_samples(inputs, tasks_to_run)
    cfg = {**_results_config(inputs), "task_inputs": task_inputs}
    data_info = _data_info(data_dir, inputs)
    shared = _cache_shared(
        cache_dir, {**cfg, "ruler_threshold": None}, data_info, inputs.tokenizer, evaluator, ev_source,
        schema=SCHEMA_VERSION, own_key_fields=HARNESS_FIELDS,
    )  # fmt: skip
    entries, evaluator_info = _model_entries(models, inputs, evaluator, samples, cache_dir, shared, harness)
    return _results_document(cfg, data_info, evaluator_info, skipped, entries, t0)


def write_outputs(results: dict, out_dir: str | Path) -> dict[str, Any]:
    """Write ``results.json``, ``table.txt`` and the PNG plots into ``out_dir`` (atomically).

    Returns ``{"json": path, "table": path, "plots": [paths], "text": table}``. Holds the
    folder's :func:`tokenweight.io_utils.output_lock` (a second writer is refused at once).
    """
    from tokenweight.evaluate.plots import write_plots
    from tokenweight.evaluate.results import format_tables
    from tokenweight.io_utils import atomic_write_text, output_lock

    check_results(results)
    out = Path(out_dir)
    with output_lock(out):
        out.mkdir(parents=True, exist_ok=True)
        text = format_tables(results)
        atomic_write_json(out / "results.json", results)
        atomic_write_text(out / "table.txt", text + "\n")
        plots = write_plots(results, out)
    return {"json": out / "results.json", "table": out / "table.txt", "plots": plots, "text": text}
