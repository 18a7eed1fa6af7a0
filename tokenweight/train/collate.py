"""Training examples and batches: sequences (or short windows of them), with their frozen scores.

Why a dataset wrapper instead of the prepared ``datasets.Dataset`` as is:

- with a score cache (``tokenweight score``), every example carries its row's short-context NLL as
  a token-aligned ``short_nll`` column (:func:`tokenweight.short_nll.column_short_nll`), which the
  token-weighting component reads like any user's own column: no dataset index is needed;
- ``tokenweight pretrain`` trains at the short context ``w`` on the same prepared data: each
  sequence is cut into consecutive windows of ``w`` tokens (every window after the first starts with
  BOS when the sequence does, exactly as the short-context scorer's windows do, docs/METHOD.md);
- only ``input_ids`` is decoded (the ``episodes`` column is for evaluation), in torch format;
- packed data (``tokenweight prepare --pack``: a ``doc_lengths`` column, :mod:`tokenweight.documents`)
  gives every example its ``doc_lengths`` (cropped with the sequence), and ``pretrain``'s windows
  are cut from each document separately, so that no window crosses a document.

:class:`PadCollator` right-pads a list of examples into a batch; padding is masked out of the
attention and labelled ``-100``, so it is neither scored nor counted (the component counts the
same positions as its normaliser), and a ``short_nll`` column is padded with 0. Packed examples also get
``-100`` at the first token of every document (nothing of its own document precedes it) and the
batch a ``doc_lengths`` tensor (:func:`batch_doc_lengths` turns it back into lists).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

IGNORE_INDEX = -100


def _lengths(ds) -> np.ndarray:
    """Token count of every row of a ``datasets.Dataset`` with an ``input_ids`` list column."""
    if getattr(ds, "_indices", None) is None:
        import pyarrow.compute as pc

        return pc.list_value_length(ds.data.column("input_ids")).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.array([len(x) for x in ds["input_ids"]], dtype=np.int64)


def crop_doc_lengths(lengths: list[int], max_length: int | None) -> list[int]:
    """Document lengths of a packed row cut to its first ``max_length`` tokens (the last document
    kept is cut short, later ones dropped); None: unchanged."""
    if max_length is None:
        return [int(x) for x in lengths]
    out, start = [], 0
    for length in lengths:
        if start >= max_length:
            break
        out.append(min(int(length), max_length - start))
        start += int(length)
    return out


def batch_doc_lengths(doc_lengths) -> list[list[int]] | None:
    """A batch's ``doc_lengths`` (:class:`PadCollator`'s ``[b, D]`` tensor, zero-padded, or lists)
    -> one list of positive lengths per row; None stays None (an unpacked batch)."""
    if doc_lengths is None:
        return None
    rows = doc_lengths.tolist() if isinstance(doc_lengths, torch.Tensor) else doc_lengths
    return [[int(x) for x in row if int(x) > 0] for row in rows]


class TrainSequences(Dataset):
    """Examples ``{"input_ids": LongTensor[L]}`` (and ``short_nll``, ``doc_lengths``) from a prepared split.

    Args:
        ds: ``datasets.Dataset`` with an ``input_ids`` column (one prepared split).
        max_length: crop every sequence to its first ``max_length`` tokens (the long context ``n``
            of the run when it is shorter than the data's).
        window: cut every (cropped) sequence into consecutive windows of ``window`` tokens (the
            short-context pretraining of ``tokenweight pretrain``); windows of < 2 tokens are dropped.
        bos_token_id: with ``window``: windows after the first of a sequence that starts with this
            token get it as their first token.
        limit: use only the first ``limit`` sequences.
        scores: a :class:`tokenweight.scorecache.ScoreCache` of ``ds``'s rows (``tokenweight score``):
            every example gets ``short_nll`` ``FloatTensor[L]``, its row's cached NLL token-aligned
            (entry 0 unused, 0.0); not with ``window``.
    With a ``doc_lengths`` column (packed rows) every example has ``doc_lengths`` (the row's,
    cropped; padding beyond their sum is dropped), and windows are cut from every document on its
    own, BOS put back when the *document* starts with it: the windows of the documents as rows.
    """

    def __init__(
        self,
        ds,
        *,
        max_length: int | None = None,
        window: int | None = None,
        bos_token_id: int | None = None,
        limit: int | None = None,
        scores=None,
    ):
        if scores is not None and window is not None:
            raise ValueError("scores are for whole sequences: pass window=None with scores")
        self.scores = scores
        for name, v in (("max_length", max_length), ("window", window), ("limit", limit)):
            if v is not None and (not isinstance(v, int) or v < (2 if name != "limit" else 1)):
                raise ValueError(f"{name} must be None or an integer >= {2 if name != 'limit' else 1}, got {v!r}")
        if "input_ids" not in ds.column_names:
            raise ValueError(f"dataset has no 'input_ids' column (columns: {ds.column_names})")
        self.ds = ds.with_format("torch", columns=["input_ids"])
        self.max_length, self.window, self.bos_token_id = max_length, window, bos_token_id
        count = len(ds) if limit is None else min(limit, len(ds))
        self.packed = "doc_lengths" in ds.column_names
        self.doc_lengths = None  # packed: the (cropped) document lengths of every row
        if self.packed:
            column = ds.select_columns(["doc_lengths"])[:count]["doc_lengths"]
            self.doc_lengths = [crop_doc_lengths(x, max_length) for x in column]
            lengths = np.array([sum(x) for x in self.doc_lengths], dtype=np.int64)
        else:
            lengths = _lengths(ds)[:count]
            if max_length is not None:
                lengths = np.minimum(lengths, max_length)
        self.lengths = lengths
        if window is None:
            self._rows = np.arange(count, dtype=np.int64)
            self._starts = np.zeros(count, dtype=np.int64)
            return
        rows, starts, ends, firsts = [], [], [], []
        for row, length in enumerate(lengths.tolist()):
            offset = 0
            for doc in self.doc_lengths[row] if self.packed else [length]:
                for start in range(offset, offset + doc, window):
                    if min(start + window, offset + doc) - start >= 2:
                        rows.append(row)
                        starts.append(start)
                        ends.append(min(start + window, offset + doc))
                        firsts.append(offset)
                offset += doc
        self._rows, self._starts = np.array(rows, dtype=np.int64), np.array(starts, dtype=np.int64)
        self._ends, self._firsts = np.array(ends, dtype=np.int64), np.array(firsts, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int) -> dict:
        row, start = int(self._rows[i]), int(self._starts[i])
        ids = self.ds[row]["input_ids"].long()
        if self.max_length is not None:
            ids = ids[: self.max_length]
        if self.window is not None:  # a window of one document (of the row when not packed)
            doc_start = int(self._firsts[i])
            first = ids[doc_start].item() if len(ids) > doc_start else None
            ids = ids[start : int(self._ends[i])].clone()
            if start > doc_start and self.bos_token_id is not None and first == self.bos_token_id:
                ids[0] = self.bos_token_id
        elif self.packed:
            ids = ids[: int(self.lengths[row])]
        example = {"input_ids": ids}
        if self.packed and self.window is None:
            example["doc_lengths"] = self.doc_lengths[row]
        if self.scores is not None:
            nll = self.scores.read([row])[0]
            if nll.shape[0] < len(ids) - 1:
                raise ValueError(
                    f"score cache holds {nll.shape[0] + 1}-token sequences but row {row} has {len(ids)} tokens"
                )
            example["short_nll"] = torch.cat([nll.new_zeros(1), nll[: len(ids) - 1]]).float()
        return example

    @property
    def num_tokens(self) -> int:
        """Tokens in one pass over the examples."""
        if self.window is None:
            return int(self.lengths.sum())
        return int((self._ends - self._starts).sum())


class PadCollator:
    """Right-pad examples into ``input_ids``, ``attention_mask``, ``labels`` [b, L] (and ``short_nll``).

    ``labels`` equal ``input_ids`` with ``-100`` at padding (HF's causal-LM convention: position t
    is predicted from positions < t, the shift happens in the loss), or an example's own
    ``labels`` (same length as its ``input_ids``) when it has them. When an example has
    ``doc_lengths`` (packed), the batch gets ``doc_lengths`` ``[b, D]`` long (zero-padded; an
    example without them is one document) and ``labels`` get ``-100`` at every document's first
    token after the row's first.

    ``pad_to_multiple_of``: the batch's length is rounded up to a multiple of it (sequence
    parallelism splits every row into that many equal shards); ``return_position_ids``: the batch
    gets ``position_ids`` ``[b, L]`` (0, 1, ... per row), which a sequence-parallel engine needs to
    keep every token's global position after sharding (DeepSpeed's Ulysses requires them).
    """

    def __init__(self, pad_token_id: int = 0, pad_to_multiple_of: int | None = None, return_position_ids: bool = False):
        if pad_to_multiple_of is not None and (not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1):
            raise ValueError(f"pad_to_multiple_of must be None or an integer >= 1, got {pad_to_multiple_of!r}")
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of, self.return_position_ids = pad_to_multiple_of, bool(return_position_ids)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        seqs = [torch.as_tensor(e["input_ids"], dtype=torch.long) for e in examples]
        length = max(len(s) for s in seqs)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids = torch.full((len(seqs), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), length), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
            mask[i, : len(s)] = 1
        labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
        for i, e in enumerate(examples):  # examples may bring their own labels (e.g. the copy task)
            if "labels" in e:
                labels[i, : len(seqs[i])] = torch.as_tensor(e["labels"], dtype=torch.long)
        out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if self.return_position_ids:
            out["position_ids"] = torch.arange(length).repeat(len(seqs), 1)
        if any("short_nll" in e for e in examples):
            if not all("short_nll" in e for e in examples):
                raise ValueError("some examples have a 'short_nll' column and others not: score every example")
            out["short_nll"] = torch.zeros(len(seqs), length, dtype=torch.float32)
            for i, (e, s) in enumerate(zip(examples, seqs)):
                column = torch.as_tensor(e["short_nll"], dtype=torch.float32)
                if column.shape != s.shape:
                    raise ValueError(
                        f"example {i}: short_nll has {column.numel()} values for {len(s)} tokens (it is token-aligned)"
                    )
                out["short_nll"][i, : len(s)] = column
        if any("doc_lengths" in e for e in examples):
            docs = [[int(x) for x in e.get("doc_lengths", [len(s)])] for e, s in zip(examples, seqs)]
            for i, (lengths, s) in enumerate(zip(docs, seqs)):
                if sum(lengths) != len(s):
                    raise ValueError(f"example {i}: doc_lengths {lengths} sum to {sum(lengths)}, not {len(s)} tokens")
                starts = np.cumsum(lengths)[:-1]
                labels[i, torch.as_tensor(starts, dtype=torch.long)] = IGNORE_INDEX
            out["doc_lengths"] = torch.zeros(len(docs), max(len(d) for d in docs), dtype=torch.long)
            for i, lengths in enumerate(docs):
                out["doc_lengths"][i, : len(lengths)] = torch.tensor(lengths, dtype=torch.long)
        return out
