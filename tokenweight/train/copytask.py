"""A synthetic copy task: the induction warm-up of ``tokenweight pretrain --task copy``.

Why: copying a token sequence seen earlier in the context (what "induction heads" do) is the
mechanism behind retrieval and the injected episodes, and every pretrained LLM has it. A small
model trained from scratch for minutes on natural text does not get there: its loss falls by
learning local statistics first, and the copy circuit forms only after billions of tokens (the
demo measured digit recall at chance, ~10%, after 600 steps on the stdlib, even with a repeated
definition line in 20% of tokens). On sequences that are nothing *but* a repeat of random tokens,
the only way to lower the loss is to copy, and a 2.5M-parameter Llama learns it within a few
hundred steps. A short copy phase before natural pretraining therefore gives the stand-in base
model the ability the paper's 8k model brings along.

Each example is ``[BOS] x x[:k]`` of ``length`` tokens, with ``x`` uniformly random over the
non-special tokens of the vocabulary and ``h = ceil((length - has_bos) / 2)`` tokens long (the second
copy is cut to fit); the labels are ``-100`` on ``BOS`` and the first ``x`` (random, nothing to
learn) so that the whole loss is on the copy. Example ``i`` is drawn from a generator seeded by
``(seed, i)``: the data do not depend on batching, workers or resuming.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from tokenweight.train.collate import IGNORE_INDEX


class CopyTask(Dataset):
    """``num_rows`` examples ``{"input_ids", "labels": LongTensor[length], "index": i}``.

    Args:
        num_rows: examples in one pass (``max_steps`` x global batch covers the run once).
        length: tokens per example (the pretraining window ``w``), >= 3 (>= 4 with BOS).
        vocab_size: size of the model's vocabulary.
        special_ids: token ids never drawn (BOS, EOS, padding, ...).
        bos_token_id: first token of every example, or None.
        seed: data seed.
    """

    def __init__(self, num_rows: int, length: int, vocab_size: int, special_ids=(), bos_token_id: int | None = None,
                 seed: int = 0):
        if not (isinstance(num_rows, int) and num_rows >= 1):
            raise ValueError(f"num_rows must be an int >= 1, got {num_rows!r}")
        lead = 0 if bos_token_id is None else 1
        if not (isinstance(length, int) and length >= 3 + lead):
            raise ValueError(f"length must be an int >= {3 + lead} (one token to copy, twice), got {length!r}")
        allowed = np.setdiff1d(np.arange(int(vocab_size)), np.asarray(sorted({int(t) for t in special_ids}), dtype=np.int64))
        if len(allowed) < 2:
            raise ValueError(f"the vocabulary of {vocab_size} tokens has fewer than 2 non-special tokens to draw from")
        self.num_rows, self.length, self.bos, self.seed = num_rows, length, bos_token_id, int(seed)
        self.allowed = torch.from_numpy(allowed)
        self.half = (length - lead + 1) // 2

    def __len__(self) -> int:
        return self.num_rows

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.num_rows:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, int(i)])
        x = self.allowed[torch.from_numpy(rng.integers(0, len(self.allowed), size=self.half))]
        lead = [] if self.bos is None else [self.bos]
        rest = self.length - len(lead) - self.half
        ids = torch.cat([torch.tensor(lead, dtype=torch.long), x, x[:rest]])
        labels = ids.clone()
        labels[: len(lead) + self.half] = IGNORE_INDEX
        return {"input_ids": ids, "labels": labels, "index": int(i)}

    @property
    def num_tokens(self) -> int:
        return self.num_rows * self.length


class WithCopyRows(Dataset):
    """``base`` with a share ``fraction`` of its examples replaced by copy-task rows.

    Why mix instead of a copy phase first: a copy circuit learned on random tokens alone is
    overwritten within the first hundred steps on natural text (measured: recall at chance again
    after 100 steps); with copy rows in every batch it has to survive, and natural-text copying
    (the restated episodes) can build on it.

    Example ``i`` is a copy row when ``floor((i + 1) f) > floor(i f)`` (exactly ``floor(k f)`` of any
    first ``k``, evenly spread, independent of the shuffling that happens later); it keeps the
    ``index`` of the base example it replaces.
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
        ex = self.copy[i]
        return dict(ex, index=self.base[i]["index"])
