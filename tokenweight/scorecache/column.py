"""A ``short_nll`` column for any Hugging Face dataset of token ids: :func:`add_short_nll`.

Users who train in their own scripts shuffle, filter and pack their own ``datasets.Dataset``; a
score cache read by row index (``tokenweight score --data``) does not survive that. Here the frozen
short-context NLL of docs/METHOD.md becomes a column of the dataset itself, so it travels with its
rows through every later transform:

- **token-aligned**: ``row[column][t]`` is the NLL of token ``t`` given its short context, so
  ``len(row[column]) == len(row[input_column])`` and concatenating or padding rows keeps it aligned
  with its tokens. Entry 0 is 0.0 (the first token has no prediction); so is the first token of
  every document of a packed row (a ``doc_lengths`` column) and every token past the documents.
  Entry ``t >= 1`` is entry ``t - 1`` of the score cache's row (which is target-aligned).
- **the score cache's values**: the rows are scored by the score cache itself (``_compute`` of
  :mod:`tokenweight.scorecache.compute`: the same shards, batches, windows and BOS rule), into the
  folder ``out``; the column is then joined from its shards and the dataset saved to
  ``out/dataset``. ``compute_scores`` on a prepared folder holding the same rows (same window,
  stride, BOS, dtype, shard size; its ``n`` the longest row) gives the same numbers, bitwise.
- **stride**: ``stride`` when given, else ``round(0.75·w)`` (:func:`column_stride`: docs/METHOD.md's
  ``(1 - w/n)·w`` at the paper's ``n = 4w``), from the window alone: a row's windows never depend on
  the other rows (their number, their lengths), so a subset or a superset of the rows gets the same
  windows. (Floating point: the numbers are those of the batches the cache forms; in the tests, on
  CPU, every row's are bitwise those of the row scored alone; a GPU kernel may round another batch
  differently, ~1e-6, as for the score cache.)
- **resumable**: shards are written atomically; a killed call rerun the same way keeps the finished
  shards and computes the others; a second process writing ``out`` is refused at once; rerunning a
  finished call returns the saved dataset without computing or writing anything.
- **identity**: the cache records a digest of the token ids (and ``doc_lengths``) in row order, by
  content: the same rows give the same identity whatever their history, other rows are refused
  (``force`` recomputes). The saved dataset records the cache it was joined from and the input
  dataset's ``_fingerprint``; another dataset with the same token ids (other columns) reuses the
  cache and is only joined again.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from tokenweight.errors import InputError, UsageError
from tokenweight.scorecache.rows import _check_columns, _open_dataset, _scan
from tokenweight.scorecache.scorer import _name, _resolve_scorer, _runtime_of

__all__ = ["DATASET", "MARKER", "add_short_nll", "column_stride"]

#: the folder under ``out`` that holds the dataset with its new column
DATASET = "dataset"
#: file in ``out/dataset``: what the saved dataset was joined from (checked by a rerun)
MARKER = "tokenweight_column.json"


def column_stride(window: int, stride: int | None = None) -> int:
    """``stride``, or ``round(0.75·window)`` (docs/METHOD.md's ``(1 - w/n)·w`` at the paper's
    ``n = 4w``: 6144 for ``w = 8192``), checked (ValueError unless ``window >= 2`` and
    ``1 <= stride < window``). It depends on the window alone, never on the dataset's rows."""
    from tokenweight.windows import window_stride

    if not isinstance(window, int) or isinstance(window, bool) or window < 2:
        raise InputError(f"window must be an integer >= 2, got {window!r}: pass the short context in tokens")
    try:
        return window_stride(window, stride)
    except ValueError as e:
        raise InputError(f"{e}: pass a stride in [1, window) or none (round(0.75·window))") from None


def add_short_nll(
    dataset,
    scorer,
    *,
    window: int,
    stride: int | None = None,
    out: str | os.PathLike,
    column: str = "short_nll",
    input_column: str = "input_ids",
    bos_token_id: int | None = None,
    batch_size: int | None = None,
    dtype: str | None = None,
    device: str | None = None,
    force: bool = False,
    split: str | None = None,
    shard_size: int | None = None,
    attn_implementation: str = "auto",
):
    """``dataset`` with a float32 list column ``column``: the short-context NLL of every token.

    Args:
        dataset: a ``datasets.Dataset`` (or ``DatasetDict``: ``split``), a folder saved with
            ``save_to_disk`` (or made by ``tokenweight prepare``), or a hub dataset id. Rows are
            lists of token ids of any lengths in ``input_column``; a ``doc_lengths`` column (packed
            rows, as ``tokenweight prepare --pack`` writes them) scores every document on its own.
        scorer: the frozen scorer, with the data's tokenizer: a model folder, a hub id, or a loaded
            model (``torch.nn.Module``, used as it is: ``dtype``/``device`` None or its own).
        window, stride: the short context (docs/METHOD.md): windows of at most ``window`` tokens
            every ``stride`` tokens; ``stride`` None: :func:`column_stride` (``round(0.75·window)``).
        out: folder of the score cache; the dataset with the column is saved to ``out/dataset``.
        column: the new column's name; input_column: the token ids' column.
        bos_token_id: put back as the first token of every later window of a row (document) that
            starts with it; None: the BOS of the scorer's saved tokenizer (as the score cache takes
            the data tokenizer's), else of its config.
        batch_size: windows per forward pass (None: about 16k tokens per pass).
        dtype: the scorer's compute dtype (float32 | bfloat16 | float16; None: float32, or a loaded
            model's own); the column is float32. device: None = cuda when present (a loaded model: its own).
        force: recompute a cache made for other rows or settings instead of refusing it (the old
            one stays until the new one is complete).
        split: which split of a ``DatasetDict``, prepared folder or hub dataset (None: the only
            one, else ``train``).
        shard_size: rows per shard, the unit of resuming (None: about 256k tokens per shard on
            average). attn_implementation: as :func:`tokenweight.models.load_model`.

    Returns:
        the dataset saved in ``out/dataset`` (memory-mapped), its rows in ``dataset``'s order.
        ``row[column][t]`` is ``-log p(x_t | its short context)``, entry 0 (and a document's
        first token) 0.0: token-aligned, ``len(row[column]) == len(row[input_column])``.

    Raises:
        ValueError (:class:`tokenweight.errors.InputError`, one line naming the problem and the
        fix): no such column or split, a column that is not lists of integers, token ids outside
        the scorer's vocabulary, ``window < 2``, a cache of other rows or settings in ``out``
        (unless ``force``), another process writing ``out``.
    """
    return _add_short_nll(
        dataset,
        scorer,
        window=window,
        stride=stride,
        out=out,
        column=column,
        input_column=input_column,
        bos_token_id=bos_token_id,
        batch_size=batch_size,
        dtype=dtype,
        device=device,
        force=force,
        split=split,
        shard_size=shard_size,
        attn_implementation=attn_implementation,
    )[0]


def _add_short_nll(dataset, scorer, *, out, column, input_column, **kw) -> tuple[Any, dict]:
    """:func:`add_short_nll`, and what the call did (``compute_scores``' statistics, plus
    ``"dataset"`` (its folder), ``"rows"``, ``"dataset_tokens"``, ``"joined"``, ``"meta"``)."""
    try:
        return _run(dataset, scorer, out=out, column=column, input_column=input_column, **kw)
    except UsageError as e:
        if isinstance(e, ValueError):
            raise
        raise InputError(str(e)) from None


def _run(
    dataset,
    scorer,
    *,
    window,
    stride,
    out,
    column,
    input_column,
    bos_token_id,
    batch_size,
    dtype,
    device,
    force,
    split,
    shard_size,
    attn_implementation,
):
    from tokenweight.runtime import ATTN_IMPLEMENTATIONS, RUNTIME_DTYPES
    from tokenweight.scorecache.compute import _compute, _Inputs
    from tokenweight.scorecache.layout import default_shard_size

    stride = column_stride(window, stride)
    for name, value, low in (
        ("batch_size", batch_size, 1),
        ("shard_size", shard_size, 1),
        ("bos_token_id", bos_token_id, 0),
    ):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise InputError(f"{name} must be an integer >= {low} or None, got {value!r}")
    if dtype is not None and dtype not in RUNTIME_DTYPES:
        raise InputError(f"dtype must be one of {', '.join(RUNTIME_DTYPES)} or None, got {dtype!r}")
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise InputError(
            f"attn_implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)}, got {attn_implementation!r}"
        )
    if out is None or str(out) == "":
        raise InputError("out is required: pass the folder of the score cache (the dataset goes to out/dataset)")
    for name, value in (("column", column), ("input_column", input_column)):
        if not isinstance(value, str) or not value:
            raise InputError(f"{name} must be a column name, got {value!r}")
    if column == input_column or column == "doc_lengths":
        raise InputError(f"column {column!r} would replace an input column: pass another name for the new column")

    out = Path(out).expanduser()
    ds, label, split = _open_dataset(dataset, split)
    _check_columns(ds, label, column, input_column)
    packed = "doc_lengths" in ds.column_names and input_column != "doc_lengths"
    scan = _scan(ds, label, input_column, packed)
    rows = ds.with_format(None).select_columns([input_column, "doc_lengths"] if packed else [input_column])
    if input_column != "input_ids":
        rows = rows.rename_column(input_column, "input_ids")
    count, tokens = len(ds), int(scan["lengths"].sum())
    longest = int(scan["lengths"].max())
    inputs = _Inputs(
        data=label,
        split=split,
        rows=rows,
        manifest={"fingerprint": scan["digest"]},
        n=longest,
        count=count,
        tokenizer=None,
        packed=packed,
        ragged=True,
    )
    shard_size = shard_size or default_shard_size(-(-tokens // count))  # ~256k tokens per shard on average
    dtype, device = _runtime_of(scorer, dtype, device)
    _refuse_other_rows(out, scan["digest"], count, label, force)

    def resolve(device: str):
        folder, model, digest, vocab, tok, config_bos = _resolve_scorer(scorer, dtype, device, attn_implementation)
        if scan["min_id"] < 0 or scan["max_id"] >= vocab:
            bad = scan["min_id"] if scan["min_id"] < 0 else scan["max_id"]
            raise InputError(
                f"{label}: column {input_column!r} holds token id {bad} but scorer {_name(scorer)!r} has a "
                f"vocabulary of {vocab} ids (0..{vocab - 1}): tokenize the data with the scorer's tokenizer, or "
                "pass a scorer that shares the data's"
            )
        inputs.tokenizer = tok
        inputs.bos_token_id = bos_token_id if bos_token_id is not None else (tok.bos_token_id if tok else config_bos)
        return folder, model, digest

    def finish(meta: dict):
        return _finish(ds, out, meta, column, input_column, scan["lengths"])

    stats = _compute(
        out,
        inputs,
        _name(scorer),
        resolve,
        window=window,
        stride=stride,
        batch_size=batch_size,
        dtype=dtype,
        device=device,
        shard_size=shard_size,
        force=force,
        attn_implementation=attn_implementation,
        finish=finish,
    )
    saved, joined = stats.pop("finished")
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    stats.update(dataset=str(out / DATASET), rows=count, dataset_tokens=tokens, joined=joined, meta=meta)
    return saved, stats


def _refuse_other_rows(out: Path, digest: str, count: int, label: str, force: bool) -> None:
    """A cache in ``out`` of other rows is refused (unless ``force``) in this stage's words; any other
    difference (window, scorer, ...) is the cache's own refusal (:func:`.shards.claim`), under its lock."""
    from tokenweight.io_utils import read_json_object
    from tokenweight.scorecache.layout import FORMAT, META

    old = read_json_object(out / META)
    if force or old is None or old.get("format") != FORMAT or old.get("data") == digest:
        return
    raise InputError(
        f"{str(out)!r} holds the scores of other rows ({old.get('n_sequences')} rows of "
        f"{old.get('data_path')}, digest {old.get('data')}) than {label} ({count} rows, digest {digest}): "
        "choose another out for these rows, or pass force=True (--force) to replace them"
    )


# ----------------------------------------------------------------------------- the column


def _finish(ds, out: Path, meta: dict, column: str, input_column: str, lengths) -> tuple[Any, bool]:
    """Every rank, under the lock, once the cache in ``out`` is complete: rank 0 joins the column
    into ``out/dataset`` unless it is there already; then every rank loads it. ``(dataset, joined now)``."""
    import datasets

    from tokenweight.outputs import from_rank0, launch_rank, launch_world_size

    world = launch_world_size()
    want = {
        "cache": meta["fingerprint"],
        "column": column,
        "input_column": input_column,
        "rows": len(ds),
        "dataset_fingerprint": ds._fingerprint,
        "columns": ds.column_names,
    }
    joined, err = False, None
    if launch_rank() == 0:
        try:
            target = out / DATASET
            have = None
            if (target / MARKER).is_file():
                from tokenweight.io_utils import read_json_object

                have = read_json_object(target / MARKER)
            if have != want:
                _join(ds, out, meta, column, lengths, want)
                joined = True
        except UsageError as e:
            err = str(e)
    if (err := from_rank0(err, world)) is not None:
        raise InputError(err)
    return datasets.load_from_disk(str(out / DATASET)), from_rank0(joined, world)


def _join(ds, out: Path, meta: dict, column: str, lengths, marker: dict) -> None:
    """Write ``ds`` with the column (from the cache's shards) to ``out/dataset``, atomically."""
    import datasets
    import numpy as np
    import pyarrow as pa

    from tokenweight.io_utils import atomic_dir, atomic_write_json, tmp_dir_for
    from tokenweight.scorecache.layout import shard_ranges
    from tokenweight.scorecache.read import ScoreCache

    for p in [*out.glob(".*.tmp"), *out.glob(".*.old")]:  # left by a join killed earlier
        shutil.rmtree(p, ignore_errors=True)
    cache = ScoreCache.open(out)  # complete, every shard checked against complete.json
    work = tmp_dir_for(out / ".join")
    try:
        schema = pa.schema([(column, pa.list_(pa.float32()))])
        path = work / "column.arrow"
        with pa.OSFile(str(path), "wb") as f, pa.ipc.new_stream(f, schema) as writer:
            for i, (a, b) in enumerate(shard_ranges(meta["n_sequences"], meta["shard_size"])):
                nll = cache._handle(i).get_tensor("nll").numpy()  # [k, m-1]: entry j is token j+1
                n = lengths[a:b]
                offsets = np.zeros(len(n) + 1, dtype=np.int64)
                np.cumsum(n, out=offsets[1:])
                values = np.zeros(int(offsets[-1]), dtype=np.float32)
                for r in range(len(n)):
                    m = min(int(n[r]) - 1, nll.shape[1])
                    if m > 0:  # entry 0 of a row stays 0: its first token has no prediction
                        values[offsets[r] + 1 : offsets[r] + 1 + m] = nll[r, :m]
                array = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values))
                writer.write_batch(pa.record_batch([array], schema=schema))
        base = ds
        if ds._indices is not None:  # shuffled, selected: its rows in order, written here (not beside its files)
            base = ds.flatten_indices(cache_file_name=str(work / "rows.arrow"))
        joined = datasets.concatenate_datasets([base, datasets.Dataset.from_file(str(path))], axis=1)
        with atomic_dir(out / DATASET) as tmp:
            joined.save_to_disk(str(tmp))
            atomic_write_json(tmp / MARKER, marker)
    finally:
        shutil.rmtree(work, ignore_errors=True)
