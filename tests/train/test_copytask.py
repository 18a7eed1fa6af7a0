"""CopyTask: exact rows against a brute-force reference, labels only on the repeat, seeded per index."""

from __future__ import annotations

import pytest
import torch

from tests.scorecache.test_scorecache import make_tokenizer  # noqa: E402
from tokenweight.train.collate import IGNORE_INDEX, PadCollator  # noqa: E402
from tokenweight.train.copytask import CopyTask, WithCopyRows  # noqa: E402


def labelled_runs(labels):
    """Maximal runs [p, q) of labelled positions."""
    runs, p = [], None
    for t, y in enumerate(labels + [IGNORE_INDEX]):
        if y != IGNORE_INDEX and p is None:
            p = t
        elif y == IGNORE_INDEX and p is not None:
            runs.append((p, t))
            p = None
    return runs


def occurs_before(ids, p, q):
    """Brute force: ids[p:q] is a contiguous substring of ids[:p]."""
    seg = ids[p:q]
    return any(ids[s : s + len(seg)] == seg for s in range(0, p - len(seg) + 1))


@pytest.mark.parametrize("length,bos", [(256, 0), (57, 0), (8, None), (4, 0)])
def test_rows_are_labelled_repeats_of_earlier_content(length, bos):
    special = {0, 1, 5}
    ds = CopyTask(6, length, 300, special_ids=special, bos_token_id=bos, seed=3)
    assert len(ds) == 6 and ds.num_tokens == 6 * length
    offsets = set()
    for i in range(6):
        ex = ds[i]
        ids, labels = ex["input_ids"].tolist(), ex["labels"].tolist()
        assert len(ids) == len(labels) == length and set(ex) == {"input_ids", "labels"}
        assert (ids[0] == bos) if bos is not None else True
        assert not set(ids[1 if bos is not None else 0 :]) & special
        runs = labelled_runs(labels)
        assert runs and all(labels[t] == ids[t] for p, q in runs for t in range(p, q))
        assert all(occurs_before(ids, p, q) for p, q in runs)  # every labelled token is a copy
        if length >= 57:  # first repeat: x starts after BOS, the copy after x and the filler
            p, q = runs[0]
            offsets.add(p - 1)
            assert ids[1 : 1 + q - p] == ids[p:q]
    assert len(offsets) > 1 or length < 57  # the copy distance varies from row to row


def test_seeded_per_example_and_different_across_examples():
    a, b = CopyTask(4, 33, 500, seed=1), CopyTask(4, 33, 500, seed=1)
    assert all(torch.equal(a[i]["labels"], b[i]["labels"]) for i in range(4))
    assert all(torch.equal(a[i]["input_ids"], b[i]["input_ids"]) for i in range(4))
    assert not torch.equal(a[0]["input_ids"], a[1]["input_ids"])
    assert not torch.equal(a[0]["input_ids"], CopyTask(4, 33, 500, seed=2)[0]["input_ids"])


def test_collator_keeps_example_labels():
    ds = CopyTask(2, 9, 50, special_ids=[0], bos_token_id=0)
    out = PadCollator(0)([ds[0], {"input_ids": [0, 7, 8]}])
    assert out["labels"][0].tolist() == ds[0]["labels"].tolist()
    assert out["labels"][1].tolist() == [0, 7, 8] + [IGNORE_INDEX] * 6


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_rows=0, length=9, vocab_size=10), "num_rows"),
        (dict(num_rows=1, length=3, vocab_size=10, bos_token_id=0), "length"),
        (dict(num_rows=1, length=9, vocab_size=3, special_ids=[0, 1]), "non-special"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CopyTask(**kwargs)
    with pytest.raises(IndexError):
        CopyTask(2, 9, 10)[2]


def test_with_copy_rows_replaces_an_even_share():
    base = [{"input_ids": torch.tensor([0, 40 + i])} for i in range(10)]
    copy = CopyTask(10, 9, 30, special_ids=[0], bos_token_id=0)
    mixed = WithCopyRows(base, copy, 0.3)
    kinds = [mixed.is_copy(i) for i in range(10)]
    assert kinds == [False, False, False, True, False, False, True, False, False, True]  # floor((i+1)0.3) steps
    for i in range(10):
        ex = mixed[i]
        expect = copy[i]["input_ids"] if kinds[i] else base[i]["input_ids"]
        assert torch.equal(ex["input_ids"], expect) and (("labels" in ex) == kinds[i])
    assert not any(WithCopyRows(base, copy, 0.0).is_copy(i) for i in range(10))
    with pytest.raises(ValueError, match="fraction"):
        WithCopyRows(base, copy, 1.5)
    with pytest.raises(ValueError, match="fewer"):
        WithCopyRows(base, CopyTask(3, 9, 30), 0.5)


@pytest.mark.slow
def test_demo_recipe_forms_an_induction_head(tmp_path):
    """The demo's warm-up (shallow preset, 64-token rows, 32 per step, lr 3e-3, 700 steps) learns to copy.

    This is the fact the demo's copy gate rests on (docs/TRAINING.md): the 2-layer model leaves the
    loss plateau after ~550 steps. Measured on held-out rows of another seed, so a memorised
    training set cannot pass; chance accuracy is 1/4092.
    """
    from tokenweight.models import init_model
    from tokenweight.stages.pretrain import PretrainConfig
    from tokenweight.train.runner import run_training

    vocab, steps, batch = 4096, 700, 32
    tok = make_tokenizer(tmp_path / "tok", size=vocab)  # run_training needs a tokenizer (padding id)
    special, bos = tok.all_special_ids, tok.bos_token_id
    model = init_model("shallow", vocab, 256, bos_token_id=bos)
    train = CopyTask(steps * batch, 64, vocab, special_ids=special, bos_token_id=bos, seed=0)
    recipe = PretrainConfig(
        max_steps=steps,
        batch_size=batch,
        lr=3e-3,
        lr_scheduler="constant_with_warmup",
        warmup_steps=28,
        save_steps=steps,
        logging_steps=50,
    )
    run_training(model=model, tokenizer=tok, train_dataset=train, config=recipe, out_dir=tmp_path / "run")
    held_out = CopyTask(64, 64, vocab, special_ids=special, bos_token_id=bos, seed=12345)
    ids = torch.stack([held_out[i]["input_ids"] for i in range(64)])
    labels = torch.stack([held_out[i]["labels"] for i in range(64)])
    with torch.no_grad():
        pred = model.eval()(input_ids=ids).logits[:, :-1].argmax(-1)
    target = labels[:, 1:]
    scored = target != IGNORE_INDEX
    first = torch.zeros_like(scored)  # the first token of a repeat cannot be predicted (after random filler)
    first[:, 1:] = scored[:, 1:] & ~scored[:, :-1]
    first[:, 0] = scored[:, 0]
    keep = scored & ~first
    accuracy = (pred[keep] == target[keep]).float().mean().item()
    assert accuracy > 0.5, accuracy
