"""The distributed engines with 2 CPU processes (gloo): ZeRO-3 and FSDP2 train exactly as one process.

- **DeepSpeed ZeRO-3**, the shipped ``tokenweight/configs/deepspeed/zero3.yaml`` through the HF
  Trainer: ``torchrun --nproc_per_node 2 -m tokenweight.cli.main train --deepspeed zero3`` (2
  processes × batch 2) against one process × batch 2 × accumulation 2, with the weighted loss both
  self-scored and frozen. The model's output layer is untied, so ZeRO-3 partitions it (its weight
  is a ``[0]`` placeholder outside its forward) and the chunked loss's backward recomputes the logits
  from the weight ZeRO-3 gathers again for the backward of that module
  (``tokenweight.token_weighting.nll_output_layer``): same losses (relative 1e-5) and final weights
  (absolute 1e-6) as one process. Needs ``deepspeed`` (the ``deepspeed`` and ``test`` extras):
  skipped without it.
- **FSDP2**: accelerate never selects FSDP on a CPU (``AcceleratorState`` turns FSDP on only over a
  GPU-type distributed type; with ``use_cpu`` it is ``MULTI_CPU``, plain DDP), so the launcher path
  (``accelerate launch --config_file tokenweight/configs/accelerate/fsdp.yaml``) runs in
  ``benchmarks/gpu_check.sh``. Here the model is sharded by accelerate's own
  ``fsdp2_prepare_model`` with the shipped config's wrapping (every ``LlamaDecoderLayer``, the
  embedding, the ``[norm, lm_head]`` tail, the root) in 2 gloo processes, and
  ``WeightedTrainer.compute_loss`` (``is_fsdp_enabled``, so self-scoring runs through the wrapped
  model) drives 3 AdamW steps, self-scored and frozen: same losses and final weights as one process.

Slow (multi-process): about 60 s together on 2 cores, plus a one-time build of DeepSpeed's CPU
communication op (``~/.cache/torch_extensions``, about 30 s) on a fresh machine.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from tests.distributed import torchrun
from tests.train.train_helpers import make_prepared, tiny_model

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
N, W, STEPS = 64, 16, 3
#: final-weight tolerance of FSDP2 vs one process: the sharded reduction sums in another order, and
#: AdamW's first steps divide by sqrt(v) ~ |g|, which magnifies relative noise of tiny gradients
#: (measured max 1.1e-6 after 3 steps); an update of the wrong sign would differ by ~lr = 3e-3.
FSDP_ATOL = 5e-6
CASES = {"self": ("dense:0.5", "self"), "frozen": ("dense:0.75", "frozen")}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from tokenweight.scorecache import compute_scores

    root = tmp_path_factory.mktemp("engines")
    data = make_prepared(root / "data", n=N, count=8, short_every=4)
    model = root / "untied"
    tiny_model(n=N, tie=False).save_pretrained(model)
    compute_scores(root / "scores", data, model, window=W, device="cpu")
    return {"root": root, "data": data, "model": model, "scores": root / "scores"}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def log_lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------- DeepSpeed


@pytest.mark.parametrize("case", list(CASES))
def test_zero3_two_processes_equal_one_process(env, case):
    pytest.importorskip("deepspeed")
    from tokenweight.cli.main import main

    scheme, scorer = CASES[case]
    common = ["train", "--data", str(env["data"]), "--model", str(env["model"]), "--scheme", scheme]
    common += ["--scorer", scorer, "--window", str(W), "--max-steps", str(STEPS), "--batch-size", "2"]
    common += ["--save-steps", "100", "--lr", "3e-3", "--warmup-steps", "1"]
    if scorer == "frozen":
        common += ["--scores", str(env["scores"])]
    two = env["root"] / f"zero3-{case}"
    run = torchrun("-m", "tokenweight.cli.main", *common, "--deepspeed", "zero3", "--out", two, cwd=env["root"])
    assert f"trained {STEPS} steps" in run.stdout
    one = env["root"] / f"one-{case}"
    assert main([*common, "--grad-accum", "2", "--out", str(one)]) == 0
    assert json.loads((two / "summary.json").read_text())["world_size"] == 2
    a, b = weights(one / "model"), weights(two / "model")
    assert sorted(a) == sorted(b) and "lm_head.weight" in a  # untied: the head is its own partitioned weight
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
    la, lb = log_lines(one), log_lines(two)
    assert len(la) == len(lb) == STEPS
    for x, y in zip(la, lb):
        for k in ("loss", "weighted_loss", "plain_loss", "grad_norm", "weight_std", "tokens", "scored_tokens"):
            assert y[k] == pytest.approx(x[k], rel=1e-5), k


# ------------------------------------------------------------------------------------- sequence parallelism


def test_sequence_parallel_cli_two_processes_equal_one_process(env):
    """``train --sp-size 2 --deepspeed zero3`` under torchrun (every sequence split over the 2
    processes, DeepSpeed's Ulysses; frozen sparse weights of the whole sequences) ends where one
    process with the same sequences per step ends (tests/train/test_trainer_sequence_parallel.py has the
    step-level checks for every scheme)."""
    pytest.importorskip("deepspeed")
    from tokenweight.cli.main import main

    common = ["train", "--data", str(env["data"]), "--model", str(env["model"]), "--scheme", "sparse:0.3"]
    common += ["--scorer", "frozen", "--scores", str(env["scores"]), "--max-steps", str(STEPS), "--lr", "3e-3"]
    common += ["--save-steps", "100", "--warmup-steps", "1", "--report-to", "none"]
    two = env["root"] / "sp-two"
    sp = ["--deepspeed", "zero3", "--sp-size", "2", "--batch-size", "1", "--grad-accum", "2"]
    torchrun("-m", "tokenweight.cli.main", *common, *sp, "--out", two, cwd=env["root"])
    one = env["root"] / "sp-one"
    assert main([*common, "--batch-size", "2", "--out", str(one)]) == 0
    a, b = weights(one / "model"), weights(two / "model")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5, msg=k)
    for x, y in zip(log_lines(one), log_lines(two)):
        for k in ("weighted_loss", "plain_loss", "weight_std", "scored_tokens"):
            assert y[k] == pytest.approx(x[k], rel=1e-5), k


# ------------------------------------------------------------------------------------- FSDP2


def fsdp_plugin():
    """accelerate's FSDP2 plugin with the wrapping of the shipped fsdp.yaml (CPU: full precision,
    no activation checkpointing, every rank loads the weights)."""
    import yaml
    from accelerate import FullyShardedDataParallelPlugin

    shipped = yaml.safe_load((ROOT / "tokenweight/configs/accelerate/fsdp.yaml").read_text())["fsdp_config"]
    return FullyShardedDataParallelPlugin(
        fsdp_version=shipped["fsdp_version"],
        auto_wrap_policy=shipped["fsdp_auto_wrap_policy"].lower(),
        transformer_cls_names_to_wrap=[shipped["fsdp_transformer_layer_cls_to_wrap"]],
        reshard_after_forward=shipped["fsdp_reshard_after_forward"],
        state_dict_type=shipped["fsdp_state_dict_type"],
        cpu_ram_efficient_loading=False,
        activation_checkpointing=False,
    )


def fsdp_steps(data: str, model_dir: str, scores: str, case: str, out_dir: str) -> dict:
    """``STEPS`` AdamW steps of ``WeightedTrainer.compute_loss`` on global batches of 4 sequences,
    split over the processes (one process: no sharding). -> ``{"losses", "weights"}`` (full tensors)."""
    from types import SimpleNamespace

    import torch.distributed as dist
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model
    from transformers import AutoModelForCausalLM, TrainingArguments

    from tokenweight.data import load_prepared
    from tokenweight.scorecache import ScoreCache
    from tokenweight.short_nll import SelfScorer
    from tokenweight.train.collate import PadCollator, TrainSequences
    from tokenweight.train.trainer import WeightedTrainer

    args = TrainingArguments(output_dir=out_dir, report_to=[], use_cpu=True)
    world, rank = args.world_size, args.process_index
    model = AutoModelForCausalLM.from_pretrained(model_dir).train()
    scheme, kind = CASES[case]
    scorer = SelfScorer(W, 12, bos_token_id=1) if kind == "self" else None  # frozen: the cache's column
    trainer = WeightedTrainer(model=model, args=args, scheme=scheme, short=scorer)
    if world > 1:  # as Trainer.train does: shard after __init__, then create the optimizer
        shim = SimpleNamespace(
            state=SimpleNamespace(fsdp_plugin=fsdp_plugin()),
            mixed_precision="no",
            is_main_process=rank == 0,
            device=torch.device("cpu"),
        )
        model = trainer.model = fsdp2_prepare_model(shim, model)
        trainer.is_fsdp_enabled = True
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0)
    cache = ScoreCache.open(scores) if kind == "frozen" else None
    dataset, collate = TrainSequences(load_prepared(data)[0]["train"], scores=cache), PadCollator(0)
    losses = []
    for step in range(STEPS):
        rows = [(4 * step + i) % len(dataset) for i in range(4)]
        count = sum(len(dataset[r]["input_ids"]) - 1 for r in rows)
        mine = rows[rank * 4 // world : (rank + 1) * 4 // world]
        optim.zero_grad(set_to_none=True)
        loss = trainer.compute_loss(model, collate([dataset[r] for r in mine]), num_items_in_batch=count)
        loss.backward()
        optim.step()
        total = loss.detach() / world
        if world > 1:
            dist.all_reduce(total)
        losses.append(total.item())
    full = {
        k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone() for k, v in model.state_dict().items()
    }
    return {"losses": losses, "weights": full}


def test_fsdp2_two_processes_equal_one_process(env):
    out = env["root"] / "fsdp"
    out.mkdir()
    torchrun("-m", "tests.contracts.test_engines", env["data"], env["model"], env["scores"], out)
    for case in CASES:
        two = torch.load(out / f"{case}.pt")
        one = fsdp_steps(str(env["data"]), str(env["model"]), str(env["scores"]), case, str(out / "one"))
        assert two["losses"] == pytest.approx(one["losses"], rel=1e-5), case
        assert sorted(two["weights"]) == sorted(one["weights"]) and "lm_head.weight" in one["weights"]
        for k, v in one["weights"].items():
            torch.testing.assert_close(two["weights"][k], v, rtol=0, atol=FSDP_ATOL, msg=f"{case}: {k}")


if __name__ == "__main__":  # one rank of test_fsdp2_two_processes_equal_one_process (under torchrun)
    import torch.distributed as dist

    data, model_dir, scores, out = sys.argv[1:5]
    for case in CASES:
        result = fsdp_steps(data, model_dir, scores, case, str(Path(out) / "run"))
        if dist.get_rank() == 0:
            torch.save(result, Path(out) / f"{case}.pt")
        dist.barrier()
    sys.stdout.flush()
    os._exit(0)  # skips gloo's teardown, which can abort after all work is done (tokenweight.cli.main.entry)
