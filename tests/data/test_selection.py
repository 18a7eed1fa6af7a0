"""tokenweight.data.selection: units ranked by the mean of their targets' scores, the kept share,
row scores against brute force, and shards that survive an interruption."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.tiny_models import tiny_llama
from tokenweight.data.selection import long_episodes, rank, row_scores, scored_rows, summary
from tokenweight.scoring import context_kl, self_scored_short_nll, token_nll

BOS = 1


def test_documents_ranked_by_the_mean_over_all_their_targets():
    doc_ids = [7, 7, 3, 5, 5, 5]
    sums = np.array([4.0, 2.0, 3.0, 1.0, 1.0, 10.0])
    counts = np.array([3.0, 3.0, 2.0, 4.0, 4.0, 4.0])
    kept, records = rank(doc_ids, sums, counts, keep=0.5, unit="document")
    # doc 7: 6/6 = 1.0; doc 3: 3/2 = 1.5; doc 5: 12/12 = 1.0 -> 3, then 7 (first row 0) before 5 (row 3)
    assert [(u["unit"], u["score"], u["kept"]) for u in records] == [(3, 1.5, True), (7, 1.0, True), (5, 1.0, False)]
    assert kept == [0, 1, 2]  # ceil(0.5 * 3) = 2 documents, their rows in the data's order
    assert [u["targets"] for u in records] == [2, 6, 12]


def test_rows_as_units_and_the_kept_count():
    sums, counts = np.array([1.0, 5.0, 2.0, 0.0]), np.array([1.0, 1.0, 1.0, 0.0])
    kept, records = rank([0, 0, 0, 0], sums, counts, keep=0.25, unit="row")
    assert kept == [1] and [u["unit"] for u in records] == [1, 2, 0, 3]
    assert records[-1]["score"] == 0.0  # a row without targets scores 0
    assert rank([0, 0, 0, 0], sums, counts, keep=1.0, unit="row")[0] == [0, 1, 2, 3]
    assert rank([0, 0, 0, 0], sums, counts, keep=0.01, unit="row")[0] == [1]  # at least one unit


@pytest.fixture(scope="module")
def model():
    return tiny_llama(50, 3, max_position_embeddings=64, bos_token_id=BOS, eos_token_id=2, pad_token_id=0)


@pytest.mark.parametrize("method", ["longfilter", "mean_abs_d"])
def test_row_scores_are_the_sums_of_the_target_scores(model, method):
    g = torch.Generator().manual_seed(0)
    rows = [[BOS] + torch.randint(3, 50, (k,), generator=g).tolist() for k in (30, 11, 1)]
    sums, counts = row_scores(model, rows, method, 8, 5, BOS)
    for r, ids in enumerate(rows):
        x = torch.tensor([ids])
        if len(ids) < 2:
            assert sums[r] == 0 and counts[r] == 0
            continue
        if method == "longfilter":
            want = context_kl(model, x, 8, 5, bos_token_id=BOS)
        else:
            long = token_nll(model, x)
            want = (long - self_scored_short_nll(model, x, long, 8, 5, bos_token_id=BOS)).abs()
        assert counts[r] == len(ids) - 1
        assert sums[r] == pytest.approx(float(want.double().sum()), abs=1e-9)
    assert sums[0] > 0  # a row longer than the window: long context changes some prediction


def test_shards_are_kept_and_reused_and_other_settings_start_over(tmp_path):
    calls = []

    def compute(a, b):
        calls.append((a, b))
        return np.arange(a, b, dtype=float), np.ones(b - a)

    work = tmp_path / ".out.select"
    s1, c1 = scored_rows(work, {"x": 1}, 7, 3, compute)
    assert calls == [(0, 3), (3, 6), (6, 7)] and s1.tolist() == list(range(7)) and c1.tolist() == [1.0] * 7
    (work / "scores-00001.npy").unlink()  # as if killed before this shard was written
    calls.clear()
    s2, _ = scored_rows(work, {"x": 1}, 7, 3, compute)
    assert calls == [(3, 6)] and s2.tolist() == s1.tolist()
    calls.clear()
    scored_rows(work, {"x": 2}, 7, 3, compute)
    assert calls == [(0, 3), (3, 6), (6, 7)]


def test_long_episodes_and_the_summary_of_a_selection():
    episodes = [[[1, 3, 20, 22], [2, 4, 5, 7]], [], [[0, 2, 8, 10]]]
    assert long_episodes(episodes, 8).tolist() == [1, 0, 1]  # use at least w = 8 tokens after the definition
    sums, counts = np.array([6.0, 1.0, 4.0]), np.array([3.0, 1.0, 2.0])
    kept, records = rank([0, 1, 2], sums, counts, keep=0.5, unit="row", long_episodes=long_episodes(episodes, 8))
    assert kept == [0, 2] and [u["long_episodes"] for u in records] == [1, 1, 0]
    selected = {"method": "longfilter", "keep": 0.5, "unit": "row", "window": 8}
    s = summary({"selected": selected, "units": records}, top=2)
    assert s["kept"] == {"units": 2, "targets": 5, "mean_score": 2.0, "long_episodes_per_1k": 400.0}
    assert s["dropped"] == {"units": 1, "targets": 1, "mean_score": 1.0, "long_episodes_per_1k": 0.0}
    assert [u["unit"] for u in s["top"]] == [0, 2] and s["method"] == "longfilter"
