"""LongPPL (Fang et al., ICLR 2025): perplexity over the tokens that need long context.

Plain perplexity on long documents barely moves when a model gets better at long context, because
few tokens depend on far context. LongPPL restricts the average to *key tokens*: tokens that an
evaluator model predicts much better with the full context than with a truncated one, and predicts
well. This module holds the parts of ``PKU-ML/LongPPL`` (``longppl/longppl.py``), each one rule:

- :func:`key_token_mask`: with the evaluator's NLLs ``L_long`` and ``L_short`` (its short context:
  :func:`tokenweight.scoring.truncated_context_nll`), a token at position ``p`` is a key token when
  ``p >= trunc_len``, ``LSD = L_short - L_long > alpha`` and ``L_long < -beta`` (``LCL > beta``),
  compared in float32 as the original does;
- :func:`evaluator_key_mask`: the evaluator's passes on a batch of its own token ids;
- :func:`encode`: token ids and character offsets (the decode rule of the original's
  ``compute_offsets`` for a tokenizer without offsets);
- :func:`merge_spans` / :func:`spans_to_targets`: key tokens as character spans (adjacent spans
  merged) and back onto another tokenization (the original's ``merge_intervals`` and
  ``cal_overlap``), so that the evaluator may use another tokenizer than the evaluated model;
- :func:`save_key_spans` / :func:`load_key_spans`: the original's key-token file, plus a line that
  ties it to its text.

``LongPPL = exp(mean NLL of the evaluated model over the key tokens)``. The drop-in
:func:`tokenweight.evaluate.longppl_fang.compute_longppl` and ``tokenweight eval``
(:mod:`tokenweight.evaluate.longppl_suite`) are both built from these functions.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch

from tokenweight.errors import UsageError

#: the second line of a key-token file written here (the original reads only the first)
_TEXT_LINE = re.compile(r"^# tokenweight LongPPL key spans: sha256=([0-9a-f]{64}) chars=(\d+)$")
_SPAN = re.compile(r"^\s*\[\s*(\d+)\s*,\s*(\d+)\s*\]\s*$")


def key_token_mask(
    long_nll: torch.Tensor,
    short_nll: torch.Tensor,
    *,
    trunc_len: int,
    alpha: float = 2.0,
    beta: float = -2.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Key tokens of LongPPL from the evaluator's NLLs, ``[b, n-1]`` bool.

    Args:
        long_nll: ``[b, n-1]`` evaluator NLL with full context (entry ``j`` scores position ``j+1``).
        short_nll: ``[b, n-1]`` evaluator NLL with Fang et al.'s short context (same alignment).
        trunc_len: positions ``< trunc_len`` (entries ``j < trunc_len - 1``) are never key tokens.
        alpha: LSD threshold (strict ``>``); beta: LCL threshold (strict ``>``).
        mask: ``[b, n-1]`` bool, True where the target is a real token; None means all.
    """
    if long_nll.shape != short_nll.shape or long_nll.ndim != 2:
        raise ValueError(
            f"long_nll and short_nll must be 2-D of equal shape, got {tuple(long_nll.shape)} "
            f"and {tuple(short_nll.shape)}"
        )
    if not isinstance(trunc_len, int) or trunc_len < 1:
        raise ValueError(f"trunc_len must be an integer >= 1, got {trunc_len!r}")
    long32, short32 = long_nll.float(), short_nll.float()
    key = ((short32 - long32) > alpha) & (long32 < -beta)  # the original's float32 comparisons
    key[:, : trunc_len - 1] = False
    if mask is not None:
        if mask.shape != long_nll.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} must equal nll shape {tuple(long_nll.shape)}")
        key &= mask.to(key.device).bool()
    return key


def evaluator_key_mask(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    trunc_len: int,
    sliding_window: int,
    alpha: float = 2.0,
    beta: float = -2.0,
    batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(key, candidates)``, both ``[b, n-1]`` bool on the CPU, of a batch of the evaluator's ids.

    One full pass (``token_nll``) and Fang et al.'s windows (``truncated_context_nll``, the window at
    0 taken from the full pass: its short context is the full one). ``candidates``: the real tokens
    at positions ``>= trunc_len``, those that could be key tokens.
    """
    from tokenweight.scoring import token_nll, truncated_context_nll

    long_nll = token_nll(model, input_ids, attention_mask)
    short = truncated_context_nll(
        model,
        input_ids,
        trunc_len,
        sliding_window,
        attention_mask=attention_mask,
        long_nll=long_nll,
        batch_size=batch_size,
    )
    target = torch.ones_like(long_nll, dtype=torch.bool) if attention_mask is None else attention_mask[:, 1:].bool()
    target = target.to(long_nll.device)
    key = key_token_mask(long_nll, short, trunc_len=trunc_len, alpha=alpha, beta=beta, mask=target)
    candidates = target.clone()
    candidates[:, : trunc_len - 1] = False
    return key.cpu(), candidates.cpu()


def padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(input_ids [b, n], attention_mask [b, n] or None when no row is padded)``, right-padded."""
    n = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), n, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, (None if bool(mask.all()) else mask)


def decode_offsets(tokenizer, ids: list[int]) -> list[tuple[int, int]]:
    """Character offsets of ``ids`` for a tokenizer without offsets: the original's
    ``compute_offsets`` (token ``i`` is as long as ``decode(ids[i-1:i+1])`` minus ``decode(ids[i-1:i])``,
    token 0 as ``decode(ids[:1])``, laid end to end from 0). Special tokens are decoded as empty
    (``skip_special_tokens``), so a BOS takes no characters; on ids without special tokens this is
    the original's rule exactly."""
    offsets, pointer = [], 0
    for i in range(len(ids)):
        if i == 0:
            length = len(tokenizer.decode(ids[:1], skip_special_tokens=True))
        else:
            pair = tokenizer.decode(ids[i - 1 : i + 1], skip_special_tokens=True)
            length = len(pair) - len(tokenizer.decode(ids[i - 1 : i], skip_special_tokens=True))
        offsets.append((pointer, pointer + length))
        pointer += length
    return offsets


def encode(tokenizer, text: str, *, add_special_tokens: bool) -> tuple[list[int], list[tuple[int, int]]]:
    """``(ids, offsets)`` of ``text``: the tokenizer's own character offsets when it has them (a fast
    tokenizer), else :func:`decode_offsets` (as the original does for the evaluated model)."""
    if getattr(tokenizer, "is_fast", False):
        try:
            enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        except NotImplementedError:
            enc = None
        if enc is not None and "offset_mapping" in enc:
            return list(enc["input_ids"]), [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    ids = list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])
    return ids, decode_offsets(tokenizer, ids)


def merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Character spans of key tokens, in token order, with every span that starts where the one
    before it ends merged into it (the original's ``merge_intervals``)."""
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a == merged[-1][1]:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((int(a), int(b)))
    return merged


def spans_to_targets(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """The NLL entries (``[n-1]`` alignment: token ``i`` is entry ``i-1``) of the tokens whose
    character span lies inside one of ``spans`` (sorted): the original's ``cal_overlap``.

    Token 0 has no NLL entry; the original would append ``-1`` for it (the last entry), which only
    a span starting at character 0 can reach; it is skipped here.
    """
    out, i, j = [], 0, 0
    while i < len(offsets) and j < len(spans):
        (a0, a1), (b0, b1) = offsets[i], spans[j]
        if a0 >= b0 and a1 <= b1:
            if i > 0:
                out.append(i - 1)
            i += 1
        elif a0 < b0:
            i += 1
        else:
            j += 1
    return out


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save_key_spans(path: str | os.PathLike, spans: list[tuple[int, int]], text: str) -> None:
    """Write ``spans`` as the original's key-token file (one line ``[a, b];[c, d]``, which
    ``PKU-ML/LongPPL``'s ``load_key_token`` reads), then a second line with the text's sha256 and
    length (the original reads only the first line), atomically."""
    from tokenweight.io_utils import atomic_write_text

    line = ";".join(f"[{a}, {b}]" for a, b in spans)
    atomic_write_text(path, f"{line}\n# tokenweight LongPPL key spans: sha256={text_digest(text)} chars={len(text)}\n")


def load_key_spans(path: str | os.PathLike, text: str) -> list[tuple[int, int]] | None:
    """The key spans saved at ``path`` for ``text``; None when the file holds none (as the
    original's ``load_key_token`` for an empty file).

    A file written here names its text: one for another text is refused (``UsageError``). A file of
    the original (no second line) is refused when a span does not fit in ``text``. A file that is
    not a key-token file is refused.
    """
    path = Path(path)
    fix = "pass the key-token file saved for this text, or pass evaluator_model to find the key tokens again"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UsageError(f"key-token file {str(path)!r} does not exist: {fix}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"key-token file {str(path)!r} cannot be read ({type(e).__name__}): {fix}") from None
    first = lines[0] if lines else ""
    spans = []
    for piece in first.split(";") if first.strip() else []:
        m = _SPAN.match(piece)
        if m is None:
            raise UsageError(
                f"{str(path)!r} is not a LongPPL key-token file (its first line is not '[a, b];...'): {fix}"
            )
        spans.append((int(m.group(1)), int(m.group(2))))
    tail = [ln for ln in lines[1:] if ln.strip()]
    if tail:
        m = _TEXT_LINE.match(tail[0].strip())
        if m is None:
            raise UsageError(f"{str(path)!r} is not a LongPPL key-token file (unexpected second line): {fix}")
        if m.group(1) != text_digest(text):
            raise UsageError(
                f"key-token file {str(path)!r} was saved for another text ({m.group(2)} characters, sha256 "
                f"{m.group(1)[:12]}...; this text: {len(text)} characters, sha256 {text_digest(text)[:12]}...): {fix}"
            )
    elif spans and max(b for _, b in spans) > len(text):
        raise UsageError(
            f"key-token file {str(path)!r} was saved for another text (a span ends at character "
            f"{max(b for _, b in spans)}, this text has {len(text)}): {fix}"
        )
    return spans or None
