"""Packed held-out rows in ``tokenweight eval``: every metric measured per document.

A folder prepared with ``tokenweight prepare --pack`` holds several documents per row; its
``doc_lengths`` column (:mod:`tokenweight.documents`) says where each starts. The evaluation must
give what the documents give when run one by one, so that packed and unpacked data of the same
documents are comparable and packing never lets a model read another document:

- perplexity by position: one document-masked ``token_nll`` pass per batch (attention within a
  document, positions restarting at 0, a document's first token not scored); the NLLs are then
  laid out one document per row (:func:`document_nll`), so that a token's *position* is its offset
  in its document and the short-context bucket holds every document's first ``w`` tokens;
- episode recall: the same document mask in the forward pass (:func:`tokenweight.documents.model_forward_kwargs`); an
  episode lies inside one document (the data's contract; one that crosses a boundary is refused);
- LongPPL and the ``data`` haystack: each document is its own text (:func:`split_documents`), so
  Fang et al.'s windows restart at every document, exactly.

Rows without ``doc_lengths`` (unpacked folders) take the paths they always took, unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tokenweight.errors import UsageError


def read_doc_lengths(ds, where: str) -> list[list[int]] | None:
    """The ``doc_lengths`` column of a split (one list per row), None when the split has none
    (unpacked). UsageError naming the row when a row's lengths are not positive ints within its
    ``input_ids``."""
    if "doc_lengths" not in ds.column_names:
        return None
    from tokenweight.documents import check_doc_lengths

    out = []
    for i, r in enumerate(ds.select_columns(["input_ids", "doc_lengths"])):
        lengths = [int(x) for x in (r["doc_lengths"] or [])]
        try:
            check_doc_lengths([lengths], len(r["input_ids"]))
        except ValueError as e:
            raise UsageError(
                f"{where}: row {i}: {str(e).removeprefix('row 0: ')}: prepare the folder again (tokenweight prepare "
                "--pack --force)"
            ) from None
        out.append(lengths)
    return out


def split_documents(rows: list[dict]) -> list[dict]:
    """One row per document: a packed row (``doc_lengths`` set) becomes its documents'
    ``input_ids``, each with its episodes in document coordinates; an unpacked row is kept as it
    is (the very same object), so unpacked data gives what it always gave."""
    out = []
    for i, r in enumerate(rows):
        lengths = r.get("doc_lengths")
        if lengths is None:
            out.append(r)
            continue
        eps = list(r.get("episodes") or [])
        starts = [sum(lengths[:k]) for k in range(len(lengths))]
        lost = [ep for ep in eps if not 0 <= int(ep[0]) < sum(lengths)]
        if lost:
            raise UsageError(
                f"held-out row {i}: episode {list(lost[0])} starts outside the row's documents {lengths}: prepare "
                "the folder again"
            )
        for start, length in zip(starts, lengths):
            end = start + length
            mine = [[int(x) - start for x in ep] for ep in eps if start <= int(ep[0]) < end]
            for ep in mine:
                if ep[3] > length:
                    raise UsageError(
                        f"held-out row {i}: episode {[x + start for x in ep]} crosses the document boundary at "
                        f"{end}: prepare the folder again (an episode lies inside one document)"
                    )
            out.append({"input_ids": list(r["input_ids"][start:end]), "episodes": mine, "doc_lengths": None})
    return out


def document_nll(nll: Tensor, doc_lengths: list[list[int]]) -> tuple[Tensor, Tensor]:
    """``(nll, mask)`` ``[D, L-1]``: a packed batch's NLL (``token_nll(..., doc_lengths=...)``,
    ``[b, n-1]``) laid out one document per row (``D`` documents, the longest of ``L`` tokens), as
    the documents alone would give it: entry ``j`` of row ``d`` is the NLL of document ``d``'s token
    at position ``j + 1``; ``mask`` is True where that token exists."""
    from tokenweight.documents import segments

    segs = segments(doc_lengths)
    width = max(max(length for _, _, length in segs) - 1, 0)
    out = nll.new_zeros(len(segs), width)
    mask = torch.zeros(len(segs), width, dtype=torch.bool)
    for d, (row, start, length) in enumerate(segs):
        # the document's token t (1 <= t < length) is row token start + t, scored at entry start + t - 1
        out[d, : length - 1] = nll[row, start : start + length - 1]
        mask[d, : length - 1] = True
    return out, mask


def position_nll(model, batch: dict) -> tuple[Tensor, Tensor]:
    """``(nll, mask)`` of one held-out batch for :class:`~tokenweight.evaluate.lm_metrics.PositionPerplexity`:
    entry ``j`` scores the token at position ``j + 1`` of its sequence (unpacked: the row; packed:
    its document, :func:`document_nll`), on the CPU."""
    from tokenweight.scoring import token_nll

    doc_lengths = batch.get("doc_lengths")
    if doc_lengths is None:
        nll = token_nll(model, batch["input_ids"], batch["attention_mask"]).cpu()  # from the model's device
        return nll, batch["attention_mask"][:, 1:].bool()
    nll = token_nll(model, batch["input_ids"], batch["attention_mask"], doc_lengths=doc_lengths).cpu()
    return document_nll(nll, doc_lengths)
