"""The rows of a score cache from any dataset of token ids (``add_short_nll``): the dataset opened
(a ``Dataset``, a ``DatasetDict``'s split, a saved or prepared folder, a hub id), its columns checked,
and one pass over its token ids for their lengths, their range and a digest of their contents."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from tokenweight.errors import InputError, first_line

#: rows per pass over the token ids when they are checked and digested
_SCAN_ROWS = 4096


def _open_dataset(dataset, split: str | None) -> tuple[Any, str, str | None]:
    """``(datasets.Dataset, how it is named in messages and meta.json, its split or None)``."""
    import datasets

    if isinstance(dataset, (datasets.IterableDataset, datasets.IterableDatasetDict)):
        raise InputError(
            "dataset is an IterableDataset (streaming): a column needs every row; load it without streaming=True"
        )
    if isinstance(dataset, datasets.Dataset):
        if split is not None:
            raise InputError(f"split {split!r} was given but dataset is a single Dataset: pass split=None")
        return dataset, f"dataset {dataset._fingerprint}", None
    if isinstance(dataset, datasets.DatasetDict):
        split = _pick_split(dataset, split, "the DatasetDict")
        return dataset[split], f"split {split!r} of the DatasetDict", split
    if not isinstance(dataset, (str, os.PathLike)):
        raise InputError(
            f"dataset must be a datasets.Dataset, a DatasetDict, a folder saved with save_to_disk or a hub "
            f"dataset id, got {type(dataset).__name__}"
        )
    name = str(dataset)
    path = Path(name).expanduser()
    if path.is_file():
        raise InputError(f"dataset {name!r} is a file: pass a folder saved with save_to_disk or a hub dataset id")
    if path.is_dir():
        shown = str(path.resolve())
        if (path / "manifest.json").is_file():  # a prepared folder (tokenweight prepare)
            from tokenweight.data import load_prepared

            dsd = load_prepared(path)[0]
            split = _pick_split(dsd, split, repr(name))
            return dsd[split], shown, split
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as e:
            line = first_line(e)
            raise InputError(
                f"dataset {name!r} is a folder but not a saved dataset ({line}): pass a folder written by "
                "Dataset.save_to_disk, or a hub dataset id"
            ) from None
        if isinstance(loaded, datasets.DatasetDict):
            split = _pick_split(loaded, split, repr(name))
            return loaded[split], shown, split
        return loaded, shown, None
    from tokenweight.identity import is_hub_id

    if not is_hub_id(name):
        raise InputError(f"dataset {name!r} does not exist: pass a folder saved with save_to_disk or a hub dataset id")
    split = split or "train"
    try:
        return datasets.load_dataset(name, split=split), f"{name} (split {split!r})", split
    except Exception as e:
        line = first_line(e)
        raise InputError(
            f"dataset {name!r} is not a folder, and loading it as a hub dataset failed ({line}): check the path, "
            "or the dataset id and split (and network access)"
        ) from None


def _pick_split(dsd, split: str | None, shown: str) -> str:
    if split is None:
        if len(dsd) == 1:
            return next(iter(dsd))
        split = "train"
    if split not in dsd:
        raise InputError(f"{shown} has no split {split!r} (it has {', '.join(dsd) or 'none'}): pass split (--split)")
    return split


def _check_columns(ds, label: str, column: str, input_column: str) -> None:
    import pyarrow as pa

    names = ds.column_names
    if input_column not in names:
        raise InputError(
            f"{label} has no column {input_column!r} (columns: {', '.join(names)}): pass input_column "
            "(--input-column) naming its token ids"
        )
    if column in names:
        raise InputError(
            f"{label} already has a column {column!r}: pass another column name, or drop it first "
            f"(dataset.remove_columns({column!r}))"
        )
    for name in [input_column] + (["doc_lengths"] if "doc_lengths" in names else []):
        t = ds.data.schema.field(name).type
        if not (pa.types.is_list(t) or pa.types.is_large_list(t)) or not pa.types.is_integer(t.value_type):
            raise InputError(
                f"{label}: column {name!r} holds {t}, not lists of integers: "
                + (
                    "tokenize the data into lists of token ids (one list per row)"
                    if name == input_column
                    else "doc_lengths must be the document lengths of each row (tokenweight prepare --pack)"
                )
            )
    if len(ds) == 0:
        raise InputError(f"{label} has no rows: pass a dataset with at least one row")


def _scan(ds, label: str, input_column: str, packed: bool) -> dict:
    """One pass over the token ids (and ``doc_lengths``) in row order: every row's length, the
    smallest and largest id, and a digest of the contents (independent of how the rows are stored:
    the same rows give the same digest). Refuses missing rows or ids and bad document lengths."""
    import numpy as np
    import pyarrow.compute as pc

    from tokenweight.io_utils import fingerprint

    cols = [input_column] + (["doc_lengths"] if packed else [])
    hashes = {k: hashlib.sha256() for k in ("lengths", "ids", "doc_counts", "doc_lengths")}
    lengths, lo, hi, first = [], None, None, 0
    for t in ds.with_format("arrow").select_columns(cols).iter(batch_size=_SCAN_ROWS):
        ids = t.column(input_column).combine_chunks()
        flat = pc.list_flatten(ids)
        if ids.null_count or flat.null_count:
            raise InputError(f"{label}: column {input_column!r} has missing values near row {first}: drop those rows")
        n = pc.list_value_length(ids).to_numpy(zero_copy_only=False).astype("<i8")
        values = flat.to_numpy(zero_copy_only=False).astype("<i8")
        hashes["lengths"].update(n.tobytes())
        hashes["ids"].update(values.tobytes())
        if values.size:
            lo = int(values.min()) if lo is None else min(lo, int(values.min()))
            hi = int(values.max()) if hi is None else max(hi, int(values.max()))
        if packed:
            docs = t.column("doc_lengths").combine_chunks()
            dflat = pc.list_flatten(docs)
            counts = pc.list_value_length(docs).to_numpy(zero_copy_only=False).astype("<i8") if len(docs) else n[:0]
            dvals = dflat.to_numpy(zero_copy_only=False).astype("<i8")
            owner = np.repeat(np.arange(len(n)), counts)
            sums = np.bincount(owner, weights=dvals, minlength=len(n))
            nonpositive = np.zeros(len(n), dtype=bool)
            nonpositive[owner[dvals < 1]] = True
            bad = np.flatnonzero((counts < 1) | (sums > n) | nonpositive)
            if docs.null_count or dflat.null_count or bad.size:
                r = first + (int(bad[0]) if bad.size else 0)
                raise InputError(
                    f"{label}: row {r} has document lengths that are not positive integers summing to at most its "
                    f"{int(n[r - first])} tokens: fix its doc_lengths column (tokenweight prepare --pack writes it), "
                    "or drop the column to score whole rows"
                )
            hashes["doc_counts"].update(counts.tobytes())
            hashes["doc_lengths"].update(dvals.tobytes())
        lengths.append(n)
        first += len(n)
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype="<i8")
    digest = fingerprint({k: h.hexdigest() for k, h in hashes.items()} | {"rows": int(lengths.size)})
    return {"lengths": lengths, "min_id": lo or 0, "max_id": hi or 0, "digest": f"rows-{digest}"}
