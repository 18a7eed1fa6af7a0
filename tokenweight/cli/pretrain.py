"""Pretrain at short context w with plain cross-entropy (stage ``pretrain``, docs/TRAINING.md).

Every prepared sequence is cut into windows of --window tokens; the saved model has
max_position_embeddings = w, which `tokenweight train` reads as the base length to extend from.
--task copy is an induction warm-up on synthetic repeats (--data then only gives the tokenizer);
--copy-fraction mixes such rows into the language-modelling windows.

The same command continues an interrupted run from its last checkpoint (or starts over when it was
killed before the first one), and is a no-op on a finished run with the same settings; other
settings on an existing run are refused (--force replaces it).
"""

from __future__ import annotations

from tokenweight.stages.pretrain import PretrainConfig as CONFIG


def run(config: CONFIG) -> int:
    from tokenweight.outputs import launch_rank
    from tokenweight.stages.pretrain import pretrain

    result = pretrain(config)
    if launch_rank() == 0:
        print(result.line("pretrained"))
    return 0
