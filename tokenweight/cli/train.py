"""Train with a token-weighted loss at long context (stage ``train``, docs/TRAINING.md).

A model (--model PATH|ID, extended to the long context n with RoPE θ scaled as in the paper, or
--init PRESET from scratch) is trained on prepared data with a weighting scheme. --scheme uniform
is the plain cross-entropy baseline on the same code path; every other scheme needs short-context
NLL: --scorer self (the live model on windows of --window tokens, every step) or --scorer frozen
--scores DIR (a cache of `tokenweight score`).

The same command continues an interrupted run from its last checkpoint (or starts over when it was
killed before the first one), and is a no-op on a finished run with the same settings; other
settings on an existing run are refused (--force replaces it).

several GPUs:
  accelerate launch --config_file tokenweight/configs/accelerate/fsdp.yaml -m tokenweight.cli.main train ...
  torchrun --nproc_per_node K -m tokenweight.cli.main train ...
  ... train --deepspeed zero3 ...
"""

from __future__ import annotations

from tokenweight.stages.train import TrainConfig as CONFIG


def run(config: CONFIG) -> int:
    from tokenweight.outputs import launch_rank
    from tokenweight.stages.train import train

    result = train(config)
    if launch_rank() == 0:
        print(result.line("trained"))
    return 0
