"""The token-weighting component against brute force: NLL and weights of every source against the
scoring functions and the scheme; packed documents given as doc_lengths or as restarting
position_ids; tie-breaking that depends on a sequence's tokens only; an MoE's router loss on packed
rows; bad batches refused in one line."""

from __future__ import annotations

import pytest
import torch

from tests.train.train_helpers import BOS, sequences, tiny_model
from tokenweight import FrozenScorer, PadCollator, SelfScorer, TokenWeighting, scored_tokens
from tokenweight.scoring import short_context_nll, token_nll
from tokenweight.token_weighting import TokenBatch, tie_keys
from tokenweight.weighting import WeightingScheme

N, W = 40, 12
ROWS = sequences(5, N, seed=11, short_every=2)


def batch(rows, **extra):
    return PadCollator(0)([{"input_ids": r, **extra} for r in rows])


@pytest.mark.parametrize(
    "spec", ["uniform", "dense:0.75", "sparse:0.3", "longce:5", "custom:transforms=neg,norm=softmax"]
)
def test_frozen_weights_and_loss_equal_brute_force(spec):
    model, scorer = tiny_model(n=N, seed=0), tiny_model(n=N, seed=5)
    b = batch(ROWS)
    b["labels"][1, :7] = -100  # a prompt
    out = TokenWeighting(spec, FrozenScorer(scorer, W, stride=8, bos_token_id=BOS), seed=3)(model, b)
    mask = b["labels"][:, 1:] != -100
    long = token_nll(model, b["input_ids"], b["attention_mask"])
    short = short_context_nll(scorer, b["input_ids"], W, 8, attention_mask=b["attention_mask"], bos_token_id=BOS)
    scheme = WeightingScheme.parse(spec)
    want = scheme(long, short, mask, keys=tie_keys(TokenBatch.of(b), 3)) if scheme.needs_short else mask.float()
    torch.testing.assert_close(out.nll, torch.where(mask, long, 0.0), atol=1e-5, rtol=0)
    got = out.weights if out.weights is not None else mask.float()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert out.count.item() == mask.sum().item() == scored_tokens(b).item()
    brute = sum(want[r, j] * long[r, j] for r, j in mask.nonzero().tolist())
    assert out.loss_sum.item() == pytest.approx(brute.item(), rel=1e-5)
    assert out.loss().item() == pytest.approx(brute.item() / mask.sum().item(), rel=1e-5)


def test_a_sequence_gets_the_same_sparse_weights_in_any_batch():
    """Tie-breaking keys come from each sequence's own tokens and the seed: self-scoring makes the
    first w-1 targets of every row tie at |d| = 0, and the same row alone, in another batch or
    padded to another length keeps exactly the same weights."""
    model = tiny_model(n=N, seed=0)
    tw = TokenWeighting("sparse:0.6", SelfScorer(W, 8, bos_token_id=BOS), seed=1)
    together = tw(model, batch(ROWS)).weights
    for r in (0, 3):
        alone = tw(model, batch([ROWS[r]])).weights[0]
        other = tw(model, batch([ROWS[4], ROWS[r]])).weights[1]
        t = len(ROWS[r]) - 1
        assert torch.equal(alone[:t], together[r, :t]) and torch.equal(other[:t], together[r, :t])
    assert not torch.equal(tie_keys(TokenBatch.of(batch(ROWS)), 1), tie_keys(TokenBatch.of(batch(ROWS)), 2))


def test_position_ids_flattening_equals_doc_lengths_and_separate_rows():
    """One padding-free row (positions restarting per example, HF's DataCollatorWithFlattening)
    = the same documents as doc_lengths = the examples as separate rows (weight_norm None: per
    example for the flattened batch)."""
    model, scorer = tiny_model(n=3 * N, seed=0), tiny_model(n=3 * N, seed=5)
    docs = ROWS[:3]
    flat = torch.tensor([[t for d in docs for t in d]])
    positions = torch.cat([torch.arange(len(d)) for d in docs])[None]
    labels = flat.clone()
    starts = torch.tensor([0, len(docs[0]), len(docs[0]) + len(docs[1])])
    labels[0, starts] = -100
    tw = TokenWeighting("sparse:0.4", FrozenScorer(scorer, W, stride=8))
    by_pos = tw(model, {"input_ids": flat, "labels": labels, "position_ids": positions})
    by_docs = TokenWeighting("sparse:0.4", FrozenScorer(scorer, W, stride=8), weight_norm="document")(
        model, {"input_ids": flat, "labels": labels, "doc_lengths": [[len(d) for d in docs]]}
    )
    alone = tw(model, batch(docs))
    assert torch.equal(by_pos.weights, by_docs.weights)
    assert by_pos.loss_sum.item() == pytest.approx(alone.loss_sum.item(), rel=1e-5)
    for k, d in enumerate(docs):
        span = slice(int(starts[k]), int(starts[k]) + len(d) - 1)
        torch.testing.assert_close(by_pos.nll[0, span], alone.nll[k, : len(d) - 1], atol=1e-5, rtol=0)
        torch.testing.assert_close(by_pos.weights[0, span], alone.weights[k, : len(d) - 1], atol=1e-5, rtol=0)


def test_moe_router_loss_on_packed_rows_is_the_models_own():
    from tests.tiny_models import tiny_mixtral

    model = tiny_mixtral(64, 0, router_aux_loss_coef=0.25)
    docs = ROWS[:3]
    ids = torch.tensor([[t for d in docs for t in d]])
    lengths = [[len(d) for d in docs]]
    positions = torch.cat([torch.arange(len(d)) for d in docs])[None]
    labels = ids.clone()
    labels[0, torch.tensor([0, len(docs[0]), len(docs[0]) + len(docs[1])])] = -100
    out = TokenWeighting("uniform")(model, {"input_ids": ids, "labels": labels, "doc_lengths": lengths})
    own = model(input_ids=ids, position_ids=positions, labels=labels, use_cache=False)  # its packed-sequence path
    assert out.loss().item() == pytest.approx(own.loss.item(), rel=1e-5)
    assert out.aux_loss.item() == pytest.approx(0.25 * own.aux_loss.item(), rel=1e-6)


@pytest.mark.parametrize(
    "bad,match",
    [
        ([[1, 2, 3]], "batch must be a mapping with an 'input_ids' tensor"),
        ({"input_ids": [[1, 2, 3]]}, r"batch\['input_ids'\] must be an integer tensor \[b, n\], got list"),
        ({"input_ids": "1 2 3"}, r"batch\['input_ids'\] must be an integer tensor \[b, n\], got str"),
        ({"input_ids": torch.ones(2, 5)}, "must be an integer tensor .* dtype torch.float32"),
        ({"input_ids": torch.ones(2, 5, dtype=torch.long), "labels": torch.ones(2, 4, dtype=torch.long)}, "pad them"),
        ({"text": ["a"]}, r"got \['text'\]"),
        ({"input_ids": torch.ones(2, 5, dtype=torch.long), "short_nll": torch.ones(2, 4)}, "token-aligned"),
    ],
)
def test_bad_batches_are_one_line_value_errors(bad, match):
    tw = TokenWeighting("dense:0.5")
    with pytest.raises(ValueError, match=match) as err:
        tw(tiny_model(n=N), bad)
    assert "\n" not in str(err.value)


def test_bad_arguments_and_a_missing_source():
    with pytest.raises(ValueError, match="short must be None"):
        TokenWeighting("dense:0.5", short="frozen")
    with pytest.raises(ValueError, match="weight_norm must be None or one of sequence, document"):
        TokenWeighting(weight_norm="row")
    with pytest.raises(ValueError, match="invalid weighting spec"):
        TokenWeighting("dense")
    with pytest.raises(ValueError, match="scorer must be a transformers causal LM"):
        FrozenScorer("path/to/model", 8)
    with pytest.raises(ValueError, match="needs short-context NLL: pass short=SelfScorer"):
        TokenWeighting("dense:0.5")(tiny_model(n=N), batch(ROWS[:2]))
    with pytest.raises(ValueError, match="stride must be an integer in"):
        SelfScorer(8, stride=8)
