"""Fixtures for the data tests: tiny synthetic corpora and one tiny trained tokenizer.

Documents are seeded pseudo-code (lower-case words, indentation, numbers) so that the tokenizer
has something to learn, lines sit at several indentation levels (episodes copy them), and no
upper-case identifier can collide with an injected episode name.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

WORDS = (
    "alpha beta gamma delta value result index count items total self return if else for in "
    "while def class print name data list dict none true false".split()
)


def make_doc(seed: int, lines: int) -> str:
    """A deterministic pseudo-Python document of ``lines`` lines."""
    rng = random.Random(seed)
    out, depth = [], 0
    for _ in range(lines):
        depth = max(0, min(3, depth + rng.choice((-1, 0, 0, 1))))
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 7)))
        tail = f" = {rng.randint(0, 999)}" if rng.random() < 0.3 else ""
        out.append("    " * depth + words + tail)
    return "\n".join(out) + "\n"


def make_docs(count: int, seed: int = 0, lines=(20, 120)) -> list[str]:
    rng = random.Random(seed)
    return [make_doc(seed * 1000 + i, rng.randint(*lines)) for i in range(count)]


@pytest.fixture
def docs_factory():
    return make_docs


@pytest.fixture
def text_dir(tmp_path) -> Path:
    """A folder of 12 text documents in nested folders, plus files that must be skipped."""
    root = tmp_path / "corpus"
    for i, text in enumerate(make_docs(12, seed=1)):
        sub = root / ("a" if i % 3 == 0 else "b/c" if i % 3 == 1 else "")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"doc{i:02d}{('.txt', '.md', '.py')[i % 3]}").write_text(text, encoding="utf-8")
    (root / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (root / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    (root / ".hidden.txt").write_text("hidden\n")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.txt").write_text("cache\n")
    return root


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> Path:
    """A 320-token byte-level BPE trained on synthetic documents, saved in HF format."""
    from tokenweight.data.tokenizer import train_tokenizer

    path = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer(make_docs(30, seed=7), vocab_size=320).save_pretrained(str(path))
    return path
