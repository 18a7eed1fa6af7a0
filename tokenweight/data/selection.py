"""Selecting training data by the long-vs-short contrast: a prepared folder in, its best part out.

The score of a unit (a document, or a row) is the mean of a per-target score over all its targets
(docs/METHOD.md, "Selection"):

- ``longfilter``: ``KL(p_long || p_short)`` (:func:`tokenweight.scoring.context_kl`): how much the
  context beyond the short window changes the model's prediction, LongFilter's information gain;
- ``mean_abs_d``: ``|L_long - L_short|`` of the paper's scores (docs/METHOD.md, step 1), the
  self-scored short context of :func:`tokenweight.scoring.self_scored_short_nll`.

Targets in a row's first window have no shorter context and score 0, so a unit with little text
beyond its first ``w`` tokens scores low. The kept units are the top ``keep`` share by score (ties
by position), and their rows, in their original order, become the ``train`` split of a new
prepared folder (validation and tokenizer unchanged), readable by every stage like any other.

Resumable: the row scores are written in shards of rows to the hidden sibling ``.OUT.select``
(each shard atomically, under the settings that made it), so a killed run continues where it
stopped and ends with the same bytes; the folder itself appears at once, complete
(:func:`tokenweight.io_utils.atomic_dir`), and the shards go.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

from tokenweight.io_utils import atomic_dir, atomic_file, atomic_write_json, checksums, fingerprint, read_json_object

#: the per-target scores a unit is ranked by
METHODS = ("longfilter", "mean_abs_d")
#: what is kept or dropped as a whole
UNITS = ("document", "row")
FORMAT = "tokenweight.selection/1"
SCORES = "selection.json"


def score_dir(out: Path) -> Path:
    """Where the row scores of ``out`` are kept until it is complete: the hidden sibling ``.NAME.select``."""
    return out.parent / f".{out.name}.select"


def row_scores(model, input_ids: list, method: str, window: int, stride: int, bos_token_id, batch_size=None):
    """``(sums [R], counts [R])`` float64: each row's summed target score and its number of targets."""
    import torch

    from tokenweight.scoring import context_kl, self_scored_short_nll, token_nll

    sums, counts = np.zeros(len(input_ids)), np.zeros(len(input_ids))
    for r, ids in enumerate(input_ids):
        row = torch.tensor([ids], dtype=torch.long)
        if row.shape[1] < 2:
            continue
        if method == "longfilter":
            score = context_kl(model, row, window, stride, bos_token_id=bos_token_id, batch_size=batch_size)
        else:
            long = token_nll(model, row)
            short = self_scored_short_nll(
                model, row, long, window, stride, bos_token_id=bos_token_id, batch_size=batch_size
            )
            score = (long - short).abs()
        sums[r], counts[r] = float(score.double().sum()), row.shape[1] - 1
    return sums, counts


def shard_ranges(rows: int, shard_size: int) -> list[tuple[int, int]]:
    return [(a, min(a + shard_size, rows)) for a in range(0, rows, shard_size)]


def scored_rows(work: Path, settings: dict, rows: int, shard_size: int, compute) -> tuple[np.ndarray, np.ndarray]:
    """Every row's ``(sum, count)``, from the shards in ``work`` made with ``settings`` and, for the
    missing ones, ``compute(a, b) -> (sums, counts)``; each new shard is saved at once (atomically).
    Shards of other settings are removed first."""
    from tqdm.auto import tqdm

    if read_json_object(work / "settings.json") != settings:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(work / "settings.json", settings)
    sums, counts = np.zeros(rows), np.zeros(rows)
    ranges = shard_ranges(rows, shard_size)
    with tqdm(total=rows, unit="row", desc="select", disable=None) as bar:
        for k, (a, b) in enumerate(ranges):
            path = work / f"scores-{k:05d}.npy"
            if path.is_file():
                part = np.load(path)
            else:
                part = np.stack(compute(a, b), axis=1)
                with atomic_file(path) as tmp:
                    with open(tmp, "wb") as f:
                        np.save(f, part)
            sums[a:b], counts[a:b] = part[:, 0], part[:, 1]
            bar.update(b - a)
    return sums, counts


def rank(
    doc_ids: list[int],
    sums: np.ndarray,
    counts: np.ndarray,
    keep: float,
    unit: str,
    long_episodes: np.ndarray | None = None,
) -> tuple[list, list[dict]]:
    """``(kept rows in order, one record per unit by rank)``: units are documents (their rows' sums
    over their rows' counts) or rows; the top ``ceil(keep · units)`` are kept, ties by first row.
    ``long_episodes`` (per row): injected episodes farther apart than the window, summed per unit
    (what the report shows next to the scores)."""
    groups: dict[int, list[int]] = {}
    for r, d in enumerate(doc_ids):
        groups.setdefault(d if unit == "document" else r, []).append(r)
    records = []
    for key, rows in groups.items():
        total = float(counts[rows].sum())
        score = float(sums[rows].sum()) / total if total else 0.0
        records.append({"unit": int(key), "rows": len(rows), "targets": int(total), "score": score, "first": rows[0]})
        if long_episodes is not None:
            records[-1]["long_episodes"] = int(long_episodes[rows].sum())
    records.sort(key=lambda u: (-u["score"], u["first"]))
    n_keep = max(1, math.ceil(keep * len(records) - 1e-9))
    for i, u in enumerate(records):
        u["kept"] = i < n_keep
    kept = sorted(r for u in records[:n_keep] for r in groups[u["unit"]])
    return kept, records


def write_selected(
    src: Path, source, out: Path, kept: list[int], manifest: dict, selected: dict, records: list[dict]
) -> dict:
    """The prepared folder ``out``: ``src``'s validation split and tokenizer, the ``kept`` rows of its
    train split ``source`` (the ``datasets.Dataset`` already open), ``selection.json`` (every unit's
    score) and a manifest naming the selection; atomic."""
    train = source.select(kept).flatten_indices()
    tokens = int(sum(len(x) for x in train["input_ids"]))
    counts = dict(manifest.get("counts", {}))
    before = counts.get("train") if isinstance(counts.get("train"), dict) else {}
    counts["train"] = {**before, "sequences": len(train), "tokens": tokens, "documents": len(set(train["doc_id"]))}
    summary = {
        "rows": len(train),
        "tokens": tokens,
        "source_tokens": int(sum(len(x) for x in source["input_ids"])),
    }
    with atomic_dir(out) as tmp:
        train.save_to_disk(str(tmp / "train"))
        shutil.copytree(src / "validation", tmp / "validation")
        shutil.copytree(src / "tokenizer", tmp / "tokenizer")
        atomic_write_json(tmp / SCORES, {"format": FORMAT, "selected": selected, **summary, "units": records})
        new = {
            **manifest,
            "counts": counts,
            "fingerprint": fingerprint({"source": manifest.get("fingerprint"), "selected": selected}),
            "selected": selected,
            "checksums": {
                **checksums(tmp, ("train", "validation"), "*.arrow"),
                **checksums(tmp, ("tokenizer",)),
                **checksums(tmp, ("",), SCORES),
            },
        }
        atomic_write_json(tmp / "manifest.json", new)
    return new


def read_selected(out: Path) -> dict | None:
    """The ``selected`` settings of a complete selection folder, None when ``out`` is none."""
    manifest = read_json_object(out / "manifest.json")
    return None if manifest is None else manifest.get("selected")


def dumps(settings: dict) -> dict:
    """``settings`` as they read back from JSON (for comparisons with a recorded copy)."""
    return json.loads(json.dumps(settings, default=str))


def long_episodes(episodes: list, window: int) -> np.ndarray:
    """Per row: its injected episodes whose use starts at least ``window`` tokens after the definition
    (``[def_start, def_end, use_start, use_end]`` spans, docs/DATA.md)."""
    return np.array([sum(1 for e in row if e[2] - e[0] >= window) for row in episodes], dtype=np.int64)


def summary(selection: dict, top: int = 10) -> dict:
    """A ``selection.json`` in a few numbers, for the report: per side (kept, dropped) the units, their
    mean score and their long-range episodes per 1000 targets; and the ``top`` units."""
    units = selection["units"]
    counted = all("long_episodes" in u for u in units)  # selections made before the count have none

    def side(kept: bool) -> dict:
        us = [u for u in units if u["kept"] == kept]
        targets = sum(u["targets"] for u in us)
        eps = sum(u.get("long_episodes", 0) for u in us)
        return {
            "units": len(us),
            "targets": targets,
            "mean_score": sum(u["score"] * u["targets"] for u in us) / targets if targets else None,
            "long_episodes_per_1k": 1000 * eps / targets if targets and counted else None,
        }

    keys = ("method", "keep", "unit", "window")
    return {
        **{k: selection["selected"][k] for k in keys},
        "kept": side(True),
        "dropped": side(False),
        "top": [{k: u[k] for k in ("unit", "rows", "score") if k in u} for u in units[:top]],
    }
