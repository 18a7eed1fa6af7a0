"""Helpers of the LongPPL tests: byte-level BPE tokenizers trained here, tiny random Llama models,
and a brute-force LongPPL written from the definition (docs/METHOD.md, "LongPPL"), one token and
one forward pass at a time, with none of the library's code."""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

from tests import tiny_models

WORDS = (
    "the a river stone lamp north quiet garden seven window paper bright under over music table "
    "yellow winter market silver storm letter engine forest candle bridge ocean whisper orange"
).split()


def corpus(n_words: int, seed: int = 0) -> str:
    """Deterministic ASCII prose: words, commas and full stops."""
    rng = random.Random(seed)
    out = []
    for i in range(n_words):
        w = rng.choice(WORDS)
        out.append(w.capitalize() if i == 0 or out[-1].endswith(".") else w)
        if rng.random() < 0.1:
            out[-1] += rng.choice([",", "."])
    return " ".join(out) + "."


def bpe_tokenizer(vocab_size: int, bos: bool = True, seed: int = 0):
    """Byte-level BPE (``<s>`` = 0, ``</s>`` = 1, ``<pad>`` = 2) trained on :func:`corpus`; BOS is
    added to every encoding when ``bos``."""
    return tiny_models.tiny_bpe([corpus(400, seed=s) for s in range(seed, seed + 20)], vocab_size, add_bos=bos)


def tiny_llama(vocab: int, seed: int, n: int = 512, layers: int = 2):
    """A random Llama whose weights are drawn wide (``initializer_range`` 0.5), so that truncating
    the context moves its NLLs by nats, as a trained model's do on key tokens (LSD of -4 to 4)."""
    ids = {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}
    return tiny_models.tiny_llama(
        vocab,
        seed,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=n,
        initializer_range=0.5,
        **ids,
    )


@torch.no_grad()
def nll_of_last(model, ids: list[int]) -> float:
    """``-log p(ids[-1] | ids[:-1])`` from one forward pass over ``ids`` alone (float32)."""
    logits = model(torch.tensor([ids[:-1]])).logits[0, -1].float()
    return float(-F.log_softmax(logits, dim=-1)[ids[-1]])


def brute_key_positions(model, ids: list[int], trunc_len: int, sliding_window: int, alpha: float, beta: float):
    """``(key positions, LSD margins)`` of the evaluator on its ids, from the definition: a token
    ``p >= T`` is key when, with its own short context (the ``T + (p - T) % S`` tokens before it)
    and its full context, ``L_short - L_long > alpha`` and ``-L_long > beta``. Margins: ``|LSD - alpha|``
    and ``|L_long + beta|`` of every candidate (how far each decision is from a tie)."""
    keys, margins = [], []
    with torch.no_grad():  # the full context of every token from one causal pass
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
        full = F.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
    for p in range(trunc_len, len(ids)):
        start = ((p - trunc_len) // sliding_window) * sliding_window
        long = full[p - 1]
        short = torch.tensor(nll_of_last(model, ids[start : p + 1]), dtype=torch.float32)
        lsd = short - long
        if bool(lsd > alpha) and bool(long < -beta):
            keys.append(p)
        margins += [abs(float(lsd) - alpha), abs(float(long) + beta)]
    return keys, margins


def brute_key_targets(ev_offsets, keys, offsets) -> list[int]:
    """NLL entries of the evaluated tokens (``offsets``) whose characters are all characters of
    evaluator key tokens (non-empty tokens; token ``i`` is entry ``i - 1``)."""
    chars = {c for p in keys for c in range(*ev_offsets[p])}
    return [i - 1 for i in range(1, len(offsets)) if offsets[i][1] > offsets[i][0] and set(range(*offsets[i])) <= chars]


@torch.no_grad()
def brute_longppl(model, ids: list[int], targets: list[int]) -> tuple[float | None, float]:
    """``(LongPPL, PPL)`` of ``model`` on ``ids`` (one forward pass, NLL entries ``targets``)."""
    logits = model(torch.tensor([ids])).logits[0, :-1].float()
    nll = F.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none").double()
    ppl = math.exp(float(nll.mean()))
    return (math.exp(float(nll[targets].mean())) if targets else None), ppl
