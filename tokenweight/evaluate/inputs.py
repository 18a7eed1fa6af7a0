"""What every model of an evaluation is evaluated on, loaded and resolved once, before any model is
loaded: the held-out rows and their batches, the tokenizer, the native window, the task lengths,
the needle depths and the bucket edges (:func:`load_inputs`).

The rules that the native suite and the lm-evaluation-harness tasks (:mod:`.harness`) share live
here once: the evaluation's tokenizer and its folder (:func:`tokenizer_source`,
:func:`tokenizer_folder`) and the task lengths (:func:`task_lengths`).

``config`` is the stage's ``EvalConfig`` (:mod:`tokenweight.stages.evaluate`), read by its fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tokenweight.errors import UsageError
from tokenweight.evaluate.lm_metrics import default_edges
from tokenweight.evaluate.task_metrics import DEFAULT_DEPTHS
from tokenweight.identity import check_model_tokenizer, has_tokenizer, load_tokenizer


def tokenizer_source(tokenizer, data_dir, models: Mapping[str, Any]) -> tuple[Any, str]:
    """``(source, where it comes from)`` of the evaluation's tokenizer: ``tokenizer`` when given (an
    object, a folder or a hub id), else the prepared data's ``tokenizer/`` folder, else the first
    model folder that holds one (``UsageError`` when there is none)."""
    if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
        return tokenizer, "the tokenizer given"
    if tokenizer is not None:
        return tokenizer, f"the tokenizer {str(tokenizer)!r}"
    if data_dir is not None:
        return Path(data_dir) / "tokenizer", f"the data {str(data_dir)!r}"
    for src in models.values():
        if isinstance(src, (str, Path)) and has_tokenizer(src):
            return src, f"model {str(src)!r}"
    raise UsageError(
        "no tokenizer: pass --data PREPARED_DIR (its tokenizer/ is used) or a model folder that holds a tokenizer"
    )


def tokenizer_folder(source) -> str | None:
    """The local folder of a :func:`tokenizer_source` (a tokenizer object's ``name_or_path``); None
    for a hub id or a tokenizer built in memory."""
    folder = source if isinstance(source, (str, Path)) else getattr(source, "name_or_path", None)
    return str(folder) if folder and Path(folder).is_dir() else None


def task_lengths(lengths, window: int) -> list[int]:
    """The task lengths of a run: ``lengths`` sorted without repeats, with the native ``window`` in
    front when none lies inside it (so that a task the model cannot do even at short context shows
    as such). The native tasks and lm-eval's RULER tasks get these same lengths."""
    out = sorted({int(x) for x in lengths})
    return out if any(x <= window for x in out) else [window] + out


def resolve_window(config, manifest: dict | None, n: int | None) -> int:
    """The native window: ``config.window``, else the prepared data's manifest ``window``, else
    ``n // 4`` (the paper's 8k -> 32k setting), else the shortest task length."""
    if config.window is not None:
        return int(config.window)
    if manifest and manifest.get("window"):
        return int(manifest["window"])
    if n:
        return max(2, n // 4)
    return min(int(x) for x in config.lengths)


def load_validation(data_dir, max_sequences: int | None):
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


def batches(rows: list[dict], batch_size: int, batch_tokens: int | None = None) -> list[dict]:
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


@dataclass
class RunInputs:
    """What every model of a run is evaluated on, loaded and resolved once (:func:`load_inputs`)."""

    config: Any  # the stage's EvalConfig
    tokenizer: Any
    tokenizer_folder: str | None  # its local folder (:func:`tokenizer_folder`); None in memory or on the hub
    rows: list[dict]  # held-out sequences (input_ids, episodes); empty without data
    manifest: dict | None  # the prepared data's manifest
    batches: list[dict]  # the rows' padded batches (:func:`batches`)
    n: int | None  # the longest held-out sequence; None without data
    window: int  # native window w
    lengths: list[int]  # task lengths (:func:`task_lengths`)
    depths: list[float]  # needle depths of the task samples
    pos_edges: list[int] | None  # bucket edges of perplexity by position
    dist_edges: list[int] | None  # bucket edges of episode recall by distance


def load_inputs(models: Mapping[str, Any], tokenizer, data_dir, config) -> RunInputs:
    """The held-out rows and batches, the tokenizer, and the window, lengths, depths and edges they
    resolve; every model folder's own tokenizer is checked against the run's (no model is loaded)."""
    rows, manifest, batched, n = [], None, [], None
    if data_dir is not None:
        rows, manifest = load_validation(data_dir, config.max_sequences)
        batched = batches(rows, config.batch_size, config.batch_tokens)
        n = max(len(r["input_ids"]) for r in rows)
    source, ref_name = tokenizer_source(tokenizer, data_dir, models)
    tok = load_tokenizer(source) if isinstance(source, (str, Path)) else source
    fix = {  # the data's tokenizer: None, the default fix (prepare the data with the model's)
        "given": "pass the model's own tokenizer, or a model trained with this tokenizer",
        "none": "evaluate models with different tokenizers in separate runs, or pass --data PREPARED_DIR",
    }.get("given" if tokenizer is not None else "none" if data_dir is None else "")
    for src in (m for m in models.values() if isinstance(m, (str, Path))):  # before any model is loaded
        check_model_tokenizer(src, tok, ref_name=ref_name, fix=fix)
    window = resolve_window(config, manifest, n)
    pos_edges = config.position_edges or (default_edges(n, window) if n else None)
    return RunInputs(
        config=config,
        tokenizer=tok,
        tokenizer_folder=tokenizer_folder(source),
        rows=rows,
        manifest=manifest,
        batches=batched,
        n=n,
        window=window,
        lengths=task_lengths(config.lengths, window),
        depths=list(config.depths) if config.depths is not None else list(DEFAULT_DEPTHS),
        pos_edges=pos_edges,
        dist_edges=config.distance_edges or pos_edges,
    )
