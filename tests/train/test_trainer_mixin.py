"""TokenWeightingMixin on a stock ``Trainer`` and on TRL's ``SFTTrainer`` (completion-only loss,
padding-free packing): one optimizer step equals the same examples run one by one through the
component (loss and gradients), in one process and with 2 processes x accumulation 2; the default
``remove_unused_columns``; evaluation logs the model's own loss next to the weighted one; an MoE's
router loss is kept."""

from __future__ import annotations

import pytest
import torch

from tests.distributed import torchrun
from tests.train import mixin_runs as R
from tests.train.train_helpers import tiny_model


def reference(case: str) -> dict:
    """The examples of ``case`` one by one through the component: ``Σ loss_sum / Σ count``, backward."""
    from tokenweight import PadCollator, TokenWeighting

    kind, scheme, scorer = R.CASES[case]
    model = tiny_model(n=R.N, seed=0).train()
    tw = TokenWeighting(scheme, R.short_source(scorer), seed=0)
    total, count = 0.0, 0.0
    for e in R.examples():
        batch = PadCollator(0)([{"input_ids": e["input_ids"]}])
        if kind == "sft":  # completion-only: the prompt's labels are -100
            batch["labels"][0, torch.tensor(e["completion_mask"]) == 0] = -100
        out = tw(model, batch)
        total, count = total + out.loss_sum, count + out.count
    loss = total / count
    loss.backward()
    return {"grads": {k: p.grad.clone() for k, p in model.named_parameters()}, "loss": loss.item()}


def assert_same(got: dict, want: dict, case: str):
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-5), case
    assert got["grads"].keys() == want["grads"].keys()
    for k, g in want["grads"].items():
        torch.testing.assert_close(got["grads"][k], g, rtol=1e-4, atol=2e-7, msg=f"{case}: {k}")


@pytest.mark.parametrize("case", list(R.CASES))
def test_one_process_equals_the_examples_one_by_one(tmp_path, case):
    assert_same(R.run(case, str(tmp_path), bs=8, ga=1), reference(case), case)
    assert_same(R.run(case, str(tmp_path / "ga"), bs=2, ga=4), reference(case), f"{case} (accumulation 4)")


@pytest.mark.slow
def test_two_processes_with_accumulation_equal_one_process(tmp_path):
    torchrun("-m", "tests.train.mixin_runs", tmp_path, timeout=500)
    for case in R.CASES:
        assert_same(torch.load(tmp_path / f"{case}.pt"), reference(case), f"{case} (2 processes)")


def test_default_remove_unused_columns_keeps_the_columns_and_no_index_is_needed(tmp_path):
    """A datasets.Dataset with a short_nll column and an unused text column, through the default
    ``remove_unused_columns=True``: the column reaches the loss, the text is dropped."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from tokenweight import PadCollator, TokenWeighting, token_weighted

    rows = [e["input_ids"] for e in R.examples()[:4]]
    g = torch.Generator().manual_seed(0)
    columns = [[0.0] + (torch.rand(len(r) - 1, generator=g) * 5).tolist() for r in rows]
    ds = Dataset.from_dict({"input_ids": rows, "short_nll": columns, "text": ["x"] * 4})
    model = tiny_model(n=R.N, seed=0)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, report_to="none")
    trainer = token_weighted(Trainer)(
        model=model, args=args, train_dataset=ds, data_collator=PadCollator(0), scheme="dense:0.75"
    )
    batch = next(iter(trainer.get_train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels", "short_nll"}
    loss = trainer.compute_loss(model, batch)
    want = TokenWeighting("dense:0.75")(
        model, PadCollator(0)([{"input_ids": r, "short_nll": c} for r, c in zip(rows, columns)])
    )
    assert loss.item() == pytest.approx(want.loss().item(), rel=1e-6)


def test_evaluation_logs_the_models_own_loss_and_the_weighted_one(tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from tokenweight import PadCollator, SelfScorer, TokenWeighting, token_weighted

    rows = [e["input_ids"] for e in R.examples()[:4]]
    ds = Dataset.from_dict({"input_ids": rows})
    model = tiny_model(n=R.N, seed=0)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=4, report_to="none")
    common = dict(model=model, args=args, eval_dataset=ds, data_collator=PadCollator(0))
    stock = Trainer(**common).evaluate()
    short = SelfScorer(R.W, 12, bos_token_id=1)
    ours = token_weighted(Trainer)(**common, scheme="dense:0.5", short=short).evaluate()
    batch = PadCollator(0)([{"input_ids": r} for r in rows])
    with torch.no_grad():
        out = TokenWeighting("dense:0.5", short)(model, batch)
        ce = model(**batch).loss.item()
    assert ours["eval_loss"] == pytest.approx(stock["eval_loss"], rel=1e-5) == pytest.approx(ce, rel=1e-5)
    assert ours["eval_plain_loss"] == pytest.approx(ce, rel=1e-5)
    assert ours["eval_weighted_loss"] == pytest.approx((out.loss_sum / out.count).item(), rel=1e-5)
    assert ours["eval_weight_mean"] == pytest.approx(1.0, abs=1e-5) and ours["eval_scored_tokens"] == out.count.item()


def test_an_moe_keeps_its_router_loss(tmp_path):
    """Mixtral with output_router_logits: uniform equals ``model(labels=...).loss`` = CE + coef·aux,
    in the component and in the mixin's step (one micro-batch)."""
    from transformers import Trainer, TrainingArguments

    from tests.tiny_models import tiny_mixtral
    from tokenweight import PadCollator, TokenWeighting, token_weighted

    model = tiny_mixtral(64, 0, max_position_embeddings=64).train()
    batch = PadCollator(0)([{"input_ids": e["input_ids"]} for e in R.examples()[:3]])
    batch["labels"][0, :10] = -100
    want = model(**batch)
    out = TokenWeighting("uniform")(model, batch)
    assert out.aux_loss is not None and out.aux_loss.item() == pytest.approx(0.5 * want.aux_loss.item(), rel=1e-6)
    assert out.loss().item() == pytest.approx(want.loss.item(), rel=1e-6)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = token_weighted(Trainer)(model=model, args=args, data_collator=PadCollator(0))
    loss = trainer.compute_loss(model, batch, num_items_in_batch=out.count)
    assert loss.item() == pytest.approx(want.loss.item(), rel=1e-6)
