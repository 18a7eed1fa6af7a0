"""CopyTask: exact rows against a brute-force reference, labels only on the repeat, seeded per index."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokenweight.train.collate import IGNORE_INDEX, PadCollator
from tokenweight.train.copytask import CopyTask, WithCopyRows


def reference(i, seed, length, vocab, special, bos):
    """Brute force: draw from the sorted allowed ids with the same per-example generator."""
    allowed = [t for t in range(vocab) if t not in special]
    lead = [] if bos is None else [bos]
    half = (length - len(lead) + 1) // 2
    draws = np.random.default_rng([seed, i]).integers(0, len(allowed), size=half)
    x = [allowed[int(k)] for k in draws]
    ids = lead + x + x[: length - len(lead) - half]
    labels = [IGNORE_INDEX] * (len(lead) + half) + x[: length - len(lead) - half]
    return ids, labels


@pytest.mark.parametrize("length,bos", [(9, 0), (10, 0), (8, None), (4, 0)])
def test_rows_match_reference(length, bos):
    special = {0, 1, 5}
    ds = CopyTask(6, length, 12, special_ids=special, bos_token_id=bos, seed=3)
    assert len(ds) == 6 and ds.num_tokens == 6 * length
    for i in range(6):
        ex = ds[i]
        ids, labels = reference(i, 3, length, 12, special, bos)
        assert len(ids) == length and ex["input_ids"].tolist() == ids and ex["labels"].tolist() == labels and ex["index"] == i
        assert not set(ex["input_ids"].tolist()[1 if bos is not None else 0:]) & special


def test_seeded_per_example_and_different_across_examples():
    a, b = CopyTask(4, 33, 500, seed=1), CopyTask(4, 33, 500, seed=1)
    assert all(torch.equal(a[i]["input_ids"], b[i]["input_ids"]) for i in range(4))
    assert not torch.equal(a[0]["input_ids"], a[1]["input_ids"])
    assert not torch.equal(a[0]["input_ids"], CopyTask(4, 33, 500, seed=2)[0]["input_ids"])


def test_collator_keeps_example_labels():
    ds = CopyTask(2, 9, 50, special_ids=[0], bos_token_id=0)
    out = PadCollator(0)([ds[0], {"input_ids": [0, 7, 8], "index": 9}])
    assert out["labels"][0].tolist() == ds[0]["labels"].tolist()
    assert out["labels"][1].tolist() == [0, 7, 8] + [IGNORE_INDEX] * 6
    assert out["index"].tolist() == [0, 9]


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_rows=0, length=9, vocab_size=10), "num_rows"),
    (dict(num_rows=1, length=3, vocab_size=10, bos_token_id=0), "length"),
    (dict(num_rows=1, length=9, vocab_size=3, special_ids=[0, 1]), "non-special"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CopyTask(**kwargs)
    with pytest.raises(IndexError):
        CopyTask(2, 9, 10)[2]


def test_with_copy_rows_replaces_an_even_share():
    base = [{"input_ids": torch.tensor([0, 40 + i]), "index": 100 + i} for i in range(10)]
    copy = CopyTask(10, 9, 30, special_ids=[0], bos_token_id=0)
    mixed = WithCopyRows(base, copy, 0.3)
    kinds = [mixed.is_copy(i) for i in range(10)]
    assert kinds == [False, False, False, True, False, False, True, False, False, True]  # floor((i+1)0.3) steps
    for i in range(10):
        ex = mixed[i]
        assert ex["index"] == 100 + i
        expect = copy[i]["input_ids"] if kinds[i] else base[i]["input_ids"]
        assert torch.equal(ex["input_ids"], expect) and (("labels" in ex) == kinds[i])
    assert not any(WithCopyRows(base, copy, 0.0).is_copy(i) for i in range(10))
    with pytest.raises(ValueError, match="fraction"):
        WithCopyRows(base, copy, 1.5)
    with pytest.raises(ValueError, match="fewer"):
        WithCopyRows(base, CopyTask(3, 9, 30), 0.5)
