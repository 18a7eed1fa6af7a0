"""A synthetic copy task: the induction warm-up of ``tokenweight pretrain --task copy``.

Why: copying a token sequence seen earlier in the context (what "induction heads" do) is the
mechanism behind retrieval and the injected episodes, and every pretrained LLM has it. A small
model trained briefly from scratch on natural text does not get there: its loss falls by learning
local statistics first, so its recall of episode values can stay at chance even when restated
definitions make up a large share of the tokens. On rows that are nothing but repeats of random
tokens, the only way to lower the loss is to copy. How fast the induction head forms depends
mostly on depth and row length: few layers and short rows form it soonest (docs/TRAINING.md has
the measurements, per preset and row length).

Each example is ``[BOS]`` followed by blocks ``x f x`` until ``length`` tokens (the last block
cut): ``x`` is 4-32 random tokens (fewer in very short rows), ``f`` 0 to ``length // 4`` random
filler tokens, all uniform over the non-special tokens of the vocabulary; only the repeated ``x``
is labelled (everything else is random, nothing to learn). The distance of a repeat varies from
block to block: with a fixed offset (``[BOS] x x``, an earlier version) the model learned to copy
from position ``t - h`` instead of matching content, which fails as soon as the repeat moves by
one position and did not transfer to text at all (docs/TRAINING.md). Example ``i`` is drawn
from a generator seeded by ``(seed, i)``: the data do not depend on batching, workers or resuming.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from tokenweight.train.collate import IGNORE_INDEX

MIN_SPAN, MAX_SPAN = 4, 32


class CopyTask(Dataset):
    """``num_rows`` examples ``{"input_ids", "labels": LongTensor[length]}``.

    Args:
        num_rows: examples in one pass (``max_steps`` x global batch covers the run once).
        length: tokens per example (``pretrain --copy-length``, by default the window ``w``), >= 3
            (>= 4 with BOS).
        vocab_size: size of the model's vocabulary.
        special_ids: token ids never drawn (BOS, EOS, padding, ...).
        bos_token_id: first token of every example, or None.
        seed: data seed.
    """

    def __init__(
        self,
        num_rows: int,
        length: int,
        vocab_size: int,
        special_ids=(),
        bos_token_id: int | None = None,
        seed: int = 0,
    ):
        if not (isinstance(num_rows, int) and num_rows >= 1):
            raise ValueError(f"num_rows must be an int >= 1, got {num_rows!r}")
        lead = 0 if bos_token_id is None else 1
        if not (isinstance(length, int) and length >= 3 + lead):
            raise ValueError(f"length must be an int >= {3 + lead} (one token to copy, twice), got {length!r}")
        special = np.asarray(sorted({int(t) for t in special_ids}), dtype=np.int64)
        allowed = np.setdiff1d(np.arange(int(vocab_size)), special)
        if len(allowed) < 2:
            raise ValueError(f"the vocabulary of {vocab_size} tokens has fewer than 2 non-special tokens to draw from")
        self.num_rows, self.length, self.bos, self.seed = num_rows, length, bos_token_id, int(seed)
        self.allowed = allowed
        self.max_span = max(1, min(MAX_SPAN, (length - lead) // 2))
        self.min_span = min(MIN_SPAN, self.max_span)
        self.max_gap = length // 4

    def __len__(self) -> int:
        return self.num_rows

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.num_rows:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, int(i)])
        ids = [] if self.bos is None else [self.bos]
        labels = [IGNORE_INDEX] * len(ids)
        while len(ids) < self.length:
            h = int(rng.integers(self.min_span, self.max_span + 1))
            b = int(rng.integers(0, self.max_gap + 1))
            x = self.allowed[rng.integers(0, len(self.allowed), size=h)].tolist()
            f = self.allowed[rng.integers(0, len(self.allowed), size=b)].tolist()
            ids += x + f + x
            labels += [IGNORE_INDEX] * (h + b) + x
        return {
            "input_ids": torch.tensor(ids[: self.length], dtype=torch.long),
            "labels": torch.tensor(labels[: self.length], dtype=torch.long),
        }

    @property
    def num_tokens(self) -> int:
        return self.num_rows * self.length


class WithCopyRows(Dataset):
    """``base`` with a share ``fraction`` of its examples replaced by copy-task rows.

    Why mix instead of (only) a copy phase first: a copy circuit learned on random tokens alone is
    at risk of being overwritten by the first steps on natural text (docs/TRAINING.md); with copy
    rows in every batch it has to survive.

    Example ``i`` is a copy row when ``floor((i + 1) f) > floor(i f)`` (exactly ``floor(k f)`` of any
    first ``k``, evenly spread, independent of the shuffling that happens later).
    """

    def __init__(self, base, copy: CopyTask, fraction: float):
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
        if len(copy) < len(base):
            raise ValueError(f"copy task has {len(copy)} rows, fewer than the {len(base)} base examples")
        self.base, self.copy, self.fraction = base, copy, float(fraction)

    def __len__(self) -> int:
        return len(self.base)

    def is_copy(self, i: int) -> bool:
        from fractions import Fraction

        f = Fraction(str(self.fraction))
        return ((i + 1) * f) // 1 > (i * f) // 1

    def __getitem__(self, i: int) -> dict:
        if not self.is_copy(i):
            return self.base[i]
        return self.copy[i]
