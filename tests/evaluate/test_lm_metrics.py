"""Perplexity by position: PositionPerplexity over token_nll equals a brute-force loop."""

import math

import pytest
import torch

from tests.tiny_models import tiny_llama
from tokenweight.evaluate.lm_metrics import PositionPerplexity, check_edges, default_edges
from tokenweight.scoring import token_nll


def tiny_model(seed=0, vocab=53):
    return tiny_llama(vocab, seed, num_attention_heads=2)


def test_default_edges():
    assert default_edges(20, 8) == [0, 8, 16, 20]
    assert default_edges(16, 8) == [0, 8, 16]
    assert default_edges(5, 8) == [0, 5]
    with pytest.raises(ValueError, match="window"):
        default_edges(16, 0)
    with pytest.raises(ValueError, match="strictly increasing"):
        check_edges([0, 4, 4])
    with pytest.raises(ValueError, match="at least 2"):
        check_edges([3])


def test_position_perplexity_matches_brute_force():
    model = tiny_model()
    g = torch.Generator().manual_seed(1)
    n, w = 20, 6
    edges = [0, 6, 12, 18]  # positions 18, 19 fall beyond the last edge: overall only
    lengths = [20, 13, 20, 2, 9]
    ids = torch.randint(0, 53, (len(lengths), n), generator=g)
    mask = torch.zeros(len(lengths), n, dtype=torch.long)
    for r, L in enumerate(lengths):
        mask[r, :L] = 1
    ids = ids * mask  # padding id 0

    acc = PositionPerplexity(edges, window=w)
    for lo, hi in ((0, 2), (2, 5)):  # two batches
        nll = token_nll(model, ids[lo:hi], mask[lo:hi])
        acc.update(nll, mask[lo:hi, 1:].bool())
    res = acc.result()

    # brute force: one sequence at a time, unpadded, full logits, a Python loop over positions
    sums = {"all": [0.0, 0], "short": [0.0, 0], **{i: [0.0, 0] for i in range(3)}}
    with torch.no_grad():
        for r, L in enumerate(lengths):
            logp = torch.log_softmax(model(ids[r : r + 1, :L]).logits[0].double(), -1)
            for t in range(1, L):
                x = -float(logp[t - 1, ids[r, t]])
                keys = ["all"] + (["short"] if t < w else [])
                keys += [i for i in range(3) if edges[i] <= t < edges[i + 1]]
                for k in keys:
                    sums[k][0] += x
                    sums[k][1] += 1
    assert res["overall"]["tokens"] == sum(L - 1 for L in lengths) == sums["all"][1]
    assert res["overall"]["ppl"] == pytest.approx(math.exp(sums["all"][0] / sums["all"][1]), rel=1e-5)
    assert res["short"]["tokens"] == sums["short"][1] == 5 + 5 + 5 + 1 + 5
    assert res["short"]["window"] == w
    assert res["short"]["ppl"] == pytest.approx(math.exp(sums["short"][0] / sums["short"][1]), rel=1e-5)
    assert [(b["start"], b["end"]) for b in res["by_position"]] == [(0, 6), (6, 12), (12, 18)]
    for i, b in enumerate(res["by_position"]):
        assert b["tokens"] == sums[i][1]
        assert b["nll"] == pytest.approx(sums[i][0] / sums[i][1], rel=1e-5)
        assert b["ppl"] == pytest.approx(math.exp(sums[i][0] / sums[i][1]), rel=1e-5)
    # counts by hand: bucket [0,6) has positions 1..5; [6,12) 6..11; [12,18) 12..17
    assert [b["tokens"] for b in res["by_position"]] == [5 + 5 + 5 + 1 + 5, 6 + 6 + 6 + 0 + 3, 6 + 1 + 6 + 0 + 0]


def test_empty_bucket_is_null():
    acc = PositionPerplexity([0, 4, 100], window=4)
    acc.update(torch.full((1, 5), 2.0))
    res = acc.result()
    assert res["by_position"][0] == {"start": 0, "end": 4, "ppl": pytest.approx(math.exp(2.0)), "nll": 2.0, "tokens": 3}
    assert res["by_position"][1]["tokens"] == 2
    acc = PositionPerplexity([50, 100], window=4)
    acc.update(torch.full((1, 5), 2.0))
    assert acc.result()["by_position"][0] == {"start": 50, "end": 100, "ppl": None, "nll": None, "tokens": 0}
    with pytest.raises(ValueError, match="mask shape"):
        acc.update(torch.zeros(1, 5), torch.ones(1, 4, dtype=torch.bool))
