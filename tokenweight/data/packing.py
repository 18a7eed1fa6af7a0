"""Pack documents' short pieces into rows of at most ``n`` tokens (``tokenweight prepare --pack``).

Why: without packing every row is one document, so a corpus of short documents (or the tails of
long ones) is either dropped (the default) or kept as short rows that collate right-pads to ``n``
(``--min-tail``): most of a batch is then padding. Packed rows put several pieces back to back and
record where each starts (``doc_lengths``); training, scoring and evaluation attend within a piece
only and restart short windows at each piece (``tokenweight.documents``), so a packed row gives
what its pieces give one by one, at a fraction of the padding.

The rule (deterministic, streaming, bounded memory):

1. each document is chunked as without packing (:func:`tokenweight.data.sequences.chunk_document`):
   full chunks of ``n`` tokens and a tail, each piece starting with BOS when the tokenizer has one;
   with packing the tail is kept when it has at least ``min_piece`` tokens (BOS included: ``--min-tail``
   when given, else 2, i.e. every tail that has a target);
2. a piece of exactly ``n`` tokens is a row on its own, written at once;
3. a shorter piece goes, in document order, into the first open row (in the order the rows were
   opened) with room for it (first fit); a row whose free room drops below ``min_piece`` can take
   nothing more and is written;
4. when no open row has room, a new row is opened with the piece; when ``max_open`` rows are
   already open, the fullest of them (least free room; the earliest opened on a tie) is written
   first;
5. at the end of a split (:meth:`Packer.flush`) the open rows are written in the order they were
   opened.

A piece is never cut or reordered within a row, so every token of every document appears exactly
once, in order, and rows never mix the train and validation splits (one :class:`Packer` per split).
The ``episodes`` spans of a piece (relative to the piece) are shifted by the piece's offset in the row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

#: open rows first fit looks into: enough for little padding (the shortest open rows fill up
#: first), small enough that packing costs O(MAX_OPEN) per piece and the pending tokens stay bounded
MAX_OPEN = 16

__all__ = ["MAX_OPEN", "Packer", "Piece", "Row", "pack_pieces"]


@dataclass(frozen=True, eq=False)
class Piece:
    """One document's piece: ``ids`` int32 ``[l]`` (BOS first when the tokenizer has one),
    ``episodes`` int ``[E, 4]`` spans relative to the piece, the ``doc_id`` of its document, and
    ``first``: whether it is its document's first piece (the writer counts documents by it)."""

    ids: np.ndarray
    episodes: np.ndarray
    doc_id: int
    first: bool = True


@dataclass(eq=False)
class Row:
    """A packed row: its pieces back to back (their order is their order in the row)."""

    pieces: list[Piece] = field(default_factory=list)
    size: int = 0

    def add(self, piece: Piece) -> None:
        self.pieces.append(piece)
        self.size += len(piece.ids)

    @property
    def doc_id(self) -> int:
        """The document of the row's first piece (the ``doc_id`` column of a packed row)."""
        return self.pieces[0].doc_id

    @property
    def doc_lengths(self) -> list[int]:
        return [len(p.ids) for p in self.pieces]

    @property
    def input_ids(self) -> np.ndarray:
        return np.concatenate([np.asarray(p.ids, dtype=np.int32) for p in self.pieces])

    @property
    def episodes(self) -> np.ndarray:
        """int64 ``[E, 4]``: every piece's spans shifted by the piece's offset in the row."""
        out, offset = [], 0
        for p in self.pieces:
            out.append(np.asarray(p.episodes, dtype=np.int64).reshape(-1, 4) + offset)
            offset += len(p.ids)
        return np.concatenate(out) if out else np.zeros((0, 4), dtype=np.int64)


class Packer:
    """The packing rule of this module, one piece at a time (one packer per split).

    :meth:`add` and :meth:`flush` return the rows written by that call, in the order they are
    written. At most ``max_open`` rows are pending at any time.
    """

    def __init__(self, n: int, max_open: int = MAX_OPEN, min_piece: int = 2):
        if not isinstance(n, (int, np.integer)) or n < 2:
            raise ValueError(f"n must be an int >= 2, got {n!r}")
        if not isinstance(max_open, int) or max_open < 1:
            raise ValueError(f"max_open must be an int >= 1, got {max_open!r}")
        if not isinstance(min_piece, int) or not 1 <= min_piece <= n:
            raise ValueError(f"min_piece must be an int in [1, n={n}], got {min_piece!r}")
        self.n, self.max_open, self.min_piece = int(n), max_open, min_piece
        self.open: list[Row] = []

    def add(self, piece: Piece) -> list[Row]:
        size = len(piece.ids)
        if not 1 <= size <= self.n:
            raise ValueError(f"a piece must have 1 to n={self.n} tokens, got {size}")
        if size == self.n:
            return [Row([piece], size)]
        out = []
        row = next((r for r in self.open if self.n - r.size >= size), None)
        if row is None:
            if len(self.open) >= self.max_open:
                fullest = min(range(len(self.open)), key=lambda i: (self.n - self.open[i].size, i))
                out.append(self.open.pop(fullest))
            row = Row()
            self.open.append(row)
        row.add(piece)
        if self.n - row.size < self.min_piece:
            self.open = [r for r in self.open if r is not row]
            out.append(row)
        return out

    def flush(self) -> list[Row]:
        out, self.open = self.open, []
        return out


def pack_pieces(pieces: Iterable[Piece], n: int, max_open: int = MAX_OPEN, min_piece: int = 2) -> list[Row]:
    """Every row of ``pieces`` (in document order) packed by the rule above, in written order."""
    packer = Packer(n, max_open, min_piece)
    rows = []
    for p in pieces:
        rows += packer.add(p)
    return rows + packer.flush()
