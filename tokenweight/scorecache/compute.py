"""Computing a score cache: the scores of every shard (the folder's mechanics: :mod:`.shards`).

Packed data (a ``doc_lengths`` column: ``tokenweight prepare --pack``) is scored per document:
``short_context_nll(doc_lengths=...)`` windows every document as a sequence of its own (its
first token's entry is 0), so a cache row equals its documents scored one by one; the cache's
identity then records ``packed: true``. A scorer with another tokenizer (``--align``) is refused
on packed data (not supported yet).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenweight.errors import UsageError
from tokenweight.identity import (
    load_tokenizer,
    model_digest,
    tokenizer_digest,
)
from tokenweight.io_utils import fingerprint
from tokenweight.scorecache.layout import FORMAT, default_shard_size, shard_ranges
from tokenweight.scorecache.scorer import ALIGN_CHOICES, ALIGNMENT, _scorer_folder  # noqa: F401 (ALIGN_CHOICES)
from tokenweight.scorecache.shards import claim, complete, dist_setup, missing_shards, write_shard
from tokenweight.windows import default_stride, windows_per_pass

# ----------------------------------------------------------------------------- scoring rows


def _pad(rows: list, n: int):
    """Right-pad token lists to ``n``: (ids [b, n] long, mask [b, n] or None, lengths [b] int32)."""
    import torch

    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int32)
    ids = torch.zeros(len(rows), n, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
    mask = None if bool((lengths == n).all()) else (torch.arange(n)[None] < lengths[:, None]).long()
    return ids, mask, lengths


def _score_rows(
    model,
    rows: list,
    n: int,
    window: int,
    stride: int,
    bos: int | None,
    batch_size: int | None,
    bar,
    where: str,
    tokenizers: tuple | None = None,
    doc_lengths: list | None = None,
    narrow: bool = False,
):
    """Short-context NLL of one shard's token lists: (nll [k, n-1] float32 CPU, lengths [k] int32,
    rows aligned by decoding token by token). ``doc_lengths``: packed rows (one list per row; a
    row's tokens past their sum are padding and dropped), scored per document. ``narrow``: nll is
    ``[k, m-1]`` with ``m`` the shard's longest row (rows of any lengths: ``add_short_nll``); the
    values are the same, since padding never changes a window (only the zeros past the rows go).

    Sequences go to ``short_context_nll`` in groups of about four forward passes' worth of
    windows (enough to fill every pass); the grouping depends only on the shard, never on the
    process, which keeps multi-process results bitwise equal to single-process ones.
    ``tokenizers``: ``(data's, scorer's)`` for a scorer with another tokenizer: the same groups go
    to :func:`tokenweight.alignment.aligned_short_nll` instead.
    """
    import torch

    from tokenweight.alignment import aligned_short_nll
    from tokenweight.scoring import short_context_nll
    from tokenweight.windows import window_starts

    per_pass = batch_size or windows_per_pass(window)
    per_call = max(1, math.ceil(4 * per_pass / len(window_starts(n, window, stride))))
    width = n
    if narrow:
        docs = [None] * len(rows) if doc_lengths is None else doc_lengths
        width = max(
            (len(r) if d is None else min(len(r), sum(int(x) for x in d)) for r, d in zip(rows, docs)), default=0
        )
    nll = torch.zeros(len(rows), max(width - 1, 0), dtype=torch.float32)
    lengths = torch.zeros(len(rows), dtype=torch.int32)
    per_token = 0
    for c in range(0, len(rows), per_call):
        chunk = [list(r) for r in rows[c : c + per_call]]
        docs = None if doc_lengths is None else [[int(x) for x in d] for d in doc_lengths[c : c + per_call]]
        if docs is not None:
            chunk = [r[: sum(d)] for r, d in zip(chunk, docs)]
        if (longest := max(len(r) for r in chunk)) > n:
            raise UsageError(
                f"{where} holds a sequence of {longest} tokens but the manifest says n = {n}: re-prepare the data"
            )
        ids, mask, lens = _pad(chunk, longest if narrow else n)
        if tokenizers is not None:
            try:
                scores = aligned_short_nll(model, chunk, *tokenizers, window, stride, n=n, batch_size=batch_size)
            except ValueError as e:
                raise UsageError(
                    f"{where}: {e}: score with a scorer that shares the data's tokenizer (--align never)"
                ) from None
            nll[c : c + len(chunk)], per_token = scores.nll, per_token + scores.decoded_per_token
        else:
            try:
                nll[c : c + len(chunk), : max(ids.shape[1] - 1, 0)] = short_context_nll(
                    model,
                    ids,
                    window,
                    stride,
                    attention_mask=mask,
                    bos_token_id=bos,
                    batch_size=batch_size,
                    **({} if docs is None else {"doc_lengths": docs}),
                ).cpu()
            except ValueError as e:
                if docs is None:
                    raise
                raise UsageError(f"{where}: bad doc_lengths column ({e}): re-prepare the data") from None
        lengths[c : c + len(chunk)] = lens
        bar.update(len(chunk))
    return nll, lengths, per_token


@dataclass
class _Inputs:
    """The sequences to score and what identifies them: a prepared folder (:func:`_load_inputs`) or
    any dataset of token ids (:mod:`tokenweight.scorecache.column`)."""

    data: Path | str  # the prepared folder, or how a dataset is named in messages
    split: str | None
    rows: Any  # datasets.Dataset with the input_ids column (and doc_lengths when packed), python format
    manifest: dict  # its "fingerprint" identifies the rows (the cache's "data")
    n: int  # the longest row: the cache's width
    count: int
    tokenizer: Any  # the data's tokenizer (its digest and BOS are the cache's); None: the scorer has none
    scorer_tokenizer: Any = None  # set when the scorer's tokens are aligned to the data's by characters
    packed: bool = False  # rows hold several documents (a doc_lengths column)
    bos_token_id: int | None = None  # BOS put back at the start of every later window (default: the tokenizer's)
    ragged: bool = False  # rows of any lengths: each shard is as wide as its longest row (``narrow``)

    def __post_init__(self):
        if self.bos_token_id is None and self.tokenizer is not None:
            self.bos_token_id = self.tokenizer.bos_token_id


def _load_inputs(data: Path, split: str, max_sequences: int | None) -> _Inputs:
    from tokenweight.data import load_prepared

    dsd, manifest = load_prepared(data)  # UsageError for a missing, incomplete or damaged folder
    if split not in dsd:
        raise UsageError(f"prepared data {str(data)!r} has no split {split!r} (it has {', '.join(dsd)}): pass --split")
    packed = "doc_lengths" in dsd[split].column_names
    rows = dsd[split].select_columns(["input_ids", "doc_lengths"] if packed else ["input_ids"])
    count = len(rows) if max_sequences is None else min(len(rows), max_sequences)
    if count == 0:
        raise UsageError(f"split {split!r} of {str(data)!r} has no sequences: prepare more data")
    n = int(manifest["n"])
    return _Inputs(data, split, rows, manifest, n, count, load_tokenizer(data / "tokenizer"), packed=packed)


def _cache_meta(
    inputs: _Inputs, scorer, scorer_digest: str, window: int, stride: int, dtype: str, shard_size: int | None
) -> dict:
    """meta.json: the identity (:data:`IDENTITY`), its fingerprint, the layout and where things came from."""
    identity = dict(
        data=inputs.manifest.get("fingerprint"),
        split=inputs.split,
        n=inputs.n,
        n_sequences=inputs.count,
        window=window,
        stride=stride,
        dtype=dtype,
        tokenizer=None if inputs.tokenizer is None else tokenizer_digest(inputs.tokenizer),
        scorer=scorer_digest,
        bos_token_id=inputs.bos_token_id,
        shard_size=shard_size or default_shard_size(inputs.n),
    )
    if inputs.scorer_tokenizer is not None:  # only then: same-tokenizer caches keep their fingerprints
        identity.update(alignment=ALIGNMENT, scorer_tokenizer=tokenizer_digest(inputs.scorer_tokenizer))
    if inputs.packed:  # only then: caches of unpacked data keep their fingerprints
        identity.update(packed=True)
    layout = {"ragged": True} if inputs.ragged else {}  # shards as wide as their longest row
    return dict(
        identity,
        format=FORMAT,
        fingerprint=fingerprint(identity),
        scorer_path=str(scorer),
        data_path=str(inputs.data.resolve()) if isinstance(inputs.data, Path) else str(inputs.data),
        num_shards=len(shard_ranges(inputs.count, identity["shard_size"])),
        **layout,
    )


def _score_shards(work: Path, meta: dict, inputs: _Inputs, shards: list[int], model, rank: int, world: int, batch_size):
    """Compute and write ``shards`` (this rank's missing ones): ``(sequences, tokens, seconds,
    sequences aligned by decoding token by token)``."""
    from tqdm.auto import tqdm

    ranges = shard_ranges(inputs.count, meta["shard_size"])
    computed = tokens = per_token = 0
    t0 = time.perf_counter()
    bar = tqdm(
        total=sum(ranges[i][1] - ranges[i][0] for i in shards),
        unit="seq",
        disable=None,
        desc=f"scoring{f' (rank {rank})' if world > 1 else ''}",
        position=rank,
    )
    for i in shards:
        a, b = ranges[i]
        part = inputs.rows[a:b]
        nll, lengths, decoded = _score_rows(
            model,
            part["input_ids"],
            inputs.n,
            meta["window"],
            meta["stride"],
            meta["bos_token_id"],
            batch_size,
            bar,
            f"sequences {a}..{b - 1} of {str(inputs.data)!r}",
            None if inputs.scorer_tokenizer is None else (inputs.tokenizer, inputs.scorer_tokenizer),
            part["doc_lengths"] if inputs.packed else None,
            narrow=inputs.ragged,
        )
        write_shard(work, i, meta, a, b, nll, lengths)
        computed += b - a
        tokens += int(lengths.sum())
        per_token += decoded
    bar.close()
    return computed, tokens, time.perf_counter() - t0, per_token


def compute_scores(
    out: str | os.PathLike,
    data: str | os.PathLike,
    scorer: str | os.PathLike,
    *,
    window: int,
    stride: int | None = None,
    split: str = "train",
    batch_size: int | None = None,
    dtype: str = "float32",
    device: str | None = None,
    shard_size: int | None = None,
    max_sequences: int | None = None,
    force: bool = False,
    attn_implementation: str = "auto",
    align: str = "auto",
) -> dict:
    """Score every sequence of ``data``'s ``split`` under the frozen ``scorer`` into ``out``.

    ``window``/``stride``: docs/METHOD.md's short context (``stride`` default :func:`default_stride`).
    ``batch_size``: windows per forward pass (default ``short_context_nll``'s). ``dtype``:
    float32 | bfloat16 | float16 (scores are stored as float32). ``device``: default cuda when
    available. ``attn_implementation``: :func:`tokenweight.models.load_model`'s (default: the best
    the scorer supports). ``align``: a scorer with another tokenizer than the data's (auto | always
    | never, :func:`scorer._aligned_tokenizer`; docs/SCORING.md). Continues an interrupted cache with the
    same identity (and recomputes shards whose bytes no longer match complete.json); a complete one
    is left as it is; a different one is refused unless ``force``, which builds the new cache beside
    ``out`` and moves it into place when complete. A second process writing ``out`` is refused at
    once (the output protocol: :mod:`tokenweight.outputs`; the folder's mechanics:
    :mod:`tokenweight.scorecache.shards`). Under ``torchrun`` every rank must call it (each scores
    its own shards; rank 0 holds the lock).

    Returns (same on every rank) ``{"out", "sequences", "computed", "cached", "tokens",
    "seconds", "tokens_per_s", "world_size", "aligned", "decoded_per_token", "own_process_group",
    "already_complete"}``: ``computed``/``tokens`` count this call's work; ``aligned``: the scorer's
    tokens were aligned to the data's; ``decoded_per_token``: sequences of this call whose character
    spans came from decoding token by token (their offsets did not map back to the same tokens);
    ``own_process_group``: whether this call initialised (and destroyed) the process group, i.e. the
    process was launched by torchrun for this call alone; ``already_complete``: the cache was
    complete before the call (nothing done).
    """
    from tokenweight.windows import window_starts

    if max_sequences is not None and max_sequences < 1:
        raise ValueError(f"max_sequences must be >= 1 or None, got {max_sequences}")
    if shard_size is not None and shard_size < 1:
        raise ValueError(f"shard_size must be >= 1 or None, got {shard_size}")
    inputs = _load_inputs(Path(data), split, max_sequences)
    stride = default_stride(inputs.n, window) if stride is None else stride
    window_starts(inputs.n, window, stride)  # validates window and stride (ValueError)

    def resolve(device: str):
        folder, model, inputs.scorer_tokenizer = _scorer_folder(
            scorer, inputs.tokenizer, dtype, device, attn_implementation, align
        )
        if inputs.packed and inputs.scorer_tokenizer is not None:
            raise UsageError(
                f"--align with packed data is not supported yet: {str(data)!r} was prepared with --pack and "
                f"scorer {str(scorer)!r} has another tokenizer; use a scorer with the data's tokenizer, or "
                "prepare the data without --pack"
            )
        return folder, model, model_digest(folder)

    return _compute(
        out,
        inputs,
        scorer,
        resolve,
        window=window,
        stride=stride,
        batch_size=batch_size,
        dtype=dtype,
        device=device,
        shard_size=shard_size,
        force=force,
        attn_implementation=attn_implementation,
    )


def _compute(
    out: str | os.PathLike,
    inputs: _Inputs,
    scorer,
    resolve,
    *,
    window: int,
    stride: int,
    batch_size: int | None,
    dtype: str,
    device: str | None,
    shard_size: int | None,
    force: bool,
    attn_implementation: str,
    finish=None,
) -> dict:
    """The cache of ``inputs`` into ``out``: :func:`compute_scores` for any rows (the caller has
    checked ``window``/``stride``). ``resolve(device) -> (scorer folder or None, loaded model or
    None, scorer digest)`` runs on every rank before anything is written (it may refuse the
    scorer). ``finish(meta)``, when given, runs on every rank once the cache is complete, still
    under the output lock and in the process group; its value is the result's ``"finished"``."""
    import torch

    from tokenweight.models import load_model

    out = Path(out).expanduser()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rank, world, own_group = dist_setup(device)
    if device == "cuda" and world > 1:
        device = f"cuda:{torch.cuda.current_device()}"
    try:
        with contextlib.ExitStack() as lock:
            folder, model, scorer_digest = resolve(device)
            meta = _cache_meta(inputs, scorer, scorer_digest, window, stride, dtype, shard_size)
            work, was_complete = claim(out, meta, force, rank, world, lock)
            mine = missing_shards(work, meta, rank, world)
            stats = (0, 0, 0.0, 0)
            if mine:
                model = model or load_model(folder, dtype=dtype, device=device, attn_implementation=attn_implementation)
                stats = _score_shards(work, meta, inputs, mine, model, rank, world, batch_size)
            every = complete(out, work, meta, rank, world, stats, was_complete)
            finished = None if finish is None else finish(meta)
        computed, tokens = sum(s[0] for s in every), sum(s[1] for s in every)
        seconds = max(s[2] for s in every)
        per_token = sum(s[3] for s in every)
        return {
            "out": str(out),
            "sequences": inputs.count,
            "computed": computed,
            "cached": inputs.count - computed,
            "tokens": tokens,
            "seconds": seconds,
            "tokens_per_s": tokens / seconds if tokens else 0.0,
            "world_size": world,
            "aligned": inputs.scorer_tokenizer is not None,
            "decoded_per_token": per_token,
            "own_process_group": own_group,
            "already_complete": was_complete and work == out,
            **({} if finish is None else {"finished": finished}),
        }
    finally:
        if own_group:
            import torch.distributed as dist

            dist.destroy_process_group()
