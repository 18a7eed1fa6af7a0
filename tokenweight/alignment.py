"""Two tokenizations of one text, related by character spans: NLL moved between them, short windows mapped.

A frozen scorer with another tokenizer than the data's scores the *text* of every training sequence
(docs/SCORING.md, "A scorer with another tokenizer"). This module holds the rules, as functions on
character spans (``[T, 2]`` start/end offsets into the text, end exclusive), so that any caller
(the score cache, an evaluator with its own tokenizer) maps values between tokenizations the same way:

- :func:`token_spans`: the text of token ids and the character span of every token. The data
  tokenizer's offset mapping of the decoded text must give back exactly the same ids (checked);
  otherwise the spans come from decoding token by token (incremental detokenisation); a tokenizer
  for which neither reproduces the text is refused (``ValueError``).
- :func:`encode_spans`: a text's tokens and their character spans (a fast tokenizer's offsets).
- :func:`split_shared`: a character covered by ``k`` tokens (byte-level pieces of one character)
  is cut into ``k`` equal parts, one per token in order, so that spans never overlap.
- :func:`owners`, :func:`overlaps`, :func:`transfer`: which token of B holds the first character
  of each token of A; the character overlaps of every pair; values of A's tokens distributed over
  B's tokens in proportion to the characters they share, so that the total is conserved.
- :func:`aligned_windows`: the scorer's short windows for the data's short windows.
- :func:`aligned_short_nll`: the short-context NLL of data sequences under a scorer with another
  tokenizer, in the data's token frame (what ``tokenweight score`` caches).

Spans must be monotone (starts and ends non-decreasing), which offsets of a left-to-right
tokenization are; :func:`split_shared` keeps them so. Zero-width tokens (special tokens, pieces of a
character decoded by the token that completes it) hold no character.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn


@dataclass
class TokenText:
    """The text of a token sequence: ``spans[j] = (start, end)`` of token ``j`` in ``text``.

    ``exact``: True when the spans are the tokenizer's own offsets of ``text`` (re-encoding
    ``text`` gives back exactly the token ids); False when they come from decoding token by token.
    Special tokens (BOS, EOS, UNK, ...) are not part of the text: zero-width at the end of the
    previous token.
    """

    text: str
    spans: Tensor  # [T, 2] int64
    exact: bool


def _spans(offsets) -> Tensor:
    """Offsets (pairs) -> ``[T, 2]`` int64; ``None`` unless monotone (starts and ends non-decreasing,
    no span ending before it starts)."""
    a = torch.from_numpy(np.asarray(offsets, dtype=np.int64).reshape(-1, 2))
    ok = bool((a[:, 0] <= a[:, 1]).all()) and bool((a[1:] >= a[:-1]).all())
    return a if ok else None


def token_pieces(tokenizer, ids: Sequence[int]) -> list[str]:
    """The text every token adds, such that ``"".join(pieces) == tokenizer.decode(ids)`` for decoders
    whose output for a prefix of ``ids`` is a prefix of their output for ``ids``.

    Incremental detokenisation (as vLLM and HF's TextStreamer): each piece is what decoding a short
    window ending at the token adds to decoding the window without it; a token that ends inside a
    character gets an empty piece and the token that completes it gets the character. Two short
    decodes per token.
    """
    ids = [int(x) for x in ids]

    def decode(a: int, b: int) -> str:
        return tokenizer.decode(ids[a:b], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    pieces, prefix, read = [], 0, 0
    for i in range(len(ids)):
        before, after = decode(prefix, read), decode(prefix, i + 1)
        if len(after) > len(before) and (not after.endswith("\ufffd") or i == len(ids) - 1):
            pieces.append(after[len(before) :])
            prefix, read = read, i + 1
        else:
            pieces.append("")
    return pieces


def token_spans(tokenizer, rows: Sequence[Sequence[int]]) -> list[TokenText]:
    """The text of every row of token ids and the character span of every token (:class:`TokenText`).

    The text is the decoding of the row's non-special tokens (no clean-up of spaces). When the
    tokenizer's offset mapping of that text maps back to exactly the same ids, the offsets are the
    spans (``exact``); otherwise each token's span is the text its decoding adds
    (:func:`token_pieces`). ``ValueError`` when those pieces do not make up the text either: the
    tokens have no faithful character spans. All rows are decoded and re-encoded in one batch.
    """
    rows = [[int(x) for x in r] for r in rows]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    content = [[x for x in r if x not in special] for r in rows]
    texts = tokenizer.batch_decode(content, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    offsets: list = [None] * len(rows)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        for r, (ids, offs) in enumerate(zip(enc["input_ids"], enc["offset_mapping"])):
            if list(ids) == content[r]:
                offsets[r] = _spans(offs)
    out = []
    for r, row in enumerate(rows):
        spans, exact = offsets[r], offsets[r] is not None
        if spans is None:
            pieces = token_pieces(tokenizer, content[r])
            if "".join(pieces) != texts[r]:
                raise ValueError(
                    f"row {r}: neither the tokenizer's offsets nor decoding token by token reproduce the text of "
                    "its tokens, so they have no character spans"
                )
            ends = torch.tensor([len(p) for p in pieces], dtype=torch.long).cumsum(0)
            spans = torch.stack([ends - torch.tensor([len(p) for p in pieces], dtype=torch.long), ends], 1)
        is_text = torch.tensor([x not in special for x in row], dtype=torch.bool)
        full = torch.zeros(len(row), 2, dtype=torch.long)
        full[is_text] = spans.reshape(-1, 2)
        # special tokens: zero-width at the end of the previous text token (ends are non-decreasing)
        end = torch.cummax(torch.where(is_text, full[:, 1], 0), 0).values
        full[~is_text] = end[~is_text, None]
        out.append(TokenText(texts[r], full, exact))
    return out


def encode_spans(tokenizer, texts: Sequence[str]) -> list[tuple[list[int], Tensor]]:
    """``(ids, spans [T, 2] int64)`` of every text: its tokens without special tokens and their
    character offsets.

    The text is plain text: a special token's string in it (``<|endoftext|>`` typed in a document)
    is tokenized as characters (``split_special_tokens``). Needs a fast tokenizer (``ValueError``
    otherwise: a slow one has no offset mapping) and refuses offsets that are not monotone.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no offset mapping (it is not a fast tokenizer)")
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True)
    out = []
    for r, (ids, offs) in enumerate(zip(enc["input_ids"], enc["offset_mapping"])):
        spans = _spans(offs)
        if spans is None:
            raise ValueError(f"text {r}: the tokenizer's character offsets are not monotone")
        out.append(([int(x) for x in ids], spans))
    return out


def split_shared(spans) -> Tensor:
    """``[T, 2]`` monotone spans -> ``[T, 2]`` float64 spans that never overlap: a character covered by
    ``k`` tokens (the byte-level pieces of one character, which a byte-level BPE spreads over
    consecutive tokens: ``naÃ`` + ``¯ve`` both cover ``ï``) is cut into ``k`` equal parts, given to
    those tokens in order. A token shares at most its first and its last character, so its span
    stays one interval: ``(a + r/k, b - 1 + (r' + 1)/k')`` with ``r``, ``k`` its rank among and the
    number of the tokens covering character ``a`` (``r'``, ``k'`` for ``b - 1``). Spans covering
    their characters alone come back exactly; zero-width spans are unchanged."""
    s = torch.as_tensor(spans, dtype=torch.float64).reshape(-1, 2)
    out = s.clone()
    a, b = s[:, 0].long(), s[:, 1].long()
    full = b > a
    if not bool(full.any()):
        return out
    ones = torch.ones(int(full.sum()), dtype=torch.long)
    cover = torch.zeros(int(b.max()) + 2, dtype=torch.long)
    cover.index_add_(0, a[full], ones).index_add_(0, b[full], -ones)
    cover = cover.cumsum(0)  # tokens covering each character
    ends, j = s[:, 1].contiguous(), torch.arange(s.shape[0])[full]

    def part(c: Tensor) -> tuple[Tensor, Tensor]:  # (rank of the token among those covering c, their number)
        first = torch.searchsorted(ends, c.to(torch.float64), right=True)  # first token ending after c
        return (j - first).to(torch.float64), cover[c].to(torch.float64)

    r, k = part(a[full])
    out[full, 0] = a[full].to(torch.float64) + r / k
    last = b[full] - 1
    r, k = part(last)
    out[full, 1] = last.to(torch.float64) + (r + 1) / k
    return out


def owners(src: Tensor, dst: Tensor) -> Tensor:
    """``[S]`` long: for every token of ``src`` (``[S, 2]`` spans) the last token of ``dst`` (``[D, 2]``,
    monotone) that starts at or before the src token's first character (0 when none does).

    A src token that begins in a gap between dst tokens belongs to the dst token before the gap; of
    zero-width dst tokens at the same place, the last (the one that holds the character) is taken.
    """
    src = torch.as_tensor(src, dtype=torch.float64).reshape(-1, 2)
    dst = torch.as_tensor(dst, dtype=torch.float64).reshape(-1, 2)
    if dst.shape[0] == 0:
        return torch.zeros(src.shape[0], dtype=torch.long)
    return (torch.searchsorted(dst[:, 0].contiguous(), src[:, 0].contiguous(), right=True) - 1).clamp(min=0)


def overlaps(src: Tensor, dst: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Every pair of a src and a dst token that share characters: ``(src_index [P], dst_index [P],
    characters [P] float64)``, ordered by src then dst. Both span tensors monotone (``[S, 2]``,
    ``[D, 2]``; apply :func:`split_shared` first when tokens may share a character). Linear in
    ``S + D + P``."""
    src = torch.as_tensor(src, dtype=torch.float64).reshape(-1, 2)
    dst = torch.as_tensor(dst, dtype=torch.float64).reshape(-1, 2)
    lo = torch.searchsorted(dst[:, 1].contiguous(), src[:, 0].contiguous(), right=True)  # first dst ending after
    hi = torch.searchsorted(dst[:, 0].contiguous(), src[:, 1].contiguous(), right=False)  # first dst starting at/after
    count = (hi - lo).clamp(min=0)
    si = torch.repeat_interleave(torch.arange(src.shape[0]), count)
    base = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    dj = lo[si] + torch.arange(si.shape[0]) - base
    chars = (torch.minimum(src[si, 1], dst[dj, 1]) - torch.maximum(src[si, 0], dst[dj, 0])).clamp(min=0)
    keep = chars > 0
    return si[keep], dj[keep], chars[keep]


def transfer(values: Tensor, src: Tensor, dst: Tensor, fallback: Tensor | None = None) -> Tensor:
    """Distribute ``values`` ([S], one per src token) over the dst tokens: ``[D]`` float64.

    Src token ``i`` gives dst token ``j`` the share ``|span_i ∩ span_j| / Σ_j' |span_i ∩ span_j'|``
    of its value, so ``out.sum() == values.sum()`` (up to float64 rounding). A src token that shares
    no character with any dst token (zero-width, or in a gap) gives all of it to ``fallback[i]``
    (default: :func:`owners`). One-to-one tokenizations give back ``values`` exactly.
    """
    values = torch.as_tensor(values).reshape(-1).to(torch.float64)
    src = torch.as_tensor(src, dtype=torch.float64).reshape(-1, 2)
    dst = torch.as_tensor(dst, dtype=torch.float64).reshape(-1, 2)
    if values.shape[0] != src.shape[0]:
        raise ValueError(f"values has {values.shape[0]} entries but src has {src.shape[0]} spans")
    out = torch.zeros(dst.shape[0], dtype=torch.float64)
    if dst.shape[0] == 0 or values.numel() == 0:
        return out
    si, dj, chars = overlaps(src, dst)
    total = torch.zeros(src.shape[0], dtype=torch.float64).index_add_(0, si, chars)
    out.index_add_(0, dj, values[si] * (chars / total[si]))
    alone = total == 0
    if bool(alone.any()):
        where = owners(src, dst) if fallback is None else torch.as_tensor(fallback, dtype=torch.long).reshape(-1)
        out.index_add_(0, where[alone], values[alone])
    return out


def aligned_windows(
    data_spans: Tensor, scorer_spans: Tensor, data_windows: Sequence[tuple[int, int, int]], scorer_bos: bool
) -> list[tuple[int, int, int]]:
    """The scorer's windows ``(start, first, end)`` (scorer token positions) for the data's windows.

    ``data_windows``: ``(t, first, end)`` of every short window of a data sequence: it holds data
    tokens ``t … end-1`` and scores ``first … end-1`` (:func:`tokenweight.windows.plan_windows`). Scorer token
    ``i >= 1`` belongs to the data token :func:`owners` gives (the one holding its first
    character); it is scored by the data window that scores that data token, so that every scorer
    token whose owner is a data target is scored exactly once (owner 0 is never a target, as data
    token 0 is not). The scorer window of data window ``k`` holds the scorer tokens from the first
    one owned by data token ``t`` or later through its last scored token, so its context is the
    text of the data window (window 0 starts at scorer token 0); when that would leave its first
    scored token without context, it starts one token earlier. Windows with nothing to score are
    dropped. ``scorer_bos``: scorer token 0 is the scorer's BOS (it owns nothing).
    data_spans: [L, 2], scorer_spans: [M, 2], both monotone.
    """
    own = owners(scorer_spans, data_spans)
    if scorer_bos and own.numel():
        own[0] = 0
    out = []
    for t, first, end in data_windows:
        p = max(int(torch.searchsorted(own, first)), 1)
        q = int(torch.searchsorted(own, end))
        if q <= p:
            continue
        u = 0 if t == 0 else min(int(torch.searchsorted(own, t)), p - 1)
        out.append((u, p, q))
    return out


class AlignedScores(NamedTuple):
    """What :func:`aligned_short_nll` returns."""

    nll: Tensor  # [b, n-1] float32, in the data's token frame
    decoded_per_token: int  # rows whose spans came from decoding token by token (offsets round trip not exact)


def aligned_short_nll(
    model: nn.Module,
    rows: Sequence[Sequence[int]],
    data_tokenizer,
    scorer_tokenizer,
    window: int,
    stride: int,
    *,
    n: int | None = None,
    batch_size: int | None = None,
) -> AlignedScores:
    """Short-context NLL of data token sequences under a scorer with another tokenizer (docs/SCORING.md).

    Each row (data token ids, BOS first when the data has one) is decoded to text with the
    character span of every data token (:func:`token_spans`); the text is tokenized for the scorer
    (:func:`encode_spans`), after the scorer's BOS when it has one. The data's short windows
    (``window``/``stride`` in data tokens, the windows of :mod:`tokenweight.windows`) become the scorer's
    (:func:`aligned_windows`), run as in ``short_context_nll`` (same batching, the first token of
    every later window replaced by the scorer's BOS). Every scored scorer token's NLL is then
    distributed over the data tokens by character overlap (:func:`transfer` of
    :func:`split_shared` spans; a share falling on data token 0, never a target, goes to token 1),
    so a row's total is the total NLL of its scored scorer tokens. With the data's own tokenizer as
    the scorer's, the result is exactly ``short_context_nll``'s.

    Returns :class:`AlignedScores`: ``nll`` ``[b, n-1]`` float32 (entry ``j`` is data token
    ``j+1``, 0 past a row's end; ``n`` default: the longest row) on the CPU. ``ValueError`` for a
    row without character spans or a scorer tokenizer without offsets.
    """
    from tokenweight.scoring import _model_device, _run_windows
    from tokenweight.windows import check_window, plan_windows, windows_per_pass

    check_window(window, stride)
    rows = [[int(x) for x in r] for r in rows]
    n = max((len(r) for r in rows), default=0) if n is None else n
    result = torch.zeros(len(rows), max(n - 1, 0), dtype=torch.float32)
    if not rows:
        return AlignedScores(result, 0)
    texts = token_spans(data_tokenizer, rows)
    encoded = encode_spans(scorer_tokenizer, [t.text for t in texts])
    bos = getattr(scorer_tokenizer, "bos_token_id", None)
    groups: dict[int, list[tuple]] = defaultdict(list)
    plans, scorer_rows = [], []
    for r, (row, tt, (ids, spans)) in enumerate(zip(rows, texts, encoded)):
        if bos is not None:
            ids, spans = [bos, *ids], torch.cat([torch.zeros(1, 2, dtype=torch.long), spans])
        dsp, ssp = split_shared(tt.spans), split_shared(spans)
        data_windows = sorted(
            (w[1], w[2], w[3]) for g in plan_windows([len(row)], window, stride, False).values() for w in g
        )
        wins = aligned_windows(dsp, ssp, data_windows, bos is not None)
        for u, p, q in wins:
            groups[q - u].append((r, u, p, q))
        plans.append((dsp, ssp, wins))
        scorer_rows.append(ids)
    width = max(len(s) for s in scorer_rows)
    device = _model_device(model)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    for r, s in enumerate(scorer_rows):
        ids[r, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    out = torch.zeros(len(rows), max(width - 1, 0), dtype=torch.float32, device=device)
    per_pass = batch_size or windows_per_pass(max([window, *groups]))
    _run_windows(model, ids.to(device), groups, per_pass, out, bos, [bos is not None] * len(rows))
    out = out.cpu()
    for r, (dsp, ssp, wins) in enumerate(plans):
        if not wins or len(rows[r]) < 2:
            continue
        targets = torch.cat([torch.arange(p, q) for _, p, q in wins])
        moved = transfer(out[r, targets - 1], ssp[targets], dsp, owners(ssp[targets], dsp))
        moved[1] += moved[0]
        result[r, : len(rows[r]) - 1] = moved[1:].to(torch.float32)
    return AlignedScores(result, sum(not t.exact for t in texts))
