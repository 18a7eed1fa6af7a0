"""Episode recall: can the model reproduce a value it saw far back in the document?

Corpora prepared with long-range *episodes* (docs/ARCHITECTURE.md data contract) hold spans
``[def_start, def_end, use_start, use_end]``: the tokens ``input_ids[use_start:use_end]`` repeat the
value ``input_ids[def_start:def_end]`` defined ``distance = use_start - def_start`` tokens earlier.
Once the cue before the use site is read, the value is predictable *only* by copying it from the
definition, so teacher-forced prediction of the value is an in-domain long-range probe that small,
briefly trained models can already pass, and it can be split by distance (below the native
window ``w`` versus beyond it).

Per episode, at the use site (teacher forcing, so the value's own earlier tokens are given):

- token accuracy: share of the value's tokens that are the model's argmax prediction;
- exact match: 1 when every value token is the argmax;
- log-prob: sum (and mean per token) of ``log p(value token | prefix)``.

One forward pass per batch of sequences, on the model's device; the vocabulary projection is
computed only at the positions that predict value tokens, in chunks
(:func:`tokenweight.evaluate.logprobs.logprobs_at`: never the full ``[b, n, V]`` logits).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tokenweight.evaluate.lm_metrics import check_edges


def _check_episode(ep: Sequence[int], row: int, ids: torch.Tensor, length: int) -> tuple[int, int, int, int]:
    if len(ep) != 4:
        raise ValueError(f"episode {list(ep)} of row {row} must be [def_start, def_end, use_start, use_end]")
    ds, de, us, ue = (int(x) for x in ep)
    if not (0 <= ds < de <= us < ue <= length) or de - ds != ue - us:
        raise ValueError(
            f"episode {[ds, de, us, ue]} of row {row} is invalid for a sequence of length {length}: "
            "need 0 <= def_start < def_end <= use_start < use_end <= length and equal span lengths"
        )
    if not torch.equal(ids[ds:de], ids[us:ue]):
        raise ValueError(f"episode {[ds, de, us, ue]} of row {row}: the use span does not repeat the definition")
    return ds, de, us, ue


@torch.no_grad()
def score_episodes(
    model,
    input_ids: torch.Tensor,
    episodes: Sequence[Sequence[Sequence[int]]],
    attention_mask: torch.Tensor | None = None,
    doc_lengths: Sequence[Sequence[int]] | None = None,
) -> list[dict]:
    """Teacher-forced recall of every episode in a batch.

    Args:
        model: a HF causal LM.
        input_ids: ``[b, n]`` token ids (right-padded when rows differ in length).
        episodes: per row, a list of ``[def_start, def_end, use_start, use_end]`` spans.
        attention_mask: ``[b, n]`` (1 real, 0 padding) or None.
        doc_lengths: packed rows (:mod:`tokenweight.documents`, summing to each row's length): the
            forward pass attends within each document only, positions restarting at 0, so a
            value is recalled from its own document; every episode must lie inside one document.
            None: one document per row (the pass is the plain one, as always).

    Returns:
        One dict per episode, in row order then episode order: ``row``, ``distance``,
        ``tokens`` (value length), ``correct`` (value tokens predicted by argmax), ``exact``
        (bool), ``logprob`` (sum of the value tokens' log-probs, nats).
    """
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be 2-D [b, n], got shape {tuple(input_ids.shape)}")
    b, n = input_ids.shape
    if len(episodes) != b:
        raise ValueError(f"episodes must have one list per row: {len(episodes)} lists for {b} rows")
    lengths = [n] * b if attention_mask is None else [int(x) for x in attention_mask.sum(1)]
    spans = [[_check_episode(ep, r, input_ids[r], lengths[r]) for ep in eps] for r, eps in enumerate(episodes)]
    if not any(spans):
        return []
    from tokenweight.evaluate.logprobs import logprobs_at

    device = next(model.parameters()).device
    if doc_lengths is not None:
        forward = _packed_forward(model, input_ids, spans, lengths, doc_lengths, device)
        if forward is None:  # flash-attention: one flattened row at a time
            return [
                {**s, "row": r}
                for r in range(b)
                for s in score_episodes(
                    model, input_ids[r : r + 1, : lengths[r]], episodes[r : r + 1], None, doc_lengths[r : r + 1]
                )
            ]
    else:
        forward = {"attention_mask": None if attention_mask is None else attention_mask.to(device)}
    input_ids = input_ids.to(device)
    # Position p predicts token p+1: the value tokens us..ue-1 are predicted at us-1..ue-2.
    keep = torch.zeros(b, n, dtype=torch.bool, device=device)
    for r, eps in enumerate(spans):
        for _, _, us, ue in eps:
            keep[r, us - 1 : ue - 1] = True
    rows, pos = keep.nonzero(as_tuple=True)  # K kept positions in row-major order
    targets = input_ids[rows, pos + 1]
    tok_logp, hit = logprobs_at(model, keep, targets, input_ids=input_ids, use_cache=False, **forward)
    tok_logp, hit = tok_logp.cpu(), hit.cpu()
    # index of (row, position) in the kept order, to cut each episode's slice
    index = torch.full((b, n), -1, dtype=torch.long)
    index[rows.cpu(), pos.cpu()] = torch.arange(rows.numel())
    out = []
    for r, eps in enumerate(spans):
        for ds, _, us, ue in eps:
            sel = index[r, us - 1 : ue - 1]
            correct = int(hit[sel].sum())
            out.append(
                {
                    "row": r,
                    "distance": us - ds,
                    "tokens": ue - us,
                    "correct": correct,
                    "exact": correct == ue - us,
                    "logprob": float(tok_logp[sel].double().sum()),
                }
            )
    return out


def _packed_forward(model, input_ids, spans, lengths, doc_lengths, device) -> dict | None:
    """The document-masked forward's ``attention_mask``/``position_ids``; None on flash-attention
    with several rows (the caller runs them one by one). ValueError for lengths that do not sum to
    the rows' lengths or an episode that crosses a document boundary."""
    from tokenweight.documents import attn_implementation, model_forward_kwargs

    b, n = input_ids.shape
    doc_lengths = [[int(x) for x in row] for row in doc_lengths]
    if len(doc_lengths) != b or [sum(x) for x in doc_lengths] != lengths:
        raise ValueError(f"doc_lengths {doc_lengths} must hold one list per row summing to the row lengths {lengths}")
    for r, eps in enumerate(spans):
        ends = [sum(doc_lengths[r][: k + 1]) for k in range(len(doc_lengths[r]))]
        for ds, de, us, ue in eps:
            if next(e for e in ends if ds < e) < ue:
                raise ValueError(
                    f"episode {[ds, de, us, ue]} of row {r} crosses a document boundary ({doc_lengths[r]}): an "
                    "episode must lie inside one document"
                )
    if attn_implementation(model).startswith("flash") and b > 1:
        return None
    return model_forward_kwargs(model, doc_lengths, n, device)


class EpisodeRecall:
    """Aggregates per-episode scores by distance bucket ``[lo, hi)`` (``distance = use_start - def_start``).

    Per bucket: ``episodes``, ``tokens``, ``token_accuracy`` (pooled over value tokens),
    ``exact_match`` (share of episodes), ``mean_logprob`` (nats per value token). Episodes with a
    distance outside every bucket count in ``overall`` only.
    """

    def __init__(self, edges: Sequence[int]):
        self.edges = check_edges(edges, "distance edges")
        self._buckets = [[0, 0, 0, 0, 0.0] for _ in range(len(self.edges) - 1)]  # eps, toks, correct, exact, logprob
        self._all = [0, 0, 0, 0, 0.0]

    def update(self, scores: Sequence[dict]) -> None:
        for s in scores:
            targets = [self._all]
            for i, (lo, hi) in enumerate(zip(self.edges, self.edges[1:])):
                if lo <= s["distance"] < hi:
                    targets.append(self._buckets[i])
            for t in targets:
                t[0] += 1
                t[1] += s["tokens"]
                t[2] += s["correct"]
                t[3] += int(s["exact"])
                t[4] += s["logprob"]

    @staticmethod
    def _entry(acc) -> dict:
        eps, toks, correct, exact, lp = acc
        return {
            "episodes": eps,
            "tokens": toks,
            "token_accuracy": correct / toks if toks else None,
            "exact_match": exact / eps if eps else None,
            "mean_logprob": lp / toks if toks else None,
        }

    def result(self) -> dict:
        return {
            "overall": self._entry(self._all),
            "by_distance": [
                {"start": lo, "end": hi, **self._entry(acc)}
                for lo, hi, acc in zip(self.edges, self.edges[1:], self._buckets)
            ],
        }
