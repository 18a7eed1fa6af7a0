"""Frozen short-context scores: computed once, cached on disk, resumable, multi-process.

With a *frozen* scorer (docs/METHOD.md), ``L_short`` does not change during training, so it is computed
once for the whole training split and read back by dataset index at every step. At the paper's
scale this is hours of GPU time, so the cache is built to survive kills and to split across GPUs:

Layout of a cache folder ``OUT/``::

    meta.json                      written first: identity of the scores (below) and the layout
    shards/00000.safetensors ...   shard i = sequences [i*K, min((i+1)*K, N)): "nll" [k, n-1]
                                   float32 and "lengths" [k] int32; its header repeats the cache
                                   fingerprint and its range, so a stray file is never mistaken
    complete.json                  written last, once every shard is present: the sha256 and size
                                   of every shard, checked when a process first reads the shard

Every file is written atomically (``tokenweight.io_utils``), so a killed run leaves only whole
shards; a rerun with the same options skips them (nothing recomputed, lost or duplicated) and
recomputes shards whose bytes differ from complete.json's checksums. One process writes a cache at a
time; ``force`` builds the new cache in the hidden sibling ``.OUT.force`` and moves it onto ``OUT``
when complete, so the old one stays usable until then (the output protocol of every stage,
``tokenweight.outputs``; the cache's side of it: ``tokenweight.scorecache.shards``). Under
``torchrun``/``accelerate launch`` shard ``i`` belongs to rank ``i % world_size``; rank 0 writes
``meta.json`` before and ``complete.json`` after a barrier. Batches never straddle shards, so the
numbers do not depend on how many processes computed them (bitwise, for fp32 on CPU).

Identity (``meta.json``; a cache whose identity differs from what a caller asks for is refused):
``data`` (fingerprint of the prepared folder's manifest), ``split``, ``n_sequences``, ``n``,
``tokenizer`` (digest of the vocabulary and special tokens), ``scorer`` (digest of the scorer's
``config.json`` and weight files: whole files up to 32 MiB, above that the size and 32 blocks of
1 MiB spread evenly over the file -- fine-tuning changes every block, yet at most 32 MiB per file is
read), ``window``, ``stride``, ``dtype``, ``bos_token_id``, ``shard_size``; a scorer with another
tokenizer than the data's (its NLL moved onto the data's tokens by characters,
``tokenweight.alignment``) adds ``alignment`` and ``scorer_tokenizer``. A window ``>= n`` holds a
reference model's full-context NLL (Rho-1).

Any ``datasets.Dataset`` of token ids (shuffled, filtered, packed: rows of any lengths) gets the
same scores as a column, token-aligned (:func:`add_short_nll`, ``tokenweight score --dataset``,
:mod:`tokenweight.scorecache.column`): its rows are scored into a cache like this one, whose
shards are then as wide as their longest row (``ragged`` in meta.json), and joined into the column.
"""

from __future__ import annotations

from tokenweight.outputs import staging_dir
from tokenweight.scorecache.column import add_short_nll, column_stride
from tokenweight.scorecache.compute import compute_scores
from tokenweight.scorecache.layout import (
    COMPLETE,
    FORMAT,
    IDENTITY,
    META,
    SHARDS,
    check_scorer_tokenizer,
    default_shard_size,
    shard_ranges,
)
from tokenweight.scorecache.read import ScoreCache, verify
from tokenweight.windows import default_stride, windows_per_pass

__all__ = [
    "COMPLETE",
    "FORMAT",
    "IDENTITY",
    "META",
    "SHARDS",
    "ScoreCache",
    "add_short_nll",
    "check_scorer_tokenizer",
    "column_stride",
    "compute_scores",
    "default_shard_size",
    "default_stride",
    "shard_ranges",
    "staging_dir",
    "verify",
    "windows_per_pass",
]
