"""Shared fixtures of the training tests: tiny Llama models, tokenizer, hand-built prepared data.

The prepared-data folder follows docs/ARCHITECTURE.md (save_to_disk splits with input_ids, doc_id,
episodes; manifest.json; tokenizer/) so that nothing depends on ``tokenweight prepare``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
BOS = 1
VOCAB = 64


def tiny_model(vocab: int = VOCAB, n: int = 64, seed: int = 0, tie: bool = True, layers: int = 2):
    from tokenweight.models import init_model

    torch.manual_seed(seed)
    return init_model(
        "tiny",
        vocab,
        n,
        hidden_size=32,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        num_hidden_layers=layers,
        tie_word_embeddings=tie,
        bos_token_id=BOS,
        eos_token_id=2,
        pad_token_id=0,
    )


def make_tokenizer(folder: Path, vocab: int = VOCAB):
    """Word-level tokenizer: ids 0-3 special (<s> = 1), then w0, w1, …; saved to ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {t: i for i, t in enumerate(SPECIALS + [f"w{i}" for i in range(vocab - len(SPECIALS))])}
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    fast.save_pretrained(folder)
    return fast


def sequences(count: int, n: int, vocab: int = VOCAB, seed: int = 0, short_every: int = 0) -> list[list[int]]:
    """``count`` rows of BOS + random tokens; every ``short_every``-th row is a shorter tail."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(count):
        length = n
        if short_every and i % short_every == short_every - 1:
            length = n - 1 - (5 * i) % (n // 2)
        rows.append([BOS] + torch.randint(4, vocab, (length - 1,), generator=g).tolist())
    return rows


def make_prepared(
    folder: Path, n: int = 64, count: int = 16, vocab: int = VOCAB, seed: int = 0, short_every: int = 0
) -> Path:
    from datasets import Dataset, Features, List, Value

    feats = Features(
        {"input_ids": List(Value("int32")), "doc_id": Value("int64"), "episodes": List(List(Value("int32")))}
    )
    for split, k, s in (("train", count, seed), ("validation", 3, seed + 1)):
        rows = sequences(k, n, vocab, s, short_every if split == "train" else 0)
        Dataset.from_dict(
            {"input_ids": rows, "doc_id": list(range(k)), "episodes": [[] for _ in range(k)]}, features=feats
        ).save_to_disk(str(folder / split))
    make_tokenizer(folder / "tokenizer", vocab)
    manifest = {
        "n": n,
        "tokenizer": "tokenizer",
        "counts": {"train": count, "validation": 3},
        "fingerprint": f"train-test-{seed}-{n}-{count}",
        "episodes": {},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def dataset(rows: list[list[int]]):
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": rows})
