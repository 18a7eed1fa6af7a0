"""Likelihood scores and greedy generation against brute-force per-sample forward passes."""

from __future__ import annotations

import pytest
import torch

from tokenweight.evaluate.tasks import Sample, generate_predictions, generate_samples, score_likelihood


@pytest.fixture(scope="module")
def task_samples(tokenizer):
    return (
        generate_samples("niah_single_1", tokenizer, 328, 2, 0)  # RULER's lengths: prompt + budget (128)
        + generate_samples("niah_multivalue", tokenizer, 388, 1, 0)
        + generate_samples("vt", tokenizer, 270, 1, 0)  # its answer prefix ends with a space
        + generate_samples("fwe", tokenizer, 280, 1, 0)
        + generate_samples("niah_multikey_3", tokenizer, 408, 1, 0)
    )


@torch.no_grad()
def _logprobs(model, ids: list[int]) -> torch.Tensor:
    """[len(ids), V] log-probabilities of one unpadded sequence (row t predicts token t + 1)."""
    return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)


def _brute(model, tokenizer, s: Sample) -> dict:
    ctx = tokenizer(s.prompt)["input_ids"]
    sep = "" if s.prompt.endswith(" ") else " "  # RULER's vt prefix ends with a space
    per = {}
    for c in s.candidates or s.outputs:
        whole = tokenizer(s.prompt + sep + c)["input_ids"]
        cont = (
            whole[len(ctx) :] if whole[: len(ctx)] == ctx else tokenizer(sep + c, add_special_tokens=False)["input_ids"]
        )
        assert not sep or cont == tokenizer(" " + c, add_special_tokens=False)["input_ids"]
        lp = _logprobs(model, ctx + cont)
        rows = lp[len(ctx) - 1 : len(ctx) - 1 + len(cont)]
        tgt = torch.tensor(cont)
        tok_lp = rows.gather(1, tgt[:, None])[:, 0]
        per[c] = {
            "acc": (rows.argmax(-1) == tgt).double().mean().item(),
            "mean": tok_lp.double().mean().item(),
            "total": tok_lp.double().sum().item(),
        }
    distract = [c for c in (s.candidates or []) if c not in s.outputs]
    ranks = [1 + sum(per[d]["total"] > per[o]["total"] for d in distract) for o in s.outputs]
    return {
        "token_accuracy": sum(per[o]["acc"] for o in s.outputs) / len(s.outputs),
        "mean_logprob": sum(per[o]["mean"] for o in s.outputs) / len(s.outputs),
        "ranks": ranks,
        "rank": max(ranks) if distract else None,
    }


def _crafted(model, tokenizer, samples) -> list[Sample]:
    """Samples whose gold answer starts with the model's own argmax word (so accuracy is > 0)."""
    out = []
    for s in samples:
        ctx = tokenizer(s.prompt)["input_ids"]
        first = int(_logprobs(model, ctx)[-1].argmax())
        piece = tokenizer.convert_ids_to_tokens(first)
        word = tokenizer.decode([first])
        if piece.startswith("Ġ") and word[1:].isprintable() and word[1:].strip() == word[1:] and word[1:]:
            gold = word[1:] + "qz"
            out.append(Sample(s.task, s.input, [gold], s.length, None, [gold, "9876543", "tree"], {}, s.answer_prefix))
    return out


def test_likelihood_matches_brute_force(tiny_model, tokenizer, task_samples):
    crafted = _crafted(tiny_model, tokenizer, task_samples)
    assert crafted, "no sample's argmax starts a word: pick other seeds"
    samples = task_samples + crafted
    got = score_likelihood(tiny_model, tokenizer, samples, batch_size=3)
    assert len(got) == len(samples)
    for s, g in zip(samples, got):
        ref = _brute(tiny_model, tokenizer, s)
        assert g["token_accuracy"] == pytest.approx(ref["token_accuracy"], abs=1e-12)
        assert g["mean_logprob"] == pytest.approx(ref["mean_logprob"], abs=2e-5)
        assert [o["rank"] for o in g["outputs"]] == ref["ranks"]
        assert g["rank"] == ref["rank"]
        assert g["num_candidates"] == len(s.candidates) - len(s.outputs) + 1
        assert [o["output"] for o in g["outputs"]] == s.outputs
    assert any(g["token_accuracy"] > 0 for g in got[len(task_samples) :])


def test_likelihood_batched_equals_unbatched(tiny_model, tokenizer, task_samples):
    a = score_likelihood(tiny_model, tokenizer, task_samples, batch_size=1)
    b = score_likelihood(tiny_model, tokenizer, task_samples, batch_size=4)
    for x, y in zip(a, b):
        assert x["token_accuracy"] == y["token_accuracy"] and x["rank"] == y["rank"]
        assert x["mean_logprob"] == pytest.approx(y["mean_logprob"], abs=2e-5)
        for ox, oy in zip(x["outputs"], y["outputs"]):
            assert ox["rank"] == oy["rank"] and ox["tokens"] == oy["tokens"]
            assert ox["logprob"] == pytest.approx(oy["logprob"], abs=1e-4)


def test_likelihood_restores_mode_and_checks_arguments(tiny_model, tokenizer, task_samples):
    tiny_model.train()
    try:
        score_likelihood(tiny_model, tokenizer, task_samples[:1], batch_size=2)
        assert tiny_model.training
    finally:
        tiny_model.eval()
    score_likelihood(tiny_model, tokenizer, task_samples[:1])
    assert not tiny_model.training
    with pytest.raises(ValueError, match="batch_size=0"):
        score_likelihood(tiny_model, tokenizer, task_samples, batch_size=0)
    no_cand = Sample("niah_single_1", task_samples[0].input, ["1234567"], 1, None, None, {})
    (r,) = score_likelihood(tiny_model, tokenizer, [no_cand])
    assert r["rank"] is None and r["num_candidates"] == 1


@torch.no_grad()
def _greedy(model, tokenizer, s: Sample, steps: int) -> str:
    ids = tokenizer(s.prompt)["input_ids"]
    new = []
    for _ in range(steps):
        nxt = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
        if nxt == tokenizer.eos_token_id:
            break
        new.append(nxt)
    return tokenizer.decode(new, skip_special_tokens=True)


def test_generation_matches_brute_force_greedy(tiny_model, tokenizer, task_samples):
    ref = [_greedy(tiny_model, tokenizer, s, 6) for s in task_samples]
    assert generate_predictions(tiny_model, tokenizer, task_samples, 6, 3) == ref
    assert generate_predictions(tiny_model, tokenizer, task_samples, 6, 1) == ref


def test_generation_budget_per_task(tiny_model, tokenizer, task_samples):
    vt, fwe = task_samples[3], task_samples[4]
    assert (vt.tokens_to_generate, fwe.tokens_to_generate) == (30, 50)
    mixed = generate_predictions(tiny_model, tokenizer, [fwe, vt], None, 2)  # each sample's reserved budget
    assert mixed[1] == generate_predictions(tiny_model, tokenizer, [vt], 30, 1)[0]
    assert mixed[0] == generate_predictions(tiny_model, tokenizer, [fwe], 50, 1)[0]
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        generate_predictions(tiny_model, tokenizer, [vt], 0, 1)
