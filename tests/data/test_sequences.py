"""Chunking one document into n-token sequences, against brute-force slicing."""

import numpy as np
import pytest

from tokenweight.data.sequences import capacity, chunk_document


def _reference(doc, n, bos, min_tail):
    cap = n - 1 if bos is not None else n
    seqs, start = [], 0
    while start < len(doc):
        body = list(doc[start : start + cap])
        full = len(body) == cap
        seq = ([bos] if bos is not None else []) + body
        if full or (min_tail is not None and len(seq) >= min_tail):
            seqs.append((start, seq))
        start += cap
    return seqs


@pytest.mark.parametrize("bos", [None, 1])
@pytest.mark.parametrize("min_tail", [None, 2, 5, 16])
def test_chunks_match_brute_force(bos, min_tail):
    rng = np.random.default_rng(0)
    n = 16
    for length in [0, 1, 4, 14, 15, 16, 17, 31, 45, 100]:
        doc = rng.integers(3, 50, size=length).astype(np.int32)
        spans = []
        for _ in range(12):  # random episode-like spans [cue, d0, d1, u0, u1]
            cue = int(rng.integers(0, max(1, length)))
            d0 = cue + int(rng.integers(0, 3))
            d1 = d0 + int(rng.integers(1, 3))
            u0 = d1 + int(rng.integers(0, 8))
            spans.append([cue, d0, d1, u0, u0 + (d1 - d0)])
        out = chunk_document(doc, n, bos, min_tail, np.array(spans))
        ref = _reference(doc.tolist(), n, bos, min_tail)
        assert [s.tolist() for s in out.sequences] == [s for _, s in ref]
        kept = sum(len(s) - (bos is not None) for _, s in ref)
        assert out.dropped_tokens == length - kept
        off = 1 if bos is not None else 0
        for (start, seq), eps in zip(ref, out.episodes):
            end = start + len(seq) - off
            expect = [
                [d0 - start + off, d1 - start + off, u0 - start + off, u1 - start + off]
                for cue, d0, d1, u0, u1 in spans
                if cue >= start and u1 <= end
            ]
            assert eps.tolist() == expect
            for d0, d1, u0, u1 in eps.tolist():  # relative spans point at the same tokens
                assert seq[d0:d1] == doc[d0 - off + start : d1 - off + start].tolist()
                assert seq[u0:u1] == doc[u0 - off + start : u1 - off + start].tolist()
        assert all(s.dtype == np.int32 for s in out.sequences)
        if bos is not None:
            assert all(s[0] == bos for s in out.sequences)


def test_capacity():
    assert capacity(256, 1) == 255
    assert capacity(256, None) == 256


@pytest.mark.parametrize("n,min_tail", [(1, None), (0, None), (8, 1), (8, 9)])
def test_bad_arguments(n, min_tail):
    with pytest.raises(ValueError, match="n must be|min_tail must be"):
        chunk_document(np.arange(20), n, 1, min_tail)
