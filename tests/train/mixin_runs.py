"""One optimizer step of the token-weighting mixin on a stock ``Trainer`` or TRL's ``SFTTrainer``,
the same in one process and under ``torchrun`` (2 gloo processes), for tests/train/test_trainer_mixin.py.

``python -m torch.distributed.run --nproc_per_node 2 -m tests.train.mixin_runs OUT`` runs every
case of :data:`CASES` with batch 2 per process and accumulation 2 and saves rank 0's results to
``OUT/<case>.pt``; the test runs the same cases in its own process with the whole batch (8
examples, accumulation 1) and compares.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from tests.train.train_helpers import BOS, VOCAB, make_tokenizer, sequences, tiny_model

N, W = 48, 16
#: case -> (trainer, scheme, scorer): "frozen" is a second tiny model scored on the fly, "self" the live model
CASES = {
    "trainer-dense-self": ("trainer", "dense:0.5", "self"),
    "trainer-sparse-frozen": ("trainer", "sparse:0.3", "frozen"),
    "sft-dense-frozen": ("sft", "dense:0.75", "frozen"),
}


def examples() -> list[dict]:
    """8 rows of different lengths; for SFT, a prompt of varying length (completion-only loss)."""
    rows = sequences(8, N, seed=3, short_every=1)
    return [{"input_ids": r, "completion_mask": [0] * (3 + i) + [1] * (len(r) - 3 - i)} for i, r in enumerate(rows)]


def short_source(kind: str):
    from tokenweight import FrozenScorer, SelfScorer

    if kind == "self":
        return SelfScorer(W, 12, bos_token_id=BOS)
    return FrozenScorer(tiny_model(n=N, seed=7), window=W)


class GradCapture:
    """Trainer callback: the gradient of every parameter just before the first optimizer step."""

    def __new__(cls, model):
        from transformers import TrainerCallback

        class Capture(TrainerCallback):
            grads: dict = {}

            def on_pre_optimizer_step(self, args, state, control, **kw):
                if not self.grads:
                    self.grads.update({k: p.grad.detach().clone() for k, p in model.named_parameters()})

        return Capture()


def run(case: str, out: str, bs: int, ga: int) -> dict:
    """One optimizer step of ``case`` -> ``{"grads": {name: tensor}, "loss": HF's logged loss}``."""
    from datasets import Dataset

    from tokenweight import token_weighted

    kind, scheme, scorer = CASES[case]
    model = tiny_model(n=N, seed=0).train()
    capture = GradCapture(model)
    common = dict(
        output_dir=out,
        max_steps=1,
        per_device_train_batch_size=bs,
        gradient_accumulation_steps=ga,
        learning_rate=1e-2,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        use_cpu=True,
        dataloader_pin_memory=False,
        seed=0,
    )
    data = examples()
    if kind == "sft":
        from trl import SFTConfig, SFTTrainer

        tok = make_tokenizer(Path(out) / "tokenizer", VOCAB)
        # float32 (SFTConfig defaults to bf16), with its default activation checkpointing
        args = SFTConfig(**common, padding_free=True, completion_only_loss=True, max_length=None, bf16=False)
        trainer = token_weighted(SFTTrainer)(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(data),
            processing_class=tok,
            callbacks=[capture],
            scheme=scheme,
            short=short_source(scorer),
        )
    else:
        from transformers import Trainer, TrainingArguments

        from tokenweight import PadCollator

        rows = [{"input_ids": e["input_ids"]} for e in data]
        trainer = token_weighted(Trainer)(
            model=model,
            args=TrainingArguments(**common),
            train_dataset=Dataset.from_list(rows),
            data_collator=PadCollator(0),
            callbacks=[capture],
            scheme=scheme,
            short=short_source(scorer),
        )
    trainer.train()
    return {"grads": capture.grads, "loss": trainer.state.log_history[0]["loss"]}


if __name__ == "__main__":  # under torchrun: every case, 2 per process x accumulation 2
    import torch.distributed as dist

    out = Path(sys.argv[1])
    for case in CASES:
        result = run(case, str(out / case), bs=2, ga=2)
        if dist.get_rank() == 0:
            torch.save(result, out / f"{case}.pt")
        dist.barrier()
    sys.stdout.flush()
    os._exit(0)  # skips gloo's teardown, which can abort after all work is done
