"""Chunk one document's tokens into training sequences of ``n`` tokens.

Why sequences never span documents: the paper chunks PG19 books so that every 32k sequence is one
book; a long-context model must learn to use *its own document's* distant tokens, and a sequence
glued from unrelated documents teaches it that far context is noise. Why tails are dropped by
default: every sequence then has exactly ``n`` tokens (no padding in training, equal-length
batches for the score cache); ``min_tail`` keeps tails for small corpora where that matters less
than the lost text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Chunked:
    """One document's sequences.

    ``sequences``: list of int32 arrays ``[n]`` (a kept tail: ``[min_tail..n)``), BOS first when
    the tokenizer has one; ``episodes``: per sequence an int64 array ``[E, 4]`` of
    ``[def_start, def_end, use_start, use_end]`` relative to that sequence; ``dropped_tokens``:
    document tokens in a dropped tail.
    """

    sequences: list[np.ndarray]
    episodes: list[np.ndarray]
    dropped_tokens: int


def capacity(n: int, bos_token_id: int | None) -> int:
    """Document tokens per sequence: ``n - 1`` when each sequence starts with BOS."""
    return n - 1 if bos_token_id is not None else n


def chunk_document(
    ids: np.ndarray,
    n: int,
    bos_token_id: int | None = None,
    min_tail: int | None = None,
    spans: np.ndarray | None = None,
) -> Chunked:
    """Cut a document into sequences.

    Args:
        ids: int ``[T]`` document tokens (EOS already appended when wanted).
        n: sequence length (BOS included), >= 2.
        bos_token_id: prepended to every sequence when not None.
        min_tail: keep an incomplete last sequence when it has at least this many tokens (BOS
            included); None drops it.
        spans: int ``[E, 5]`` episodes ``[def_cue, def_start, def_end, use_start, use_end]`` in
            document coordinates; an episode is kept in the sequence that holds its cue (the
            token of the definition's name), its definition and its use.
    """
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    if min_tail is not None and not 2 <= min_tail <= n:
        raise ValueError(f"min_tail must be None or an int in [2, n={n}], got {min_tail!r}")
    ids = np.asarray(ids, dtype=np.int32)
    cap = capacity(n, bos_token_id)
    offset = 1 if bos_token_id is not None else 0
    n_full, rest = divmod(len(ids), cap)
    bounds = [(k * cap, (k + 1) * cap) for k in range(n_full)]
    dropped = rest
    if rest and min_tail is not None and rest + offset >= min_tail:
        bounds.append((n_full * cap, len(ids)))
        dropped = 0
    spans = np.zeros((0, 5), dtype=np.int64) if spans is None else np.asarray(spans, dtype=np.int64).reshape(-1, 5)
    sequences, episodes = [], []
    for a, b in bounds:
        body = ids[a:b]
        seq = np.concatenate([np.array([bos_token_id], dtype=np.int32), body]) if offset else body.copy()
        inside = (spans[:, 0] >= a) & (spans[:, 4] <= b)
        sequences.append(seq)
        episodes.append(spans[inside, 1:] - a + offset)
    return Chunked(sequences, episodes, dropped)
