"""Training records for the report: the per-step log (``log.jsonl``) and the run summary.

A training run writes one JSON object per logged step to ``out_dir/log.jsonl`` and a summary JSON
(tokenweight.train). The report reads only what it shows: the loss curves and the per-step weight
statistics, and the run's wall time and throughput. Field names are those of tokenweight.train
(``WeightedTrainer.log``, ``summary.json`` of ``tokenweight.train.runner``); the Hugging Face
Trainer's own names (``loss``, ``train_runtime``, ``train_tokens_per_second``) are accepted as a
fallback, so a log written by a plain ``Trainer`` also
plots. ``results.json`` holds the curves under tokenweight.train's names.

Why curves are decimated: a long run logs thousands of steps; the report keeps at most
:data:`MAX_CURVE_POINTS` evenly spaced records (always the first and the last), which a plot
cannot tell apart from the full log, so ``results.json`` stays small.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from tokenweight.errors import UsageError

MAX_CURVE_POINTS = 1000

#: field -> accepted names in a log record, first found wins: tokenweight.train's names
#: (WeightedTrainer.log), then those of a plain HF Trainer
LOG_FIELDS: dict[str, tuple[str, ...]] = {
    "step": ("step",),
    "weighted_loss": ("weighted_loss", "loss"),
    "plain_loss": ("plain_loss",),
    "weight_mean": ("weight_mean",),
    "weight_std": ("weight_std",),
    "weight_max": ("weight_max",),
    "weight_zero_share": ("weight_zero_share",),
    "learning_rate": ("learning_rate",),
    "tokens_per_s": ("tokens_per_s",),
}

#: field -> accepted names in a train summary (tokenweight.train.runner's summary.json, then HF's metrics)
SUMMARY_FIELDS: dict[str, tuple[str, ...]] = {
    "wall_time_s": ("wall_time_s", "train_runtime"),
    "tokens_per_s": ("tokens_per_s", "train_tokens_per_second"),
    "tokens": ("tokens",),
    "steps": ("steps",),
}


def _number(x) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def _pick(record: Mapping, names: tuple[str, ...]) -> float | None:
    for name in names:
        if name in record:
            return _number(record[name])
    return None


def summary_value(summary: Mapping | None, field: str) -> float | None:
    """A canonical field of a train summary (see :data:`SUMMARY_FIELDS`), None when absent."""
    if field not in SUMMARY_FIELDS:
        raise ValueError(f"field must be one of {', '.join(SUMMARY_FIELDS)}, got {field!r}")
    return _pick(summary or {}, SUMMARY_FIELDS[field])


def read_log(path: str | Path) -> list[dict]:
    """Per-step records of a ``log.jsonl`` with canonical keys (absent fields left out).

    Records without a step or without any loss (e.g. evaluation or end-of-training lines) are
    skipped; when a step was logged twice (a resumed run), the later record wins. Returned in step
    order. A missing file or a line that is not JSON raises ``UsageError``.
    """
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"training log {str(p)!r} does not exist: pass the log.jsonl of a finished run, or null")
    by_step: dict[float, dict] = {}
    with open(p, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if not f.read().strip():  # a last line cut off by a kill: the run's earlier steps stand
                    break
                raise UsageError(
                    f"training log {str(p)!r} line {lineno} is not JSON: fix or remove that line"
                ) from None
            if not isinstance(record, dict):
                continue
            out = {k: v for k, names in LOG_FIELDS.items() if (v := _pick(record, names)) is not None}
            if "step" in out and ("weighted_loss" in out or "plain_loss" in out):
                out["step"] = int(out["step"])
                by_step[out["step"]] = out
    return [by_step[s] for s in sorted(by_step)]


def decimate(records: list[dict], max_points: int = MAX_CURVE_POINTS) -> list[dict]:
    """At most ``max_points`` records, evenly spaced by index, first and last always kept."""
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    if len(records) <= max_points:
        return list(records)
    last = len(records) - 1
    idx = sorted({round(i * last / (max_points - 1)) for i in range(max_points)})
    return [records[i] for i in idx]
