"""The evaluation cache (``OUT/.cache``): one JSON record per model and per kind of result.

A record is ``{"entry": ..., "evaluator": ..., "digest": ...}``, written atomically as soon as a
model is done and named by a fingerprint of everything the result depends on, so that a rerun
(after a crash, with one more model, with other lm-eval tasks) reuses exactly what still holds.
Two kinds share the format and the checks: the suite's entry of a model (:func:`shared_key` and
:func:`entry_path`, used by :mod:`tokenweight.evaluate.runner`) and its lm-evaluation-harness
results (:mod:`tokenweight.evaluate.harness`). A record whose content does not match its digest,
or that is not JSON, is refused with one line naming the file, never used.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tokenweight.errors import UsageError
from tokenweight.identity import is_hub_id, model_digest, tokenizer_digest
from tokenweight.io_utils import atomic_write_json, fingerprint

#: the results' ``data`` fields a cached entry depends on; the packed ones exist for packed data only
DATA_KEYS = ("fingerprint", "n", "sequences", "tokens", "documents", "packing")


def model_digest_or_none(source) -> str | None:
    """:func:`tokenweight.identity.model_digest` of a model folder or cached hub id; None (not
    cacheable) for an in-memory model and for a hub id that is not in the local HF cache yet."""
    if not isinstance(source, (str, Path)):
        return None
    try:
        return model_digest(source)
    except UsageError:
        if is_hub_id(source):
            return None
        raise


def shared_key(
    cache_dir, cfg: dict, data_info: dict | None, tokenizer, evaluator, ev_source, *, schema, own_key_fields=()
) -> dict | None:
    """The part of every model's cache key that the models of a run share; None: nothing is cached
    (no ``cache_dir``, or an evaluator that cannot be fingerprinted). ``schema``: the results'
    schema version; ``own_key_fields``: config fields keyed by records of their own (the
    lm-eval harness's), left out here. The cache imports nothing of tokenweight.evaluate."""
    from tokenweight import __version__

    shared = None
    ev_digest = model_digest_or_none(ev_source) if evaluator is not None and cache_dir is not None else None
    if cache_dir is not None and (evaluator is None or ev_digest is not None):
        shared = {
            "version": __version__,
            "schema": schema,
            # the lm-eval settings key the harness records of their own (tokenweight.evaluate.harness)
            "config": {**{k: v for k, v in cfg.items() if k not in own_key_fields}, "evaluator": None},
            # packed data (tokenweight.evaluate.packed) adds its documents' layout; unpacked keys stay as they were
            "data": data_info and {k: data_info[k] for k in DATA_KEYS if k in data_info},
            "tokenizer": tokenizer_digest(tokenizer),
            "evaluator": evaluator and {"model": ev_digest, **evaluator.identity()},
        }
    return shared


def entry_path(cache_dir, shared: dict | None, source, prefix: str = "") -> Path | None:
    """The cache file of one model's record; None when it is not cached (in-memory model, no cache)."""
    digest = model_digest_or_none(source) if shared is not None else None
    return Path(cache_dir) / f"{prefix}{fingerprint({'model': digest, **shared})}.json" if digest else None


def record_digest(record: dict) -> str:
    return fingerprint({"entry": record.get("entry"), "evaluator": record.get("evaluator")})


def read_record(path: Path | None) -> dict | None:
    """The cached ``{"entry", "evaluator"}`` record at ``path``; None when there is none. A
    damaged or truncated record is refused (one line naming it and the fix), never used."""
    if path is None or not path.is_file():
        return None
    fix = "delete it and rerun (that model is evaluated again)"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise UsageError(f"evaluation cache entry {str(path)!r} is truncated or damaged (not JSON): {fix}") from None
    if not isinstance(record, dict) or not isinstance(record.get("entry"), dict):
        raise UsageError(f"evaluation cache entry {str(path)!r} is damaged (no entry): {fix}")
    if "digest" in record and record["digest"] != record_digest(record):  # older versions wrote none
        raise UsageError(f"evaluation cache entry {str(path)!r} is corrupted (its digest does not match): {fix}")
    return record


def write_record(path: Path, entry: dict, evaluator_info: dict | None) -> None:
    """One model's record, with a digest of its content (checked when it is read back)."""
    record = json.loads(json.dumps(finite({"entry": entry, "evaluator": evaluator_info})))
    atomic_write_json(path, {**record, "digest": record_digest(record)})


def finite(obj):
    """Plain JSON: non-finite floats (a perplexity that overflows) become None; ``nll`` stays."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj
