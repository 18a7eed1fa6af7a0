"""What both training stages do before the first step: read the data, build or load the model.

Kept apart from the stages so that ``pretrain`` and ``train`` build their inputs the same way (the
same data checks, the same model checks, the same seeding) and the stage modules only decide
*what* to train.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenweight.errors import UsageError


@dataclass
class TrainData:
    """The training split of a prepared folder, its manifest and its tokenizer."""

    train: Any  # datasets.Dataset
    manifest: dict
    tokenizer: Any

    @property
    def n(self) -> int:
        return int(self.manifest["n"])


def load_train_data(data: str | os.PathLike) -> TrainData:
    """The prepared folder ``data`` (UsageError when missing, incomplete or without training sequences)."""
    from tokenweight.data import load_prepared
    from tokenweight.identity import load_tokenizer

    data = Path(data)
    dsd, manifest = load_prepared(data)
    if "train" not in dsd or len(dsd["train"]) == 0:
        raise UsageError(f"prepared data {str(data)!r} has no training sequences: prepare more data")
    return TrainData(dsd["train"], manifest, load_tokenizer(data / "tokenizer"))


def quiet_progress_bars() -> None:
    """No HF/datasets progress bars when stderr is not a terminal (logs and CI stay clean); ours
    stay (``tqdm(disable=None)``)."""
    if not sys.stderr.isatty():
        import datasets
        import transformers

        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()


def build_model(config, tokenizer, max_position_embeddings: int, rope_theta: float | None):
    """``config.init``: a fresh Llama with the tokenizer's special ids (seeded by ``config.seed``);
    ``config.model``: loaded in float32 (the trainer handles mixed precision); refused before it is
    loaded when it ships another tokenizer than the data's (:func:`tokenweight.identity.check_model_tokenizer`),
    and after when its embeddings do not cover the tokenizer. Both get the attention implementation of
    the run's runtime options (``auto``: the best the model supports on the device and dtype it trains in)."""
    from transformers import LlamaForCausalLM, set_seed

    from tokenweight.identity import check_model_tokenizer, check_vocabulary
    from tokenweight.models import init_model, load_model

    runtime = config.runtime()
    if config.init:
        set_seed(config.seed)
        return init_model(
            config.init,
            len(tokenizer),
            max_position_embeddings,
            rope_theta=rope_theta if rope_theta is not None else 10000.0,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            attn_implementation=runtime.attention_for(LlamaForCausalLM),
        )
    check_model_tokenizer(config.model, tokenizer, ref_name=f"the data {str(config.data)!r}")
    model = load_model(config.model, attn_implementation=runtime.attn_implementation, runtime=runtime)
    check_vocabulary(
        model.get_input_embeddings().weight.shape[0],
        tokenizer,
        name=f"model {config.model!r}",
        tokenizer_name="the data's tokenizer",
        fix="use a model trained with the data's tokenizer",
    )
    return model


def base_context(model) -> int:
    """The model's native context: ``max_position_embeddings`` of its (text) config."""
    return int(model.config.get_text_config().max_position_embeddings)
