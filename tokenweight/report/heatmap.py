"""The token heat map: a text with every token coloured by its weight under each scheme.

This is the paper's Table 1, live: for one sequence, every token's long-context NLL, short-context
NLL, their difference ``d = L_long - L_short`` and the weight each scheme gives it. One panel shows
``d`` on a diverging scale (blue: the long context helped, ``d < 0``; red: it hurt), then one panel
per scheme where colour intensity is proportional to the weight (0 = no colour, the scheme's
largest weight on this text = full colour). Hovering a token shows its numbers (``title``
attribute: no script, works offline, in any browser and in a saved file).

- :func:`heatmap_html` is pure: lists in, an HTML fragment out (its own scoped ``<style>``, every
  token escaped, whitespace and newlines kept with ``white-space: pre-wrap``), so the same fragment
  goes into ``tokenweight show``'s page and into the demo report.
- :func:`compute_heatmap` computes the numbers for any model, scorer and text with the library's
  own scoring (``token_nll``, ``short_context_nll``) and weighting (``WeightingScheme``), exactly
  as training does, and returns the ``sample`` dict that ``build_report`` takes;
  :func:`compute_heatmap_ids` does the same for token ids, a packed row (several documents, each
  attending to itself only) included, whose document boundaries the panels then draw.

Alignment: all lists have one entry per token; entry 0 (the first token, BOS when the tokenizer has
one) has no prediction and is ``None``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

#: RGB of the weight colour and of the diverging d scale (negative, positive)
WEIGHT_RGB = (230, 85, 13)
NEG_RGB, POS_RGB = (33, 102, 172), (178, 24, 43)

_STYLE = """<style>
.tw-heatmap{font-family:system-ui,sans-serif;font-size:14px}
.tw-heatmap .tw-panel{margin:0 0 1.2em 0}
.tw-heatmap h4{margin:.2em 0;font-size:15px}
.tw-heatmap .tw-legend{color:#555;font-size:12px;margin:.1em 0 .4em 0}
.tw-heatmap .tw-text{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;
 white-space:pre-wrap;word-break:break-all;line-height:1.55;border:1px solid #ddd;border-radius:4px;
 padding:.6em;max-height:28em;overflow:auto;background:#fff}
.tw-heatmap .tw-tok{border-radius:2px}
.tw-heatmap .tw-tok:hover{outline:1px solid #000}
</style>"""
_DOC_STYLE = """<style>
.tw-heatmap .tw-doc{display:inline-block;width:0;height:1.2em;vertical-align:text-bottom;
 border-left:3px solid #222;margin:0 2px}
</style>"""


def _num(x) -> float | None:
    """A finite float, or None for an unscored entry (None or NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _rgba(rgb: tuple[int, int, int], alpha: float) -> str:
    return f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{alpha:.3f})"


def _check(tokens, long_nll, short_nll, weights_by_scheme) -> None:
    T = len(tokens)
    for name, seq in (("long_nll", long_nll), ("short_nll", short_nll)):
        if len(seq) != T:
            raise ValueError(
                f"{name} has {len(seq)} entries but tokens has {T}: pass one entry per token (None for unscored)"
            )
    for scheme, ws in weights_by_scheme.items():
        if len(ws) != T:
            raise ValueError(f"weights_by_scheme[{scheme!r}] has {len(ws)} entries but tokens has {T}: one per token")
    if any(not isinstance(t, str) for t in tokens):
        raise ValueError("tokens must be a list of strings (the text of each token)")


def _span(token: str, colour: str | None, title: str) -> str:
    style = f' style="background-color:{colour}"' if colour else ""
    return (
        f'<span class="tw-tok"{style} title="{html.escape(title, quote=True)}">{html.escape(token, quote=False)}</span>'
    )


def _title(i: int, token: str, lo: float | None, sh: float | None, extra: str = "") -> str:
    head = f"#{i} {token!r}"
    if lo is None:
        return head + "\nnot scored (no preceding context)"
    text = (
        f"{head}\nL_long {lo:.3f}   L_short {sh:.3f}   d {lo - sh:+.3f}"
        if sh is not None
        else f"{head}\nL_long {lo:.3f}"
    )
    return text + extra


def heatmap_html(
    tokens: Sequence[str],
    long_nll: Sequence[float | None],
    short_nll: Sequence[float | None],
    weights_by_scheme: Mapping[str, Sequence[float | None]],
    doc_starts: Sequence[int] | None = None,
) -> str:
    """HTML fragment: a ``d`` panel and one panel per scheme, one ``<span>`` per token in each.

    Args:
        tokens: the text of every token (``T`` strings; their concatenation is the text).
        long_nll, short_nll: ``T`` values: NLL of token ``i`` with full / short context (nats);
            None (or NaN) where a token is not scored (entry 0).
        weights_by_scheme: scheme spec -> ``T`` weights (None where not scored), in display order.
        doc_starts: a packed row's document starts (token indices): a bar (``tw-doc``, hover:
            which document starts) before every one after token 0 in each panel; None: one document.

    Colour intensity is ``weight / max weight of that scheme on this text`` (so a higher weight is
    always a more intense colour); for ``d`` it is ``|d| / max |d|``.
    """
    _check(tokens, long_nll, short_nll, weights_by_scheme)
    bars = _boundaries(doc_starts, len(tokens))
    lo = [_num(x) for x in long_nll]
    sh = [_num(x) for x in short_nll]
    d = [a - b if a is not None and b is not None else None for a, b in zip(lo, sh)]
    scored_d = [abs(x) for x in d if x is not None]
    dmax = max(scored_d, default=0.0)
    out = ['<div class="tw-heatmap">', _STYLE + (_DOC_STYLE if doc_starts is not None else "")]

    spans = []
    for i, tok in enumerate(tokens):
        colour = None
        if d[i] is not None and dmax > 0:
            colour = _rgba(NEG_RGB if d[i] < 0 else POS_RGB, abs(d[i]) / dmax)
        spans.append(bars.get(i, "") + _span(tok, colour, _title(i, tok, lo[i], sh[i])))
    n_scored = len(scored_d)
    mean_d = sum(x for x in d if x is not None) / n_scored if n_scored else 0.0
    out.append(
        '<section class="tw-panel" data-scheme="d">'
        "<h4>d = L<sub>long</sub> − L<sub>short</sub></h4>"
        f'<p class="tw-legend">blue: the long context helped (d &lt; 0), red: it hurt (d &gt; 0); '
        f"intensity |d| / {dmax:.3f}; {n_scored} scored tokens, mean d {mean_d:+.3f} nats"
        f"{_doc_legend(doc_starts)}.</p>"
        f'<div class="tw-text">{"".join(spans)}</div></section>'
    )
    for scheme, ws in weights_by_scheme.items():
        w = [_num(x) for x in ws]
        scored = [x for x in w if x is not None]
        wmax = max(scored, default=0.0)
        spans = []
        for i, tok in enumerate(tokens):
            colour = _rgba(WEIGHT_RGB, w[i] / wmax) if w[i] is not None and wmax > 0 else None
            extra = f"\nweight ({scheme}) {w[i]:.3f}" if w[i] is not None else ""
            spans.append(bars.get(i, "") + _span(tok, colour, _title(i, tok, lo[i], sh[i], extra)))
        mean = sum(scored) / len(scored) if scored else 0.0
        zeros = sum(1 for x in scored if x == 0) / len(scored) if scored else 0.0
        out.append(
            f'<section class="tw-panel" data-scheme="{html.escape(scheme, quote=True)}">'
            f"<h4>{html.escape(scheme)}</h4>"
            f'<p class="tw-legend">intensity = weight / {wmax:.3f}; mean weight {mean:.3f}, '
            f"zero weight on {zeros:.1%} of tokens.</p>"
            f'<div class="tw-text">{"".join(spans)}</div></section>'
        )
    out.append("</div>")
    return "\n".join(out)


def _boundaries(doc_starts: Sequence[int] | None, n: int) -> dict[int, str]:
    """token index -> the bar drawn before it, at every document start after token 0."""
    starts = sorted({int(i) for i in doc_starts or []})
    if starts and not (0 <= starts[0] and starts[-1] < n):
        raise ValueError(f"doc_starts {starts} must be token indices in [0, {n})")
    title = "document {k} of {m} starts at token {i} (it sees none of the tokens before the bar)"
    return {
        i: f'<span class="tw-doc" title="{title.format(k=k + 1, m=len(starts), i=i)}"></span>'
        for k, i in enumerate(starts)
        if i > 0
    }


def _doc_legend(doc_starts: Sequence[int] | None) -> str:
    if doc_starts is None:
        return ""
    return (
        f"; a packed row of {len(doc_starts)} documents: a bar marks each start, the first token of a document "
        "is not scored and short windows restart there"
    )


def token_pieces(tokenizer, ids: Sequence[int]) -> list[str]:
    """The text of every token, ``"".join(pieces) == tokenizer.decode(ids)``: the one rule is
    :func:`tokenweight.alignment.token_pieces` (incremental detokenisation; imported here on use, so
    that importing this module does not import torch)."""
    from tokenweight.alignment import token_pieces as pieces

    return pieces(tokenizer, ids)


def compute_heatmap(
    model,
    scorer,
    tokenizer,
    text: str,
    schemes: Sequence,
    window: int,
    stride: int | None = None,
    max_tokens: int = 1024,
    scorer_tokenizer=None,
) -> dict:
    """Long/short NLL and every scheme's weights for the first ``max_tokens`` tokens of ``text``.

    Args:
        model: the causal LM whose long-context NLL is shown (full context).
        scorer: the short-context model; ``None`` or ``model`` itself means self-scoring (window 0
            is then the long pass itself, as in training).
        tokenizer: the models' tokenizer; BOS is prepended when it has one and the encoding lacks it.
        text: the text.
        schemes: weighting specs or ``WeightingScheme`` objects.
        window, stride: ``w`` and ``s`` of the short-context windows (stride None: ``(1 - w/n)·w``).
        max_tokens: the sequence is cut to this many tokens (the long context).
        scorer_tokenizer: the scorer's own tokenizer, when it may differ from ``tokenizer``: a
            different one (``tokenizer_digest``) scores the text in its own tokens, moved onto the
            model's tokens by characters, as ``tokenweight score`` does
            (``tokenweight.alignment.aligned_short_nll``; docs/SCORING.md).

    Returns the ``sample`` dict of ``build_report``: ``tokens``, ``token_ids``, ``long_nll``,
    ``short_nll``, ``weights`` (str(scheme) -> list), one entry per token (entry 0 None), plus
    ``window``, ``stride``, ``self_scored``.
    """
    if not isinstance(max_tokens, int) or max_tokens < 2:
        raise ValueError(f"max_tokens must be an integer >= 2, got {max_tokens!r}")
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos] + ids
    ids = ids[:max_tokens]
    if len(ids) < 2:
        raise ValueError(f"text must hold at least 2 tokens, got {len(ids)}")
    return compute_heatmap_ids(model, scorer, tokenizer, ids, schemes, window, stride, scorer_tokenizer)


def compute_heatmap_ids(
    model, scorer, tokenizer, ids, schemes, window: int, stride=None, scorer_tokenizer=None, doc_lengths=None
) -> dict:
    """:func:`compute_heatmap`'s ``sample`` of a sequence of token ids (a prepared row, BOS first
    when the data has one), the same computation.

    ``doc_lengths`` (a packed row, :mod:`tokenweight.documents`; summing to ``len(ids)``): the long
    pass is document-masked (``token_nll(..., doc_lengths=...)``), the short windows restart at each
    document (each document is scored alone, which is exact: self-scoring reuses its slice of the
    long pass as window 0), a document's first token is not scored (None, as token 0), and the
    weights are those of the row with those tokens masked out, as a training step on the row gives
    them. The sample then also holds ``doc_starts`` (the first token of every document), which
    :func:`sample_html` draws as boundaries.
    """
    import torch

    from tokenweight.identity import tokenizer_digest
    from tokenweight.scoring import self_scored_short_nll, short_context_nll, token_nll
    from tokenweight.weighting import WeightingScheme
    from tokenweight.windows import default_stride

    if not isinstance(window, int) or window < 2:
        raise ValueError(f"window must be an integer >= 2, got {window!r}")
    parsed = [WeightingScheme.parse(s) for s in schemes]
    if not parsed:
        raise ValueError("schemes must name at least one weighting scheme")
    ids = [int(i) for i in ids]
    if len(ids) < 2:
        raise ValueError(f"ids must hold at least 2 tokens, got {len(ids)}")
    bos = getattr(tokenizer, "bos_token_id", None)
    n = len(ids)
    stride = default_stride(n, window) if stride is None else stride
    x = torch.tensor([ids], dtype=torch.long)
    self_scored = scorer is None or scorer is model
    aligned = (
        not self_scored
        and scorer_tokenizer is not None
        and tokenizer_digest(scorer_tokenizer) != tokenizer_digest(tokenizer)
    )

    def short_of(x, long):  # [1, m] ids, their [1, m-1] long NLL -> [1, m-1] short NLL
        if self_scored:
            return self_scored_short_nll(model, x, long, window, stride, bos_token_id=bos)
        if aligned:
            from tokenweight.alignment import aligned_short_nll

            return aligned_short_nll(scorer, x.tolist(), tokenizer, scorer_tokenizer, window, stride).nll
        return short_context_nll(scorer, x, window, stride, bos_token_id=bos)

    if doc_lengths is None:
        long = token_nll(model, x)  # [1, n-1]
        short, scored = short_of(x, long), None
    else:
        from tokenweight.documents import check_doc_lengths, document_starts, target_mask

        doc_lengths = [int(d) for d in doc_lengths]
        check_doc_lengths([doc_lengths], n)
        if sum(doc_lengths) != n:
            raise ValueError(f"doc_lengths {doc_lengths} must sum to the {n} ids (cut the padding off)")
        long = token_nll(model, x, doc_lengths=[doc_lengths])  # [1, n-1], 0 at documents' first tokens
        short = torch.zeros_like(long)
        start = 0
        for length in doc_lengths:  # short windows restart at every document: each scored alone
            if length >= 2:
                doc = slice(start, start + length - 1)  # entries of the document's tokens 1 .. length-1
                short[:, doc] = short_of(x[:, start : start + length], long[:, doc]).to(short.device)
            start += length
        scored = target_mask([doc_lengths], n, device=long.device)
    from tokenweight.exposure import effective_context

    prefix = effective_context(n, None if doc_lengths is None else [doc_lengths], device=long.device)
    weights = {}
    for scheme in parsed:  # exposure balancing (exact:<α>) reads the positions, its tail defaults to w
        w = scheme(long, short, mask=scored, prefix=prefix, tail=window)
        weights[str(scheme)] = _unscored([None] + w[0].tolist(), scored)
    sample = {
        "tokens": token_pieces(tokenizer, ids),
        "token_ids": ids,
        "long_nll": _unscored([None] + long[0].tolist(), scored),
        "short_nll": _unscored([None] + short[0].tolist(), scored),
        "weights": weights,
        "window": window,
        "stride": stride,
        "self_scored": self_scored,
    }
    if doc_lengths is not None:
        sample["doc_starts"] = document_starts([doc_lengths], n)[0].nonzero()[:, 0].tolist()
    return sample


def _unscored(values: list, scored) -> list:
    """``values`` (one per token) with None at the tokens that ``scored`` (``[1, n-1]`` bool, entry
    ``j`` is token ``j+1``; None: every token after the first) leaves unscored."""
    if scored is not None:
        for j, ok in enumerate(scored[0].tolist()):
            if not ok:
                values[j + 1] = None
    return values


def sample_html(sample: Mapping) -> str:
    """:func:`heatmap_html` of a ``sample`` dict (the output of :func:`compute_heatmap`), with the
    document boundaries of a packed row when it has ``doc_starts``."""
    return heatmap_html(
        sample["tokens"], sample["long_nll"], sample["short_nll"], sample["weights"], sample.get("doc_starts")
    )
