"""TrainSequences (crop, BOS windows for pretraining, limit, cached scores as a column) and PadCollator."""

from __future__ import annotations

import pytest
import torch

from tests.train.train_helpers import BOS, dataset
from tokenweight.train.collate import PadCollator, TrainSequences

ROWS = [[BOS] + list(range(10, 10 + k)) for k in (9, 4, 1, 12)]  # lengths 10, 5, 2, 13


def test_whole_sequences_and_crop():
    ds = TrainSequences(dataset(ROWS))
    assert len(ds) == 4 and ds.num_tokens == 30
    assert set(ds[3]) == {"input_ids"}
    assert ds[3]["input_ids"].tolist() == ROWS[3] and ds[3]["input_ids"].dtype == torch.long
    cropped = TrainSequences(dataset(ROWS), max_length=6, limit=3)
    assert len(cropped) == 3 and cropped.num_tokens == 6 + 5 + 2
    assert cropped[0]["input_ids"].tolist() == ROWS[0][:6]


def test_windows_start_with_bos():
    ds = TrainSequences(dataset(ROWS), window=4, bos_token_id=BOS)
    got = [ds[i]["input_ids"].tolist() for i in range(len(ds))]
    assert got == [
        [BOS, 10, 11, 12],
        [BOS, 14, 15, 16],
        [BOS, 18],
        [BOS, 10, 11, 12],  # row 1: its last window [13] is a single token: dropped
        [BOS, 10],
        [BOS, 10, 11, 12],
        [BOS, 14, 15, 16],
        [BOS, 18, 19, 20],  # [21] dropped
    ]
    assert ds.num_tokens == sum(len(x) for x in got)
    no_bos = TrainSequences(dataset([[5, 6, 7, 8, 9]]), window=2, bos_token_id=BOS)
    assert [no_bos[i]["input_ids"].tolist() for i in range(len(no_bos))] == [[5, 6], [7, 8]]


def test_bad_arguments():
    with pytest.raises(ValueError, match="window"):
        TrainSequences(dataset(ROWS), window=1)
    with pytest.raises(ValueError, match="input_ids"):
        from datasets import Dataset

        TrainSequences(Dataset.from_dict({"text": ["a"]}))


def test_pad_collator():
    out = PadCollator(pad_token_id=0)([{"input_ids": [1, 5, 6]}, {"input_ids": torch.tensor([1, 9])}])
    assert out["input_ids"].tolist() == [[1, 5, 6], [1, 9, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert out["labels"].tolist() == [[1, 5, 6], [1, 9, -100]]
    assert set(out) == {"input_ids", "attention_mask", "labels"}


def test_pad_collator_pads_a_token_aligned_short_nll_column():
    out = PadCollator(0)(
        [{"input_ids": [1, 5, 6], "short_nll": [0.0, 2.5, 1.0]}, {"input_ids": [1, 9], "short_nll": [0, 3]}]
    )
    assert out["short_nll"].tolist() == [[0.0, 2.5, 1.0], [0.0, 3.0, 0.0]] and out["short_nll"].dtype == torch.float32
    with pytest.raises(ValueError, match="token-aligned"):
        PadCollator(0)([{"input_ids": [1, 5, 6], "short_nll": [2.5, 1.0]}])
    with pytest.raises(ValueError, match="score every example"):
        PadCollator(0)([{"input_ids": [1, 5], "short_nll": [0, 1]}, {"input_ids": [1, 9]}])


class Cache:
    """A score cache of 13-token rows: row i's target j has NLL 10·i + j (as ScoreCache.read)."""

    def read(self, indices):
        return torch.tensor([[10.0 * i + j for j in range(12)] for i in indices])


def test_cached_scores_become_a_token_aligned_column():
    ds = TrainSequences(dataset(ROWS), scores=Cache(), max_length=6)
    assert ds[3]["short_nll"].tolist() == [0.0, 30.0, 31.0, 32.0, 33.0, 34.0]  # token t: target t-1 of the cache
    assert ds[2]["short_nll"].tolist() == [0.0, 20.0]
    with pytest.raises(ValueError, match="window=None"):
        TrainSequences(dataset(ROWS), scores=Cache(), window=4)
