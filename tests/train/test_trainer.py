"""WeightedTrainer: its loss against HF's plain cross-entropy, exact normalisation under gradient
accumulation, self/frozen-scorer weights against hand computation, logged statistics, NaN guard."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from tests.train.train_helpers import BOS, dataset, sequences, tiny_model
from tokenweight.scoring import short_context_nll, token_nll
from tokenweight.short_nll import SelfScorer
from tokenweight.token_weighting import NonFiniteLossError, TokenBatch, nll_output_layer, tie_keys
from tokenweight.train.callbacks import JsonlLogger
from tokenweight.train.collate import PadCollator, TrainSequences
from tokenweight.train.trainer import WeightedTrainer
from tokenweight.weighting import WeightingScheme

N, W, S = 48, 16, 12
ROWS = sequences(8, N, seed=3, short_every=1)  # 8 different lengths: counts differ per micro-batch


def targs(tmp_path, ga=1, bs=4, steps=1, **kw):
    return TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=bs,
        gradient_accumulation_steps=ga,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        report_to="none",
        remove_unused_columns=False,
        save_strategy="no",
        seed=0,
        data_seed=0,
        logging_steps=1,
        disable_tqdm=True,
        dataloader_pin_memory=False,
        **kw,
    )


class GradCapture(TrainerCallback):
    """The summed gradient of every parameter just before each optimizer step."""

    def __init__(self, model):
        self.model, self.grads = model, []

    def on_pre_optimizer_step(self, args, state, control, **kw):
        self.grads.append({k: p.grad.detach().clone() for k, p in self.model.named_parameters()})


def run_grads(tmp_path, cls=WeightedTrainer, ga=1, bs=4, collator=None, **kw):
    model = tiny_model(n=N)
    cap = GradCapture(model)
    trainer = cls(
        model=model,
        args=targs(tmp_path, ga, bs),
        train_dataset=TrainSequences(dataset(ROWS)),
        data_collator=collator or PadCollator(0),
        callbacks=[cap],
        **kw,
    )
    trainer.train()
    return cap.grads[0], trainer


def assert_grads_equal(a, b, atol=2e-7):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=atol, msg=k)


def batch(rows):
    return PadCollator(0)([{"input_ids": r} for r in rows])


def test_nll_output_layer_equals_full_logits_ce_and_restores_forward():
    model = tiny_model(n=N)
    b = batch(ROWS[:3])
    targets = b["labels"][:, 1:]
    head = model.get_output_embeddings()
    with nll_output_layer(head, targets, chunk_size=7):
        nll = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    assert "forward" not in head.__dict__
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
    ref = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none", ignore_index=-100)
    torch.testing.assert_close(nll, ref, rtol=1e-5, atol=1e-5)


def test_uniform_loss_and_grads_equal_hf_plain_ce(tmp_path):
    model = tiny_model(n=N)
    trainer = WeightedTrainer(
        model=model, args=targs(tmp_path), train_dataset=TrainSequences(dataset(ROWS)), data_collator=PadCollator(0)
    )
    b = batch(ROWS[:4])
    count = int((b["labels"][:, 1:] != -100).sum())
    loss = trainer.compute_loss(model, b, num_items_in_batch=torch.tensor(count))
    loss.backward()
    ours = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    ref = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
    ref.backward()
    assert abs(loss.item() - ref.item()) < 1e-6
    assert_grads_equal(ours, {k: p.grad for k, p in model.named_parameters()})


def test_gradient_accumulation_is_exact(tmp_path):
    """GA 2 × 2 == GA 1 × 4 (per-micro-batch token counts differ), for uniform == HF's plain CE
    and for a weighted scheme with self-scoring."""

    hf, _ = run_grads(tmp_path / "hf", cls=Trainer, ga=2, bs=2)
    uni2, _ = run_grads(tmp_path / "u2", ga=2, bs=2)
    uni1, _ = run_grads(tmp_path / "u1", ga=1, bs=4)
    assert_grads_equal(uni2, hf)
    assert_grads_equal(uni1, uni2)
    kw = dict(scheme="dense:0.5", short=SelfScorer(W, S, bos_token_id=BOS))
    d2, _ = run_grads(tmp_path / "d2", ga=2, bs=2, **kw)
    d1, _ = run_grads(tmp_path / "d1", ga=1, bs=4, **kw)
    assert_grads_equal(d1, d2)
    assert max((d1[k] - uni1[k]).abs().max().item() for k in d1) > 1e-4  # the weights matter


@pytest.mark.parametrize("spec", ["dense:0.75", "sparse:0.5", "longce:5"])
def test_self_scoring_weights_equal_hand_computation(tmp_path, spec):
    model = tiny_model(n=N)
    scheme = WeightingScheme.parse(spec)
    trainer = WeightedTrainer(
        model=model,
        args=targs(tmp_path),
        train_dataset=TrainSequences(dataset(ROWS)),
        data_collator=PadCollator(0),
        scheme=scheme,
        short=SelfScorer(W, S, bos_token_id=BOS),
    )
    b = batch(ROWS[:6])
    nll, mask, weights = trainer.forward_weights(model, b)
    long = token_nll(model, b["input_ids"], b["attention_mask"])
    short = short_context_nll(model, b["input_ids"], W, S, attention_mask=b["attention_mask"], bos_token_id=BOS)
    keys = tie_keys(TokenBatch.of(b), seed=0)  # the run's seed and each row's tokens
    ref = scheme(long, short, b["labels"][:, 1:] != -100, keys=keys)
    torch.testing.assert_close(nll.detach(), long, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weights, ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(mask, b["labels"][:, 1:] != -100)


class FakeCache:
    """Deterministic 'short NLL' rows by index, longer than the batch (as a cache of uncropped data)."""

    path = "fake"

    def read(self, indices):
        idx = torch.as_tensor(indices, dtype=torch.float32)[:, None]
        return (torch.arange(N + 7, dtype=torch.float32)[None] % 5) * 0.3 + idx * 0.1


def test_frozen_scores_come_as_the_rows_short_nll_column(tmp_path):
    model = tiny_model(n=N)
    scheme = WeightingScheme.parse("dense:0.25")
    data = TrainSequences(dataset(ROWS), scores=FakeCache())
    trainer = WeightedTrainer(
        model=model, args=targs(tmp_path), train_dataset=data, data_collator=PadCollator(0), scheme=scheme
    )
    b = PadCollator(0)([data[i] for i in (5, 0, 7, 2)])
    _, mask, weights = trainer.forward_weights(model, b)
    long = token_nll(model, b["input_ids"], b["attention_mask"])
    short = FakeCache().read([5, 0, 7, 2])[:, : long.shape[1]]
    torch.testing.assert_close(weights, scheme(long, short, mask), rtol=1e-4, atol=1e-4)


def test_logged_statistics_equal_hand_computation(tmp_path):
    model = tiny_model(n=N)
    kw = dict(scheme="dense:0.5", short=SelfScorer(W, S, bos_token_id=BOS))
    probe = WeightedTrainer(
        model=model,
        args=targs(tmp_path / "p"),
        train_dataset=TrainSequences(dataset(ROWS)),
        data_collator=PadCollator(0),
        **kw,
    )
    nll, mask, w = probe.forward_weights(model, batch(ROWS))  # the whole data set is the one batch
    nll, w = nll.detach()[mask].double(), w[mask].double()
    trainer = WeightedTrainer(
        model=model,
        args=targs(tmp_path / "t", bs=len(ROWS)),
        train_dataset=TrainSequences(dataset(ROWS)),
        data_collator=PadCollator(0),
        callbacks=[JsonlLogger(tmp_path / "log.jsonl")],
        **kw,
    )
    trainer.train()
    log = trainer.state.log_history[0]
    expect = {
        "weighted_loss": (w * nll).mean(),
        "plain_loss": nll.mean(),
        "weight_mean": w.mean(),
        "weight_std": w.std(unbiased=False),
        "weight_max": w.max(),
        "weight_zero_share": (w == 0).double().mean(),
    }
    for k, v in expect.items():
        assert log[k] == pytest.approx(v.item(), rel=1e-5, abs=1e-6), k
    assert log["loss"] == pytest.approx(log["weighted_loss"], rel=1e-5)
    assert log["scored_tokens"] == mask.sum().item()
    assert log["tokens"] == sum(len(r) for r in ROWS)
    assert log["step_time"] > 0 and log["tokens_per_s"] > 0 and log["learning_rate"] == 1e-2
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["step"] == 1 and lines[0]["weight_std"] == pytest.approx(log["weight_std"])


def test_nan_guard_names_step_and_sequences(tmp_path):
    rows = [list(r) for r in ROWS[:4]]
    poison = 3  # token id that only row 2 contains
    for i, r in enumerate(rows):
        rows[i] = [BOS] + [t if t != poison else 4 for t in r[1:]]
    rows[2][10] = poison
    model = tiny_model(n=N, tie=False)

    class Poison(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 1:
                with torch.no_grad():
                    model.get_input_embeddings().weight[poison] = math.nan

    trainer = WeightedTrainer(
        model=model,
        args=targs(tmp_path, bs=4, steps=3),
        train_dataset=TrainSequences(dataset(rows)),
        data_collator=PadCollator(0),
        callbacks=[Poison()],
    )
    with pytest.raises(
        NonFiniteLossError, match=r"non-finite training loss \(nan\) at step 2 in rows \[2\] of the micro-batch"
    ):
        trainer.train()


def test_constructor_checks(tmp_path):
    model = tiny_model(n=N)
    common = dict(model=model, train_dataset=TrainSequences(dataset(ROWS)), data_collator=PadCollator(0))
    trainer = WeightedTrainer(args=targs(tmp_path), scheme="dense:0.5", **common)  # no scorer: needs a column
    with pytest.raises(ValueError, match="needs short-context NLL: pass short=SelfScorer"):
        trainer.compute_loss(model, batch(ROWS[:2]))
    with pytest.raises(ValueError, match="chunk_size"):
        WeightedTrainer(args=targs(tmp_path), chunk_size=0, **common)
