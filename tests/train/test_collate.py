"""TrainSequences (index, crop, BOS windows for pretraining, limit) and PadCollator."""

from __future__ import annotations

import pytest
import torch

from tests.train.train_helpers import BOS, dataset
from tokenweight.train.collate import PadCollator, TrainSequences

ROWS = [[BOS] + list(range(10, 10 + k)) for k in (9, 4, 1, 12)]  # lengths 10, 5, 2, 13


def test_whole_sequences_with_index_and_crop():
    ds = TrainSequences(dataset(ROWS))
    assert len(ds) == 4 and ds.num_tokens == 30
    assert set(ds[3]) == {"input_ids", "index"} and ds[3]["index"] == 3
    assert ds[3]["input_ids"].tolist() == ROWS[3] and ds[3]["input_ids"].dtype == torch.long
    cropped = TrainSequences(dataset(ROWS), max_length=6, limit=3)
    assert len(cropped) == 3 and cropped.num_tokens == 6 + 5 + 2
    assert cropped[0]["input_ids"].tolist() == ROWS[0][:6]


def test_windows_start_with_bos_and_keep_the_sequence_index():
    ds = TrainSequences(dataset(ROWS), window=4, bos_token_id=BOS)
    got = [(ds[i]["index"], ds[i]["input_ids"].tolist()) for i in range(len(ds))]
    assert got == [
        (0, [BOS, 10, 11, 12]),
        (0, [BOS, 14, 15, 16]),
        (0, [BOS, 18]),
        (1, [BOS, 10, 11, 12]),  # its last window [13] is a single token: dropped
        (2, [BOS, 10]),
        (3, [BOS, 10, 11, 12]),
        (3, [BOS, 14, 15, 16]),
        (3, [BOS, 18, 19, 20]),  # [21] dropped
    ]
    assert ds.num_tokens == sum(len(x) for _, x in got)
    no_bos = TrainSequences(dataset([[5, 6, 7, 8, 9]]), window=2, bos_token_id=BOS)
    assert [no_bos[i]["input_ids"].tolist() for i in range(len(no_bos))] == [[5, 6], [7, 8]]


def test_bad_arguments():
    with pytest.raises(ValueError, match="window"):
        TrainSequences(dataset(ROWS), window=1)
    with pytest.raises(ValueError, match="input_ids"):
        from datasets import Dataset

        TrainSequences(Dataset.from_dict({"text": ["a"]}))


def test_pad_collator():
    out = PadCollator(pad_token_id=0)(
        [{"input_ids": [1, 5, 6], "index": 7}, {"input_ids": torch.tensor([1, 9]), "index": 2}]
    )
    assert out["input_ids"].tolist() == [[1, 5, 6], [1, 9, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert out["labels"].tolist() == [[1, 5, 6], [1, 9, -100]]
    assert out["index"].tolist() == [7, 2]
