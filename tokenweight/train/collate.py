"""Training examples and batches: sequences (or short windows of them) with their dataset index.

Why a dataset wrapper instead of the prepared ``datasets.Dataset`` as is:

- every example carries ``index``, its row in the prepared train split, so that the frozen scorer
  can read that row's cached short-context NLL and the NaN guard can name the sequences of a bad
  batch;
- ``tokenweight pretrain`` trains at the short context ``w`` on the same prepared data: each
  sequence is cut into consecutive windows of ``w`` tokens (every window after the first starts with
  BOS when the sequence does, exactly as the short-context scorer's windows do, docs/METHOD.md);
- only ``input_ids`` is decoded (the ``episodes`` column is for evaluation), in torch format.

:class:`PadCollator` right-pads a list of examples into a batch; padding is masked out of the
attention and labelled ``-100``, so it is neither scored nor counted (HF counts ``labels[:, 1:] !=
-100`` as ``num_items_in_batch``, the same positions the loss uses).
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


class TrainSequences(Dataset):
    """Examples ``{"input_ids": LongTensor[L], "index": int}`` from a prepared split.

    Args:
        ds: ``datasets.Dataset`` with an ``input_ids`` column (one prepared split).
        max_length: crop every sequence to its first ``max_length`` tokens (the long context ``n``
            of the run when it is shorter than the data's).
        window: cut every (cropped) sequence into consecutive windows of ``window`` tokens (the
            short-context pretraining of ``tokenweight pretrain``); windows of < 2 tokens are dropped.
        bos_token_id: with ``window``: windows after the first of a sequence that starts with this
            token get it as their first token.
        limit: use only the first ``limit`` sequences.

    ``index`` is always the row of the *sequence* in ``ds`` (for a window: the sequence it is cut from).
    """

    def __init__(
        self,
        ds,
        *,
        max_length: int | None = None,
        window: int | None = None,
        bos_token_id: int | None = None,
        limit: int | None = None,
    ):
        for name, v in (("max_length", max_length), ("window", window), ("limit", limit)):
            if v is not None and (not isinstance(v, int) or v < (2 if name != "limit" else 1)):
                raise ValueError(f"{name} must be None or an integer >= {2 if name != 'limit' else 1}, got {v!r}")
        if "input_ids" not in ds.column_names:
            raise ValueError(f"dataset has no 'input_ids' column (columns: {ds.column_names})")
        self.ds = ds.with_format("torch", columns=["input_ids"])
        self.max_length, self.window, self.bos_token_id = max_length, window, bos_token_id
        count = len(ds) if limit is None else min(limit, len(ds))
        lengths = _lengths(ds)[:count]
        if max_length is not None:
            lengths = np.minimum(lengths, max_length)
        self.lengths = lengths
        if window is None:
            self._rows = np.arange(count, dtype=np.int64)
            self._starts = np.zeros(count, dtype=np.int64)
        else:
            rows, starts = [], []
            for row, length in enumerate(lengths.tolist()):
                for start in range(0, length, window):
                    if min(start + window, length) - start >= 2:
                        rows.append(row)
                        starts.append(start)
            self._rows, self._starts = np.array(rows, dtype=np.int64), np.array(starts, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int) -> dict:
        row, start = int(self._rows[i]), int(self._starts[i])
        ids = self.ds[row]["input_ids"].long()
        if self.max_length is not None:
            ids = ids[: self.max_length]
        if self.window is not None:
            first = ids[0].item() if len(ids) else None
            ids = ids[start : start + self.window].clone()
            if start > 0 and self.bos_token_id is not None and first == self.bos_token_id:
                ids[0] = self.bos_token_id
        return {"input_ids": ids, "index": row}

    @property
    def num_tokens(self) -> int:
        """Tokens in one pass over the examples."""
        if self.window is None:
            return int(self.lengths.sum())
        return int(sum(min(self.window, int(self.lengths[r]) - s) for r, s in zip(self._rows, self._starts)))


class PadCollator:
    """Right-pad examples into ``input_ids``, ``attention_mask``, ``labels`` [b, L] and ``index`` [b].

    ``labels`` equal ``input_ids`` with ``-100`` at padding (HF's causal-LM convention: position t
    is predicted from positions < t, the shift happens in the loss), or an example's own
    ``labels`` (same length as its ``input_ids``) when it has them.
    """

    def __init__(self, pad_token_id: int = 0):
        self.pad_token_id = int(pad_token_id)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        seqs = [torch.as_tensor(e["input_ids"], dtype=torch.long) for e in examples]
        length = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), length), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
            mask[i, : len(s)] = 1
        labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
        for i, e in enumerate(examples):  # examples may bring their own labels (e.g. the copy task)
            if "labels" in e:
                labels[i, : len(seqs[i])] = torch.as_tensor(e["labels"], dtype=torch.long)
        index = torch.tensor([int(e["index"]) for e in examples], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "index": index}
