"""Data preparation: corpus -> tokenizer -> tokenized sequences on disk (``tokenweight prepare``).

Modules, one job each:

- ``corpus``: list and hash the inputs (text folders, jsonl, parquet, saved or hub datasets, the
  embedded standard-library corpus) in a fixed order;
- ``tokenizer``: train the default byte-level BPE (single-digit tokens) or load any HF tokenizer;
- ``episodes``: inject long-range definition-use episodes with exact token spans;
- ``sequences``: chunk a document into sequences of ``n`` tokens (never across documents);
- ``packing``: with ``--pack``, put documents' short pieces back to back into rows of at most ``n``;
- ``writer``: stream sequences into the ``train``/``validation`` datasets and count them;
- ``pipeline``: ``prepare(out, config)``, fingerprinted and atomic (``config``: the stage's
  ``PrepareConfig``, :mod:`tokenweight.stages.prepare`).

The folder layout is the data contract of docs/ARCHITECTURE.md; docs/DATA.md describes it in full.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenweight.errors import UsageError


def load_prepared(path: str | Path, *, verify: bool = True):
    """Open a prepared folder: ``(datasets.DatasetDict(train=..., validation=...), manifest)``.

    The splits are memory-mapped (``datasets.load_from_disk``); columns ``input_ids`` (int32, BOS
    first when the tokenizer has one), ``doc_id`` and ``episodes`` (``[def_start, def_end,
    use_start, use_end]`` spans), and in a packed folder (``prepare --pack``) ``doc_lengths``
    (:func:`packed_lengths`). The tokenizer is at ``path/tokenizer``.

    ``verify``: check the files against the checksums ``prepare`` recorded in the manifest (each
    file is hashed once per process); a damaged or truncated file is refused with one line naming
    it. Folders without recorded checksums (hand-made, or older versions) are not checked.
    """
    import datasets

    from tokenweight.data.writer import SPLITS, complete

    p = Path(path).expanduser()
    if not complete(p):
        what = "does not exist" if not p.exists() else "is not a complete prepared folder"
        raise UsageError(f"{str(p)!r} {what}: run 'tokenweight prepare --out {p}' first")
    try:
        manifest = json.loads((p / "manifest.json").read_text(encoding="utf-8"))
    except ValueError as e:
        raise UsageError(
            f"{str(p / 'manifest.json')!r} is not valid JSON ({e}): prepare the folder again with --force"
        ) from None
    if verify and isinstance(manifest.get("checksums"), dict):
        from tokenweight.io_utils import check_files

        fix = f"rebuild the folder: rerun `tokenweight prepare ... --out {p}` with the same settings (or --force)"
        check_files(p, manifest["checksums"], what="prepared file", fix=fix)
    splits = {s: datasets.load_from_disk(str(p / s)) for s in SPLITS}
    return datasets.DatasetDict(splits), manifest


def packed_lengths(ds) -> list[list[int]] | None:
    """The ``doc_lengths`` of every row of a split (a ``datasets.Dataset``), None when unpacked.

    A packed row holds documents (or chunks of long ones) back to back; its lengths are positive
    and sum to the row's length (the contract of :mod:`tokenweight.documents`). None: the folder
    was prepared without ``--pack``, every row is one document.
    """
    if "doc_lengths" not in ds.column_names:
        return None
    return [[int(x) for x in row] for row in ds.select_columns(["doc_lengths"]).with_format(None)["doc_lengths"]]


__all__ = ["load_prepared", "packed_lengths"]
