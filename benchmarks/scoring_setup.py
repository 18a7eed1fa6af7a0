"""The setup that the frozen-scoring benchmarks share (bench_frozen_scoring.py, bench_aligned_scoring.py).

Both score prepared data of the embedded stdlib corpus (its 4096-token BPE) with from-scratch
presets, and their numbers are compared with each other in benchmarks/RESULTS.md: one setup keeps
the data, the flags and the models' seeding the same in both (weights do not change the cost, but
a fixed seed keeps the runs reproducible). Imported by the scripts as a sibling module (they run as
``python benchmarks/bench_*.py``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from tokenweight.identity import load_tokenizer
from tokenweight.models import init_model
from tokenweight.stages.prepare import PrepareConfig, prepare


def add_scoring_args(ap: argparse.ArgumentParser, *, tokens: int, repeats: int, threads: int, out: str) -> None:
    """The flags both benchmarks take, after their own (``--help`` lists them in this order)."""
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=tokens, help="tokens of prepared data to score")
    ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=threads)
    ap.add_argument("--out", default=out)


def prepare_stdlib(args: argparse.Namespace):
    """Sets ``--threads`` and prepares ``--tokens`` of the stdlib corpus in rows of ``--n`` into a
    new temporary folder. Returns (the folder, the prepared data folder in it, the data's tokenizer)."""
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    data = tmp / "data"
    prepare(PrepareConfig(out=str(data), corpus="stdlib", n=args.n, vocab_size=4096, max_tokens=args.tokens))
    return tmp, data, load_tokenizer(str(data / "tokenizer"))


def preset_model(preset: str, vocab_size: int, max_position_embeddings: int):
    """A from-scratch ``preset`` drawn after ``torch.manual_seed(0)``, and its number of parameters."""
    torch.manual_seed(0)
    model = init_model(preset, vocab_size=vocab_size, max_position_embeddings=max_position_embeddings)
    return model, sum(p.numel() for p in model.parameters())
