"""Tokenizers for prepared data: train the default byte-level BPE; encode text with exact offsets.

Any HF tokenizer loads with :func:`tokenweight.identity.load_tokenizer` (``require_fast=True`` here).

Why a byte-level BPE with single-digit tokens by default: byte level means no unknown tokens on
any corpus (code, prose, any script), and splitting every digit into its own token makes a number
a sequence of copyable symbols. An injected episode value such as ``4096217`` is then exactly 7
tokens, identical at the definition and at the use, so a model can learn to copy it token by token
and the data contract's spans are "only the digits".

The trained tokenizer has ``<pad>`` (id 0), ``<bos>`` (1) and ``<eos>`` (2). Its post-processor
prepends ``<bos>`` (like Llama tokenizers), so ``tokenizer(text)`` gives BOS-first ids that match
the prepared sequences; ``add_special_tokens=False`` gives the bare text tokens.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence

import numpy as np

from tokenweight.identity import tokenizer_digest
from tokenweight.io_utils import fingerprint

#: default vocabulary of the trained tokenizer (see docs/DATA.md for why 4096 and not 8192)
DEFAULT_VOCAB_SIZE = 4096
PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, BOS, EOS)
#: 256 byte symbols plus the three special tokens: a smaller vocabulary cannot hold the alphabet
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
MAX_VOCAB_SIZE = 1 << 20


def check_vocab_size(vocab_size: int) -> int:
    if not isinstance(vocab_size, int) or not MIN_VOCAB_SIZE <= vocab_size <= MAX_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size must be an int in [{MIN_VOCAB_SIZE}, {MAX_VOCAB_SIZE}] "
            f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens at least), got {vocab_size!r}"
        )
    return vocab_size


def train_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE, *, length: int | None = None):
    """Train the default byte-level BPE on ``texts``; returns a ``PreTrainedTokenizerFast``.

    Pre-tokenization: every digit is split off on its own, then the GPT-2 regex (letters, numbers,
    punctuation, whitespace runs) and the byte-level mapping. Deterministic for the same texts in
    the same order. ``length`` (number of texts) only feeds the trainer's progress estimate.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    check_vocab_size(vocab_size)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer, length=length)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def encoder_digest(tok) -> str:
    """Digest (16 hex) of what :class:`Encoder` computes with ``tok``: its full Rust definition
    (normalizer, pre-tokenizer, model, added tokens) without truncation and padding.

    Part of the prepared data's cache key next to :func:`tokenweight.identity.tokenizer_digest`
    (the tokenizer's identity: vocabulary and special tokens): the same vocabulary with another
    pre-tokenizer encodes text into other ids (measured: a qwen2 model folder's ``Qwen2Tokenizer``
    keeps the vocabulary but replaces the pre-tokenizer).
    """
    return fingerprint(json.loads(Encoder(tok, parallel=False).backend.to_str()))


def tokenizer_info(tok) -> dict:
    """What the manifest records about a tokenizer (the folder itself is DIR/tokenizer); ``fingerprint``
    is :func:`tokenweight.identity.tokenizer_digest`."""
    return {
        "class": type(tok).__name__,
        "vocab_size": len(tok),
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        "fingerprint": tokenizer_digest(tok),
    }


class Encoded:
    """One text's tokens: ``ids`` int32 ``[T]``; ``starts``/``ends`` int64 ``[T]`` character offsets.

    The offsets are converted from the Rust encoding on first use only (documents without
    episodes never need them), with ``np.fromiter`` (much faster than ``np.asarray`` on the list
    of tuples). Lookups go through ``searchsorted`` on them: the Rust ``char_to_token`` scans
    linearly, so its cost per call grows with the document (docs/DATA.md, "Performance").
    """

    def __init__(self, enc, n_chars: int):
        self.enc, self.n_chars = enc, n_chars
        self.ids = np.asarray(enc.ids, dtype=np.int32)
        self._offsets: np.ndarray | None = None

    def _arrays(self) -> np.ndarray:
        if self._offsets is None:
            off = self.enc.offsets
            flat = np.fromiter(itertools.chain.from_iterable(off), dtype=np.int64, count=2 * len(off))
            self._offsets = flat.reshape(-1, 2)
        return self._offsets

    @property
    def starts(self) -> np.ndarray:
        return self._arrays()[:, 0]

    @property
    def ends(self) -> np.ndarray:
        return self._arrays()[:, 1]

    def token_at(self, c: int) -> int:
        """Index of the token holding character ``c`` (the first token ending after it)."""
        return int(np.searchsorted(self.ends, c, "right"))

    def first_from(self, chars) -> np.ndarray:
        """Per character position, the index of the first token starting at or after it."""
        return np.searchsorted(self.starts, np.asarray(chars), "left")

    def chars(self, t: int) -> tuple[int, int]:
        """``(start, end)`` character offsets of token ``t``."""
        o = self._arrays()[t]
        return int(o[0]), int(o[1])


class Encoder:
    """Batch encoding of raw text without special tokens, truncation or padding.

    Wraps a copy of the Rust tokenizer (a saved ``tokenizer.json`` may carry truncation or padding
    settings, which would silently cut documents). ``parallel=True`` lets the Rust batch API use
    all cores; worker processes pass ``False`` so that they do not oversubscribe the CPU.
    """

    def __init__(self, tok, parallel: bool = True):
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())
        self.backend.no_truncation()
        self.backend.no_padding()
        self.parallel = parallel

    def __getstate__(self):
        return {"json": self.backend.to_str(), "parallel": self.parallel}

    def __setstate__(self, state):
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_str(state["json"])
        self.parallel = state["parallel"]

    def __call__(self, texts: Sequence[str]) -> list[Encoded]:
        """Encode documents (the Rust batch API, parallel unless disabled)."""
        if not texts:
            return []
        if self.parallel and len(texts) > 1:
            encs = self.backend.encode_batch(list(texts), add_special_tokens=False)
        else:
            encs = [self.backend.encode(t, add_special_tokens=False) for t in texts]
        return [Encoded(e, len(t)) for e, t in zip(encs, texts)]

    def short(self, texts: Sequence[str]) -> list[Encoded]:
        """Encode a few short strings in this thread (a parallel batch would cost more than it saves)."""
        return [Encoded(self.backend.encode(t, add_special_tokens=False), len(t)) for t in texts]
