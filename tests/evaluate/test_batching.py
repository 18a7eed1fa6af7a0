"""Batching by tokens: the groups themselves, and evaluation results that do not depend on it.

Every evaluation pass (held-out perplexity and episodes, likelihood and generation tasks) gives the
same numbers (to 1e-6) with any ``batch_tokens`` as with today's ``batch_size`` path
(``batch_tokens=None``), and as a brute-force full-logits computation one sample at a time, for a
plain Llama and for a Gemma-2 (soft-capped logits: the replaced output layer applies the model's
post-processing). Tiny local models, ~8 s on 2 CPU cores.
"""

from __future__ import annotations

import pytest
import torch

from tests.evaluate.test_runner import make_model, make_prepared, make_tokenizer
from tokenweight.evaluate.batching import token_groups
from tokenweight.evaluate.episodes import score_episodes
from tokenweight.evaluate.runner import evaluate_models
from tokenweight.evaluate.tasks import Sample, generate_predictions, score_likelihood
from tokenweight.stages.evaluate import EvalConfig


def test_token_groups():
    assert token_groups([5, 5, 5, 5, 5], 2) == [[0, 1], [2, 3], [4]]  # today's batch_size path
    assert token_groups([5, 5, 5, 5, 5], 4, 10) == [[0, 1], [2, 3], [4]]
    assert token_groups([9, 3, 3, 3], 4, 9) == [[0], [1, 2, 3]]  # 3 rows x 3 tokens fit in 9
    assert token_groups([3, 9, 3], 4, 12) == [[0], [1], [2]]  # [3, 9] would be 2 x 9 = 18 > 12
    assert token_groups([20, 4], 4, 8) == [[0], [1]]  # a row longer than batch_tokens runs alone
    assert token_groups([], 3, 8) == []
    with pytest.raises(ValueError, match="batch_tokens must be an integer >= 1 or None"):
        token_groups([1], 1, 0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        token_groups([1], 0)


def _gemma2(vocab: int, seed: int):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(seed)
    cfg = Gemma2Config(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=256,
        sliding_window=256,
        final_logit_softcapping=3.0,  # small cap: tiny random logits are really changed by it
    )
    cfg._attn_implementation = "eager"
    return Gemma2ForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batching")
    tok = make_tokenizer(tmp / "tok")
    make_model(tmp / "a", len(tok), 0)
    rows = make_prepared(tmp / "data", tok, n=48, num=5)
    return tmp, tok, rows


def _close(a, b, path=""):
    """Equal JSON values, floats to 1e-6 (relative)."""
    if isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_held_out_metrics_do_not_depend_on_batching(setup):
    tmp, tok, rows = setup
    models = {"A": str(tmp / "a"), "G": _gemma2(len(tok), 1)}

    def run(batch_size, batch_tokens):
        cfg = EvalConfig(tasks=[], window=16, batch_size=batch_size, batch_tokens=batch_tokens, max_sequences=None)
        res = evaluate_models(models, data_dir=tmp / "data", config=cfg)
        return [{k: m[k] for k in ("perplexity", "longppl", "episodes")} for m in res["models"]]

    today = run(2, None)
    assert today[0]["episodes"]["overall"]["episodes"] == 8
    assert today[1]["perplexity"]["overall"]["tokens"] == 4 * 47 + 40
    for batch_size, batch_tokens in [(4, 48), (4, 100), (5, 1000), (1, None)]:  # 1 row, 2 rows, 5 rows, 1 row
        _close(run(batch_size, batch_tokens), today)


def _brute_episodes(model, ids, episodes, lengths):
    """Full logits one row at a time, in float64."""
    out = []
    with torch.no_grad():
        for r, eps in enumerate(episodes):
            logp = torch.log_softmax(model(ids[r : r + 1, : lengths[r]]).logits[0].double(), -1)
            for _, _, us, ue in eps:
                t = ids[r, us:ue]
                lp = logp[us - 1 : ue - 1]
                out.append((int((lp.argmax(-1) == t).sum()), float(lp.gather(1, t[:, None]).sum())))
    return out


def test_episodes_of_a_soft_capped_model_match_full_logits(setup):
    _, tok, rows = setup
    model = _gemma2(len(tok), 2)
    ids = torch.zeros(5, 48, dtype=torch.long)
    mask = torch.zeros(5, 48, dtype=torch.long)
    for i, r in enumerate(rows["input_ids"]):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    got = score_episodes(model, ids, rows["episodes"], mask)
    want = _brute_episodes(model, ids, rows["episodes"], [len(r) for r in rows["input_ids"]])
    assert [(g["correct"], round(g["logprob"], 4)) for g in got] == [(c, round(lp, 4)) for c, lp in want]


def _samples(tok) -> list[Sample]:
    g = torch.Generator().manual_seed(5)
    words = ["alpha", "beta", "gamma", "delta", "needle", "value", "magic", "number", "is", "the"]
    out = []
    for k, n in enumerate([6, 30, 12, 45, 3, 20]):
        prompt = " ".join(words[int(i)] for i in torch.randint(0, len(words), (n,), generator=g))
        golds = [str(1000 + 37 * k)] if k % 2 else [str(10 + k), "gamma beta"]
        cands = golds + [str(2000 + k), "delta", "the magic"]
        out.append(Sample("niah_single_1", prompt, golds, n, None, cands, {}))
    return out


def _brute_likelihood(model, tok, s: Sample) -> list[float]:
    """Total log p of every candidate, one unpadded full-logits pass each (float64)."""
    ctx = tok(s.prompt)["input_ids"]
    totals = []
    with torch.no_grad():
        for c in s.candidates:
            whole = tok(s.prompt + " " + c)["input_ids"]
            alone = tok(" " + c, add_special_tokens=False)["input_ids"]
            cont = whole[len(ctx) :] if whole[: len(ctx)] == ctx else alone
            logp = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0].double(), -1)
            rows = logp[len(ctx) - 1 : len(ctx) - 1 + len(cont)]
            totals.append(float(rows.gather(1, torch.tensor(cont)[:, None]).sum()))
    return totals


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_task_scores_do_not_depend_on_batching(setup, family):
    tmp, tok, _ = setup
    model = make_model(tmp / f"t-{family}", len(tok), 3) if family == "llama" else _gemma2(len(tok), 3)
    samples = _samples(tok)
    today = score_likelihood(model, tok, samples, batch_size=4)
    for s, got in zip(samples, today):  # against full logits, one sample at a time
        totals = _brute_likelihood(model, tok, s)
        assert [o["logprob"] for o in got["outputs"]] == pytest.approx(totals[: len(s.outputs)], abs=1e-4)
    preds = generate_predictions(model, tok, samples, max_new_tokens=4, batch_size=4)
    for batch_size, batch_tokens in [(4, 1), (4, 40), (8, 200), (1, None)]:
        _close(score_likelihood(model, tok, samples, batch_size=batch_size, batch_tokens=batch_tokens), today)
        assert generate_predictions(model, tok, samples, 4, batch_size, batch_tokens) == preds
