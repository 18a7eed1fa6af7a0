"""One optimizer step of the token-weighting mixin under DeepSpeed's Ulysses sequence parallelism
(HF ``Trainer`` + ``accelerate``'s ``ParallelismConfig(sp_backend="deepspeed", sp_size=2)``), on CPU
with 2 gloo processes, for tests/train/test_trainer_sequence_parallel.py.

``python -m torch.distributed.run --nproc_per_node 2 -m tests.train.sp_runs OUT STAGE`` runs every
case of :data:`CASES` under ZeRO stage ``STAGE`` (sequence shards of 2 rows x accumulation 2) and
saves, from rank 0, each case's gradient (recovered from one plain-SGD step: ``(before - after) /
lr``, exact in float32 to rounding) and the weights every rank computed for its shards.

On CPU, accelerate starts gloo but not DeepSpeed's communication layer, which Ulysses needs before
the Trainer is built: ``deepspeed.init_distributed(dist_backend="gloo")`` first (what ``tokenweight
train --sp-size`` does too).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from tests.train.train_helpers import sequences, tiny_model

N, W, LR = 48, 16, 1.0
#: case -> (scheme, source of L_short): "column" the rows' short_nll column, "frozen" a FrozenScorer
CASES = {
    "uniform": ("uniform", None),
    "dense": ("dense:0.75", "column"),
    "sparse": ("sparse:0.3", "frozen"),
    "longce": ("longce:5", "column"),
}


def rows() -> list[dict]:
    """Two rows of different lengths (one odd: padded to an even length), one with a prompt."""
    data = sequences(2, N, seed=5, short_every=2)  # lengths 48 and 43
    scorer = frozen()
    out = []
    for i, r in enumerate(data):
        with torch.no_grad():
            from tokenweight.scoring import short_context_nll

            short = short_context_nll(scorer, torch.tensor([r]), W, 12, bos_token_id=1)[0]
        labels = list(r) if i else [-100] * 6 + list(r[6:])
        out.append({"input_ids": r, "labels": labels, "short_nll": [0.0] + short.tolist()})
    return out


def frozen():
    return tiny_model(n=N, seed=7)


def source(kind):
    from tokenweight import FrozenScorer

    return FrozenScorer(frozen(), window=W, stride=12, bos_token_id=1) if kind == "frozen" else None


def run(case: str, out: str, stage: int) -> dict:
    """One SGD step of ``case`` -> ``{"grads": {name: tensor}, "weights": [(rank, step, weights of the shard)]}``."""
    from accelerate.utils import ParallelismConfig
    from accelerate.utils.dataclasses import DeepSpeedSequenceParallelConfig
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    import tokenweight.sequence_parallel as SP
    from tokenweight import PadCollator, token_weighted

    scheme, kind = CASES[case]
    model = tiny_model(n=N, seed=0).train()
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    seen, original = [], SP.sharded_loss

    def recording(tw, m, batch, group):
        result = original(tw, m, batch, group)
        seen.append(result[0].weights.detach().clone() if result[0].weights is not None else None)
        return result

    SP.sharded_loss = recording
    sp = ParallelismConfig(
        sp_backend="deepspeed",
        sp_size=2,
        sp_handler=DeepSpeedSequenceParallelConfig(sp_seq_length_is_variable=True, sp_attn_implementation="sdpa"),
    )
    ds_config = {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "zero_optimization": {"stage": stage},
        "zero_allow_untested_optimizer": True,
        "gradient_clipping": "auto",
    }
    args = TrainingArguments(
        output_dir=out,
        max_steps=1,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=2,
        learning_rate=LR,
        lr_scheduler_type="constant",
        optim="sgd",
        weight_decay=0.0,
        max_grad_norm=1e9,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        deepspeed=ds_config,
        parallelism_config=sp,
    )
    trainer = token_weighted(Trainer)(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows()),
        # gloo all-gathers only equal shapes: every batch padded to N (NCCL also takes uneven lengths)
        data_collator=PadCollator(0, pad_to_multiple_of=N, return_position_ids=True),
        scheme=scheme,
        short=source(kind),
    )
    trainer.train()
    SP.sharded_loss = original
    import deepspeed

    lm = trainer.model_wrapped.module if hasattr(trainer.model_wrapped, "module") else model
    with deepspeed.zero.GatheredParameters(list(lm.parameters()), modifier_rank=None, enabled=stage == 3):
        after = {k: p.detach().clone() for k, p in lm.named_parameters()}
    grads = {k: (before[k] - after[k]) / LR for k in before}
    return {"grads": grads, "weights": seen, "log": trainer.state.log_history[0]}


class ShardView(torch.nn.Module):
    """A stand-in for an engine that shards sequences (torch's context parallelism on GPUs): given
    this rank's tokens at global ``position_ids``, it runs the model on the whole rows (gathered
    over ``group``) and hands the output layer the hidden states of this rank's positions only, so
    the forward computes exactly the shard's outputs, and backward the gradient of its loss."""

    def __init__(self, model, group):
        super().__init__()
        self.inner, self.group = model, group
        self.config = model.config

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()

    def forward(self, input_ids, position_ids, use_cache=False):
        from tokenweight.sequence_parallel import gather_shards

        pos = gather_shards(position_ids, self.group)
        order = pos.argsort(dim=1)
        ids = gather_shards(input_ids, self.group).gather(1, order)
        hidden = self.inner.model(input_ids=ids, use_cache=False).last_hidden_state  # [b, n, d]
        local = hidden.gather(1, position_ids[..., None].expand(-1, -1, hidden.shape[-1]))
        return {"logits": self.get_output_embeddings()(local)}


def load_balanced(n: int, k: int, rank: int) -> torch.Tensor:
    """Global positions of ``rank``'s shard in torch's load-balanced layout: chunks ``rank`` and
    ``2k - 1 - rank`` of ``2k`` equal chunks."""
    c = n // (2 * k)
    return torch.cat([torch.arange(rank * c, (rank + 1) * c), torch.arange((2 * k - 1 - rank) * c, (2 * k - rank) * c)])


def manual(case: str) -> dict:
    """Both rows through :func:`tokenweight.sequence_parallel.sharded_loss` in the load-balanced
    layout, 2 processes: ``Σ loss_sum / N`` per rank, gradients summed over the group."""
    import torch.distributed as dist

    from tokenweight import PadCollator, TokenWeighting
    from tokenweight.sequence_parallel import sharded_loss

    scheme, kind = CASES[case]
    model = tiny_model(n=N, seed=0).train()
    view, group = ShardView(model, dist.group.WORLD), dist.group.WORLD
    tw = TokenWeighting(scheme, source(kind), seed=0)
    rank, k = dist.get_rank(), dist.get_world_size()
    outs, weights = [], []
    for row in rows():
        batch = PadCollator(0, pad_to_multiple_of=N, return_position_ids=True)([row])
        shift = torch.nn.functional.pad(batch["labels"], (0, 1), value=-100)[:, 1:]
        mine = load_balanced(N, k, rank)
        shard = {key: batch[key][:, mine] for key in ("input_ids", "attention_mask", "position_ids", "short_nll")}
        out, _ = sharded_loss(tw, view, {**shard, "shift_labels": shift[:, mine]}, group)
        outs.append(out)
        weights.append(out.weights)
    count = sum(o.count for o in outs).clone()
    dist.all_reduce(count)
    (sum(o.loss_sum for o in outs) / count).backward()
    grads = {}
    for name, p in model.named_parameters():
        dist.all_reduce(p.grad)
        grads[name] = p.grad.clone()
    return {"grads": grads, "weights": weights}


if __name__ == "__main__" and sys.argv[2] == "manual":  # under torchrun: the load-balanced layout by hand
    import torch.distributed as dist

    dist.init_process_group("gloo")
    out = Path(sys.argv[1])
    for case in CASES:
        result = manual(case)
        everyone = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, result["weights"])
        if dist.get_rank() == 0:
            torch.save({**result, "weights": everyone}, out / f"{case}-manual.pt")
        dist.barrier()
    sys.stdout.flush()
    os._exit(0)

if __name__ == "__main__":  # under torchrun
    import deepspeed
    import torch.distributed as dist

    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    out, stage = Path(sys.argv[1]), int(sys.argv[2])
    from deepspeed.runtime.sequence_parallel import parallel_state_sp
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    for case in CASES:  # one Trainer after another in one process: undo the last one's Ulysses set-up
        parallel_state_sp._release_sequence_parallel_groups()
        ALL_ATTENTION_FUNCTIONS._local_mapping.clear()
        result = run(case, str(out / f"{case}-{stage}"), stage)
        everyone = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, result["weights"])
        if dist.get_rank() == 0:
            torch.save({**result, "weights": everyone}, out / f"{case}-{stage}.pt")
        dist.barrier()
    sys.stdout.flush()
    os._exit(0)  # skips gloo's teardown, which can abort after all work is done
