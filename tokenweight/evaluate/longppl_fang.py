"""``compute_longppl``: a drop-in for ``PKU-ML/LongPPL``'s function of the same name.

A user of ``from longppl import compute_longppl`` switches with ``from tokenweight.evaluate import
compute_longppl`` and gets the same numbers: the same signature, defaults and returned keys, with
the original's semantics (Fang et al., ICLR 2025, and their ``longppl/longppl.py``):

- the evaluator tokenizes ``text`` *with* its special tokens (a BOS first when it adds one) and
  finds the key tokens on its own ids: a token at position ``p >= trunc_len`` whose ``LSD > alpha``
  and ``LCL > beta``, where its short context is the raw slice of ``trunc_len + (p - trunc_len) %
  sliding_window`` tokens before it (``tokenweight.scoring.truncated_windows``: windows of
  ``trunc_len + sliding_window`` tokens every ``sliding_window``, each scoring its last
  ``sliding_window``); the key tokens become character spans (adjacent ones merged);
- the evaluated model tokenizes ``text`` *without* special tokens (no BOS); its key tokens are the
  tokens whose character span lies inside a key span (so the two may use different tokenizers);
- ``longppl = exp(mean NLL over those tokens)``, ``n_key_token`` their number (None, with
  ``longppl`` None, when there is none), ``ppl = exp(mean NLL over all n_token - 1 predicted
  tokens)``, ``n_token`` the number of the evaluated model's tokens; the values are numpy float32
  computed as the original computes them (float32 NLLs, numpy's mean);
- ``save_path`` with an evaluator: the key spans are saved there (the original's file format);
  without one (``evaluator_model=None``) they are read back from it and no evaluator runs.

Where it goes further: models and tokenizers may be given as folders or hub ids (the original's
docstring allows a path but its code needs objects); the evaluator's windows run batched (the same
numbers, up to float rounding); the NLL is cross-entropy over float32 logits (the original takes it
in the logits' dtype: equal for float32 models); a key-token file names its text, and one saved
for another text is refused with one line; an evaluator tokenizer without character offsets gets
the original's ``compute_offsets`` rule (the original supports that for the evaluated model only);
a last window of one token is scored (the original's ``squeeze`` fails on it).
"""

from __future__ import annotations

import numpy as np
import torch

from tokenweight.evaluate.longppl import (
    encode,
    evaluator_key_mask,
    load_key_spans,
    merge_spans,
    padded,
    save_key_spans,
    spans_to_targets,
)

__all__ = ["compute_longppl", "find_key_spans"]


def _model_and_tokenizer(model, tokenizer, what: str):
    """``(model, tokenizer)``: a folder or hub id is loaded (its tokenizer too when none is given)."""
    from pathlib import Path

    from tokenweight.identity import load_tokenizer

    if isinstance(model, (str, Path)):
        from tokenweight.models import load_model

        source = model
        model = load_model(source).eval()
        if tokenizer is None:
            tokenizer = load_tokenizer(source)
    if tokenizer is None:
        source = getattr(getattr(model, "config", None), "_name_or_path", None) or getattr(model, "name_or_path", None)
        if not source:
            raise ValueError(f"{what}: pass its tokenizer (the model object does not say where it was loaded from)")
        tokenizer = load_tokenizer(source)
    elif isinstance(tokenizer, (str, Path)):
        tokenizer = load_tokenizer(tokenizer)
    return model, tokenizer


def find_key_spans(
    text: str,
    evaluator_model,
    evaluator_tokenizer,
    trunc_len: int = 4096,
    sliding_window: int = 1024,
    alpha: float = 2,
    beta: float = -2,
) -> list[tuple[int, int]]:
    """The key tokens of ``text`` as merged character spans (the original's ``find_key_token``)."""
    _, _, spans = key_spans_and_candidates(
        [text], evaluator_model, evaluator_tokenizer, trunc_len, sliding_window, alpha, beta
    )[0]
    return spans


def key_spans_and_candidates(
    texts: list[str],
    evaluator_model,
    evaluator_tokenizer,
    trunc_len: int,
    sliding_window: int,
    alpha: float,
    beta: float,
    batch_size: int = 1,
    batch_tokens: int | None = None,
    encodings: list | None = None,
) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """Per text ``(candidates, keys, spans)``: how many of the evaluator's tokens could be key
    tokens (positions ``>= trunc_len``) and are, and the merged character spans of its key tokens.
    Texts run ``batch_size`` at a time, at most ``batch_tokens`` padded tokens per pass (right
    padding); ``encodings``: the evaluator's :func:`encode` of each text, when already known."""
    from tokenweight.evaluate.batching import token_groups

    if encodings is None:
        encodings = [encode(evaluator_tokenizer, t, add_special_tokens=True) for t in texts]
    out = []
    for group in token_groups([len(ids) for ids, _ in encodings], batch_size, batch_tokens):
        chunk = [encodings[i] for i in group]
        if max(len(ids) for ids, _ in chunk) < 2:
            out += [(0, 0, [])] * len(chunk)
            continue
        ids, mask = padded([ids for ids, _ in chunk])
        key, candidates = evaluator_key_mask(
            evaluator_model, ids, mask, trunc_len=trunc_len, sliding_window=sliding_window, alpha=alpha, beta=beta
        )
        for r, (_, offsets) in enumerate(chunk):
            positions = (key[r].nonzero().flatten() + 1).tolist()
            spans = merge_spans([offsets[p] for p in positions])
            out.append((int(candidates[r].sum()), len(positions), spans))
    return out


def compute_longppl(
    text,
    model,
    evaluator_model,
    tokenizer=None,
    evaluator_tokenizer=None,
    save_path=None,
    trunc_len=4096,
    sliding_window=1024,
    alpha=2,
    beta=-2,
):
    """LongPPL of ``model`` on ``text`` with the key tokens of ``evaluator_model`` (module docstring).

    Args:
        text: the input text.
        model: the evaluated causal LM (object, folder or hub id).
        evaluator_model: the evaluator (object, folder or hub id), or None to read the key tokens
            from ``save_path`` instead.
        tokenizer: the evaluated model's tokenizer (None: loaded from where the model was).
        evaluator_tokenizer: the evaluator's tokenizer (None: loaded from where it was).
        save_path: key-token file: written when an evaluator runs, read when none is given.
        trunc_len: short context of the first candidate (4096); tokens before it are never key tokens.
        sliding_window: candidates sharing one short window (1024).
        alpha: LSD threshold (2); beta: LCL threshold (-2).

    Returns:
        ``{"longppl", "n_key_token", "ppl", "n_token"}`` (numpy float32 / int, None without key tokens).
    """
    from tokenweight.scoring import token_nll

    model, tokenizer = _model_and_tokenizer(model, tokenizer, "model")
    ids, offsets = encode(tokenizer, text, add_special_tokens=False)
    if evaluator_model is not None:
        evaluator_model, evaluator_tokenizer = _model_and_tokenizer(
            evaluator_model, evaluator_tokenizer, "evaluator_model"
        )
        spans = find_key_spans(text, evaluator_model, evaluator_tokenizer, trunc_len, sliding_window, alpha, beta)
        if save_path is not None:
            save_key_spans(save_path, spans, text)
    elif save_path is None:
        raise ValueError("evaluator_model is None: pass save_path, the key-token file to read the key tokens from")
    else:
        spans = load_key_spans(save_path, text)
    key = spans_to_targets(offsets, spans) if spans else None
    nll = token_nll(model, torch.tensor([ids], dtype=torch.long))[0].cpu().numpy().astype(np.float32)
    ppl = np.exp(nll.mean())
    if not key:
        return {"longppl": None, "n_key_token": None, "ppl": ppl, "n_token": len(ids)}
    return {"longppl": np.exp(nll[key].mean()), "n_key_token": len(key), "ppl": ppl, "n_token": len(ids)}
