"""tokenweight.documents (the packed-row contract) against loops over the documents, and token_nll
of packed rows against the documents run one by one on a tiny random Llama (sdpa and eager)."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_models import tiny_llama
from tokenweight import documents
from tokenweight.scoring import token_nll

DOCS = [[3, 1, 4], [8], [2, 2, 2, 1]]  # row sums 8, 8, 7 (one padding token) in rows of n = 8
N = 8


def brute(doc_lengths, n):
    """Per row and position: (document index or -1, position in the document, is a document start)."""
    out = []
    for lengths in doc_lengths:
        row = [(-1, None, False)] * n
        start = 0
        for k, length in enumerate(lengths):
            for p in range(length):
                row[start + p] = (k, p, p == 0)
            start += length
        out.append(row)
    return out


def test_segments_ids_positions_starts_and_targets_equal_loops():
    ref = brute(DOCS, N)
    assert documents.segments(DOCS) == [
        (0, 0, 3),
        (0, 3, 1),
        (0, 4, 4),
        (1, 0, 8),
        (2, 0, 2),
        (2, 2, 2),
        (2, 4, 2),
        (2, 6, 1),
    ]
    assert documents.segment_ids(DOCS, N).tolist() == [[s for s, _, _ in row] for row in ref]
    assert documents.document_starts(DOCS, N).tolist() == [[st for _, _, st in row] for row in ref]
    pos = documents.document_positions(DOCS, N).tolist()
    for r, row in enumerate(ref):
        for j, (s, p, _) in enumerate(row):
            # padding continues the last document's count, as a right-padded single document would
            assert pos[r][j] == (p if s >= 0 else pos[r][j - 1] + 1)
    tm = documents.target_mask(DOCS, N).tolist()
    assert tm == [[row[j + 1][0] >= 0 and not row[j + 1][2] for j in range(N - 1)] for row in ref]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_block_causal_mask_and_forward_kwargs(dtype):
    ref = brute(DOCS, N)
    mask = documents.block_causal_mask(DOCS, N, dtype)
    assert mask.shape == (3, 1, N, N) and mask.dtype == dtype
    low = torch.finfo(dtype).min
    for r, row in enumerate(ref):
        for i in range(N):
            for j in range(N):
                allowed = (row[i][0] >= 0 and row[i][0] == row[j][0] and j <= i) or i == j
                assert mask[r, 0, i, j].item() == (0 if allowed else low), (r, i, j)
    kw = documents.forward_kwargs(DOCS, N, "eager", dtype)  # eager: the additive mask in the compute dtype
    assert torch.equal(kw["attention_mask"], mask) and torch.equal(
        kw["position_ids"], documents.document_positions(DOCS, N)
    )
    sdpa = documents.forward_kwargs(DOCS, N, "sdpa", dtype)  # sdpa: its own boolean format, True = attend
    assert sdpa["attention_mask"].dtype == torch.bool and torch.equal(sdpa["attention_mask"], mask == 0)
    assert torch.equal(sdpa["position_ids"], kw["position_ids"])
    flash = documents.forward_kwargs(DOCS[:1], N, "flash_attention_2")
    assert flash["attention_mask"] is None and flash["position_ids"].tolist() == [[0, 1, 2, 0, 0, 1, 2, 3]]
    with pytest.raises(ValueError, match="flattened into one row"):
        documents.forward_kwargs(DOCS, N, "flash_attention_2")


@pytest.mark.parametrize("bad", [[[3, 0]], [[2.0]], [[]], [[5, 4]]])
def test_bad_doc_lengths(bad):
    with pytest.raises(ValueError, match="row 0"):
        documents.check_doc_lengths(bad, N)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_packed_token_nll_equals_documents_one_by_one(impl):
    model = tiny_llama(61, 0, attn_implementation=impl)
    docs, n = [[9, 1, 14], [24], [5, 12]], 24  # the last row: 7 tokens of padding
    ids = torch.randint(3, 61, (3, n), generator=torch.Generator().manual_seed(1))
    mask = (torch.arange(n)[None] < torch.tensor([24, 24, 17])[:, None]).long()
    packed = token_nll(model, ids, mask, doc_lengths=docs)
    assert torch.equal(packed, token_nll(model, ids, None, doc_lengths=docs))  # padding: what the lengths leave
    for row, start, length in documents.segments(docs):
        one = token_nll(model, ids[row : row + 1, start : start + length])[0]
        torch.testing.assert_close(packed[row, start : start + length - 1], one, rtol=0, atol=1e-5)
        if start > 0:
            assert packed[row, start - 1] == 0  # a document's first token is not a target
    assert (packed[2, 16:] == 0).all()
    with pytest.raises(ValueError, match="sum to each row's length"):
        token_nll(model, ids, torch.ones_like(ids), doc_lengths=docs)
