"""Episode recall: teacher-forced scores equal a brute-force full-logits computation."""

import pytest
import torch

from tests.tiny_models import tiny_llama
from tokenweight.evaluate.episodes import EpisodeRecall, score_episodes


def tiny_model(seed=0, vocab=40):
    return tiny_llama(vocab, seed, num_attention_heads=2)


def handcrafted_batch():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(4, 40, (3, 24), generator=g)
    episodes = [[[2, 5, 10, 13], [6, 8, 20, 22]], [], [[1, 4, 7, 10]]]
    lengths = [24, 24, 15]
    for r, eps in enumerate(episodes):
        for ds, de, us, ue in eps:
            ids[r, us:ue] = ids[r, ds:de]
    mask = torch.zeros(3, 24, dtype=torch.long)
    for r, L in enumerate(lengths):
        mask[r, :L] = 1
    return ids * mask, mask, episodes, lengths


def brute_force(model, ids, episodes, lengths):
    out = []
    with torch.no_grad():
        for r, eps in enumerate(episodes):
            logits = model(ids[r : r + 1, : lengths[r]]).logits[0].double()
            logp = torch.log_softmax(logits, -1)
            for ds, _de, us, ue in eps:
                correct, lp = 0, 0.0
                for t in range(us, ue):
                    correct += int(int(logits[t - 1].argmax()) == int(ids[r, t]))
                    lp += float(logp[t - 1, ids[r, t]])
                out.append(
                    {
                        "row": r,
                        "distance": us - ds,
                        "tokens": ue - us,
                        "correct": correct,
                        "exact": correct == ue - us,
                        "logprob": lp,
                    }
                )
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_score_episodes_matches_brute_force(seed):
    model = tiny_model(seed)
    ids, mask, episodes, lengths = handcrafted_batch()
    got = score_episodes(model, ids, episodes, mask)
    want = brute_force(model, ids, episodes, lengths)
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
        assert {k: g[k] for k in ("row", "distance", "tokens", "correct", "exact")} == {
            k: w[k] for k in ("row", "distance", "tokens", "correct", "exact")
        }
        assert g["logprob"] == pytest.approx(w["logprob"], abs=1e-4)


def test_argmax_hits_counted_exactly():
    """A head biased to always predict token 7: value tokens equal to 7 are hits, others misses."""
    model = tiny_model()
    ids, mask, episodes, lengths = handcrafted_batch()
    ids[0, 2:5] = ids[0, 10:13] = torch.tensor([7, 7, 7])  # episode 1: all hits -> exact
    ids[0, 6:8] = ids[0, 20:22] = torch.tensor([7, 9])  # episode 2: one hit of two
    ids[2, 1:4] = ids[2, 7:10] = torch.tensor([9, 9, 9])  # episode 3: no hit
    with torch.no_grad():
        model.lm_head.bias = torch.nn.Parameter(torch.zeros(40))
        model.lm_head.bias[7] = 1e4
    got = score_episodes(model, ids, episodes, mask)
    assert [(g["correct"], g["exact"]) for g in got] == [(3, True), (1, False), (0, False)]
    want = brute_force(model, ids, episodes, lengths)
    assert [g["correct"] for g in want] == [3, 1, 0]


def test_invalid_episodes():
    model = tiny_model()
    ids, mask, episodes, _ = handcrafted_batch()
    with pytest.raises(ValueError, match="does not repeat"):
        score_episodes(model, ids, [[[2, 5, 11, 14]], [], []], mask)
    with pytest.raises(ValueError, match="invalid for a sequence of length 15"):
        score_episodes(model, ids, [[], [], [[1, 4, 13, 16]]], mask)
    with pytest.raises(ValueError, match="one list per row"):
        score_episodes(model, ids, [[]], mask)
    assert score_episodes(model, ids, [[], [], []], mask) == []


def test_episode_recall_aggregation_by_hand():
    acc = EpisodeRecall([0, 10, 20])
    acc.update(
        [
            {"row": 0, "distance": 3, "tokens": 4, "correct": 4, "exact": True, "logprob": -1.0},
            {"row": 0, "distance": 9, "tokens": 2, "correct": 1, "exact": False, "logprob": -3.0},
            {"row": 1, "distance": 15, "tokens": 3, "correct": 0, "exact": False, "logprob": -6.0},
        ]
    )
    acc.update([{"row": 0, "distance": 25, "tokens": 1, "correct": 1, "exact": True, "logprob": -0.5}])
    res = acc.result()
    assert res["overall"] == {
        "episodes": 4,
        "tokens": 10,
        "token_accuracy": 0.6,
        "exact_match": 0.5,
        "mean_logprob": pytest.approx(-1.05),
    }
    assert res["by_distance"][0] == {
        "start": 0,
        "end": 10,
        "episodes": 2,
        "tokens": 6,
        "token_accuracy": pytest.approx(5 / 6),
        "exact_match": 0.5,
        "mean_logprob": pytest.approx(-4 / 6),
    }
    assert res["by_distance"][1] == {
        "start": 10,
        "end": 20,
        "episodes": 1,
        "tokens": 3,
        "token_accuracy": 0.0,
        "exact_match": 0.0,
        "mean_logprob": -2.0,
    }
