"""short_context_nll and token_nll against brute-force references on a tiny random Llama."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tokenweight.scoring as scoring
from tests.tiny_models import tiny_llama
from tokenweight import short_context_nll, token_nll
from tokenweight.scoring import self_scored_short_nll, truncated_context_nll

BOS = 1
ATOL = 2e-5


@pytest.fixture(scope="module")
def model():
    return tiny_llama(97, 0, max_position_embeddings=256, bos_token_id=BOS, eos_token_id=2, pad_token_id=0)


def random_ids(b, n, seed=0, bos=True):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 97, (b, n), generator=g)
    if bos:
        ids[:, 0] = BOS
    return ids


def full_logits_nll(model, ids_1d):
    """NLL of tokens 1..len-1 of one unpadded sequence, full logits, plain forward: [len-1]."""
    with torch.no_grad():
        logits = model(ids_1d[None]).logits[0]
    return F.cross_entropy(logits[:-1].float(), ids_1d[1:], reduction="none")


def brute_force_short(model, ids_1d, window, stride, bos=None):
    """Every window run on its own; each target taken from the first window that scores it."""
    n = ids_1d.shape[0]
    if n <= window:
        return full_logits_nll(model, ids_1d)
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] != n - window:
        starts.append(n - window)
    out = torch.full((n - 1,), float("nan"))
    for start in starts:
        win = ids_1d[start : start + window].clone()
        if start > 0 and bos is not None and ids_1d[0] == bos:
            win[0] = bos
        nll = full_logits_nll(model, win)
        for j in range(window - 1):  # target at absolute position start + j + 1
            p = start + j + 1
            if torch.isnan(out[p - 1]):
                out[p - 1] = nll[j]
    assert not torch.isnan(out).any()
    return out


def test_token_nll_equals_full_logits(model):
    ids = random_ids(3, 40)
    got = token_nll(model, ids)
    for r in range(3):
        torch.testing.assert_close(got[r], full_logits_nll(model, ids[r]), atol=ATOL, rtol=0)


def test_token_nll_padding(model):
    ids = random_ids(3, 40, seed=1)
    lengths = [40, 17, 2]
    mask = torch.zeros_like(ids)
    for r, L in enumerate(lengths):
        mask[r, :L] = 1
        ids[r, L:] = 0
    got = token_nll(model, ids, mask)
    for r, L in enumerate(lengths):
        torch.testing.assert_close(got[r, : L - 1], full_logits_nll(model, ids[r, :L]), atol=ATOL, rtol=0)
        assert torch.all(got[r, L - 1 :] == 0)


@pytest.mark.parametrize("bos", [None, BOS])
@pytest.mark.parametrize("n", [32, 30, 37])  # (n - w) % s == 0 for s in {1, 2, 3, 4, 6} at 32
def test_short_context_all_strides(model, n, bos):
    window = 8
    ids = random_ids(2, n, seed=n, bos=bos is not None)
    for stride in range(1, window):
        got = short_context_nll(model, ids, window, stride, bos_token_id=bos)
        for r in range(2):
            want = brute_force_short(model, ids[r], window, stride, bos)
            torch.testing.assert_close(got[r], want, atol=ATOL, rtol=0, msg=f"stride={stride} row={r}")


def test_stride_one_is_exact_definition(model):
    """s = 1: token t is predicted from exactly the w-1 tokens before it (t >= w)."""
    window, n = 6, 20
    ids = random_ids(1, n, seed=5, bos=False)
    got = short_context_nll(model, ids, window, 1)[0]
    for t in range(window, n):
        ctx = ids[0, t - window + 1 : t + 1]
        want = full_logits_nll(model, ctx)[-1]
        torch.testing.assert_close(got[t - 1], want, atol=ATOL, rtol=0)


def test_bos_replacement_changes_windows(model):
    ids = random_ids(1, 32, seed=3)
    with_bos = short_context_nll(model, ids, 8, 6, bos_token_id=BOS)
    without = short_context_nll(model, ids, 8, 6)
    assert torch.equal(with_bos[0, :7], without[0, :7])  # window 0 is the same
    assert not torch.allclose(with_bos[0, 7:], without[0, 7:])
    # rows that do not start with BOS are left alone
    ids2 = random_ids(1, 32, seed=3, bos=False)
    assert torch.equal(short_context_nll(model, ids2, 8, 6, bos_token_id=BOS), short_context_nll(model, ids2, 8, 6))


def test_padding_respected(model):
    window, stride, n = 8, 5, 33
    ids = random_ids(4, n, seed=7)
    lengths = [33, 21, 8, 5]  # longer than w (non-divisible), = w, < w
    mask = torch.zeros_like(ids)
    for r, L in enumerate(lengths):
        mask[r, :L] = 1
        ids[r, L:] = 0
    got = short_context_nll(model, ids, window, stride, attention_mask=mask, bos_token_id=BOS)
    for r, L in enumerate(lengths):
        want = brute_force_short(model, ids[r, :L], window, stride, BOS)
        torch.testing.assert_close(got[r, : L - 1], want, atol=ATOL, rtol=0)
        assert torch.all(got[r, L - 1 :] == 0)


def test_short_equals_long_when_sequence_fits(model):
    ids = random_ids(2, 8)
    torch.testing.assert_close(short_context_nll(model, ids, 8, 3), token_nll(model, ids), atol=ATOL, rtol=0)


def test_skip_first_window(model):
    ids = random_ids(2, 30, seed=11)
    full = short_context_nll(model, ids, 8, 6, bos_token_id=BOS)
    skipped = short_context_nll(model, ids, 8, 6, bos_token_id=BOS, skip_first_window=True)
    assert torch.all(skipped[:, :7] == 0)
    torch.testing.assert_close(skipped[:, 7:], full[:, 7:], atol=ATOL, rtol=0)
    # window 0 of the short pass is the long pass itself
    torch.testing.assert_close(full[:, :7], token_nll(model, ids)[:, :7], atol=ATOL, rtol=0)


def test_batch_size_does_not_change_result(model):
    ids = random_ids(3, 37, seed=2)
    a = short_context_nll(model, ids, 8, 3, batch_size=1)
    b = short_context_nll(model, ids, 8, 3, batch_size=100)
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_full_forward_fallback_equals_split_path(model, monkeypatch):
    ids = random_ids(2, 30, seed=4)
    fast = short_context_nll(model, ids, 8, 5, bos_token_id=BOS)
    monkeypatch.setattr(scoring, "_split_model", lambda m: None)
    slow = short_context_nll(model, ids, 8, 5, bos_token_id=BOS)
    torch.testing.assert_close(fast, slow, atol=ATOL, rtol=0)


def test_head_only_on_kept_positions(model, monkeypatch):
    """No vocabulary work for discarded positions: the LM head's product sees exactly n-1 rows per
    sequence (the model's output layer is replaced for the pass; its weight is used on kept rows)."""
    seen = []
    head_logits = scoring.head_logits
    monkeypatch.setattr(scoring, "head_logits", lambda h, x, post: seen.append(x.shape[0]) or head_logits(h, x, post))
    short_context_nll(model, random_ids(2, 32), 8, 6)
    assert sum(seen) == 2 * 31


def test_mode_restored_and_no_grad(model):
    model.train()
    try:
        out = short_context_nll(model, random_ids(1, 20), 8, 4)
        assert model.training and not out.requires_grad and out.dtype == torch.float32
        out = token_nll(model, random_ids(1, 20))
        assert model.training and not out.requires_grad
    finally:
        model.eval()


@pytest.mark.parametrize("window,stride", [(8, 0), (8, 8), (8, 9), (1, 1), (8, -1), (8, 2.5)])
def test_bad_window_or_stride(model, window, stride):
    with pytest.raises(ValueError, match="stride|window"):
        short_context_nll(model, random_ids(1, 20), window, stride)


def test_bad_mask(model):
    ids = random_ids(1, 10)
    left_padded = torch.tensor([[0, 0] + [1] * 8])
    with pytest.raises(ValueError, match="right-padded"):
        short_context_nll(model, ids, 4, 2, attention_mask=left_padded)
    with pytest.raises(ValueError, match="shape"):
        token_nll(model, ids, torch.ones(1, 9))


# ---- packed rows (doc_lengths): every document as a sequence of its own ------------------------
PACKED_DOCS = [[21, 1, 9, 2], [33], [8, 17]]  # > w, a single token, <= w, = 2; one document; = w, > w
PACKED_N = 33  # the last row: 8 tokens of padding


def packed_batch(seed=0):
    """Rows of documents that each start with BOS, right-padded; and the attention mask."""
    ids = random_ids(len(PACKED_DOCS), PACKED_N, seed=seed)
    mask = torch.zeros_like(ids)
    for r, lengths in enumerate(PACKED_DOCS):
        for start in torch.tensor([0] + lengths[:-1]).cumsum(0).tolist():
            ids[r, start] = BOS
        mask[r, : sum(lengths)] = 1
        ids[r, sum(lengths) :] = 0
    return ids, mask


def documents_of(ids):
    """(row, start, document ids) of every document of ``packed_batch``'s rows."""
    out = []
    for r, lengths in enumerate(PACKED_DOCS):
        start = 0
        for length in lengths:
            out.append((r, start, ids[r, start : start + length]))
            start += length
    return out


def brute_force_truncated(model, ids_1d, trunc_len, sliding_window):
    """Fang et al.'s short context by its definition: target p >= T sees the tokens from
    ((p - T) // S)·S on, one forward per target; p < T its full context."""
    out = torch.empty(len(ids_1d) - 1)
    for p in range(1, len(ids_1d)):
        start = 0 if p < trunc_len else (p - trunc_len) // sliding_window * sliding_window
        out[p - 1] = full_logits_nll(model, ids_1d[start : p + 1])[-1]
    return out


def assert_packed_equals(got, want_of_document, ids):
    """Every document's entries equal its own result; a document's first token and padding are 0."""
    for r, start, doc in documents_of(ids):
        if start > 0:
            assert got[r, start - 1] == 0
        if len(doc) > 1:
            torch.testing.assert_close(got[r, start : start + len(doc) - 1], want_of_document(doc), atol=ATOL, rtol=0)
    for r, lengths in enumerate(PACKED_DOCS):
        assert torch.all(got[r, sum(lengths) - 1 :] == 0)


@pytest.mark.parametrize("window,stride", [(8, 5), (8, 1), (4, 3)])
def test_packed_short_context_equals_brute_force_per_document(model, window, stride):
    ids, mask = packed_batch()
    got = short_context_nll(model, ids, window, stride, attention_mask=mask, bos_token_id=BOS, doc_lengths=PACKED_DOCS)
    assert_packed_equals(got, lambda doc: brute_force_short(model, doc, window, stride, BOS), ids)
    # padding may also be left to the lengths; window batching does not matter
    again = short_context_nll(model, ids, window, stride, bos_token_id=BOS, batch_size=2, doc_lengths=PACKED_DOCS)
    torch.testing.assert_close(again, got, atol=ATOL, rtol=0)
    # a document of at most w tokens has no long-range tokens: short == long
    long = token_nll(model, ids, mask, doc_lengths=PACKED_DOCS)
    for r, start, doc in documents_of(ids):
        if len(doc) <= window:
            span = slice(start, start + len(doc) - 1)
            torch.testing.assert_close(got[r, span], long[r, span], atol=ATOL, rtol=0)


def test_packed_self_scoring_equals_brute_force_per_document(model):
    ids, mask = packed_batch(seed=1)
    long = token_nll(model, ids, mask, doc_lengths=PACKED_DOCS)
    got = self_scored_short_nll(model, ids, long, 8, 5, attention_mask=mask, bos_token_id=BOS, doc_lengths=PACKED_DOCS)
    assert_packed_equals(got, lambda doc: brute_force_short(model, doc, 8, 5, BOS), ids)
    # window 0 of every document is the long pass itself: copied, not recomputed
    for r, start, doc in documents_of(ids):
        k = min(len(doc), 8) - 1
        assert torch.equal(got[r, start : start + k], long[r, start : start + k])


@pytest.mark.parametrize("with_long", [False, True])
def test_packed_truncated_context_equals_brute_force_per_document(model, with_long):
    ids, mask = packed_batch(seed=2)
    long = token_nll(model, ids, mask, doc_lengths=PACKED_DOCS) if with_long else None
    got = truncated_context_nll(model, ids, 6, 4, attention_mask=mask, long_nll=long, doc_lengths=PACKED_DOCS)
    assert_packed_equals(got, lambda doc: brute_force_truncated(model, doc, 6, 4), ids)


def test_unpacked_rows_as_one_document_each_are_unchanged(model):
    """doc_lengths of one document per row gives the unpacked result (within rounding)."""
    ids, mask = random_ids(2, 30, seed=6), torch.ones(2, 30, dtype=torch.long)
    mask[1, 23:] = 0
    docs = [[30], [23]]
    for packed, plain in (
        (
            short_context_nll(model, ids, 8, 5, mask, BOS, doc_lengths=docs),
            short_context_nll(model, ids, 8, 5, mask, BOS),
        ),
        (
            truncated_context_nll(model, ids, 6, 4, mask, doc_lengths=docs),
            truncated_context_nll(model, ids, 6, 4, mask),
        ),
        (token_nll(model, ids, mask, doc_lengths=docs), token_nll(model, ids, mask)),
    ):
        torch.testing.assert_close(packed, plain, atol=ATOL, rtol=0)


def test_packed_bad_doc_lengths(model):
    ids, mask = packed_batch()
    with pytest.raises(ValueError, match="sum to each row's length"):
        short_context_nll(model, ids, 8, 5, attention_mask=torch.ones_like(ids), doc_lengths=PACKED_DOCS)
    with pytest.raises(ValueError, match="rows"):
        short_context_nll(model, ids, 8, 5, doc_lengths=PACKED_DOCS[:2])
    with pytest.raises(ValueError, match="positive integers"):
        truncated_context_nll(model, ids, 6, 4, doc_lengths=[[33], [0, 33], [25]])


# ---- bad input: one ValueError naming the argument and the fix, never AttributeError/IndexError --
SCORERS = {
    "token_nll": lambda m, ids: token_nll(m, ids),
    "short_context_nll": lambda m, ids: short_context_nll(m, ids, 8, 4),
    "self_scored_short_nll": lambda m, ids: self_scored_short_nll(m, ids, torch.zeros(1, 19), 8, 4),
    "truncated_context_nll": lambda m, ids: truncated_context_nll(m, ids, 8, 4),
}
LONG = "input_ids must be an integer tensor \\[b, n\\] \\(torch.long\\)"


@pytest.mark.parametrize("name", SCORERS)
@pytest.mark.parametrize(
    "ids,needle",
    [
        ([[BOS] + [5] * 19], f"^{LONG}, got list: pass torch.tensor\\(ids\\)$"),
        ("some text", f"^{LONG}, got str: tokenize it first"),
        (torch.ones(1, 20), f"^{LONG}, got a torch.float32 tensor: pass input_ids.long\\(\\)$"),
        (torch.ones(1, 20, dtype=torch.bool), f"^{LONG}, got a torch.bool tensor"),
        (torch.ones(20, dtype=torch.long), f"^{LONG}, got shape \\(20,\\): pass input_ids\\[None\\] for one sequence$"),
    ],
)
def test_scorers_refuse_ids_that_are_not_an_integer_matrix(model, name, ids, needle):
    with pytest.raises(ValueError, match=needle):
        SCORERS[name](model, ids)


@pytest.mark.parametrize("name", SCORERS)
def test_scorers_refuse_ids_beyond_the_vocabulary_or_negative(model, name):
    ids = random_ids(1, 20)
    ids[0, 7] = 120  # the fixture's vocabulary has 97 tokens: a scorer with a smaller vocabulary than the data's
    with pytest.raises(ValueError, match=r"^input_ids hold token id 120 but the model's vocabulary has 97 tokens "):
        SCORERS[name](model, ids)
    with pytest.raises(ValueError, match="score with a model that has the data's tokenizer$"):
        SCORERS[name](model, ids)
    ids[0, 7] = -100
    with pytest.raises(ValueError, match=r"^input_ids hold the negative token id -100: pass real token ids"):
        SCORERS[name](model, ids)


def test_scorers_take_any_integer_dtype_and_check_the_other_arguments(model):
    ids = random_ids(2, 20)
    want = token_nll(model, ids)
    assert torch.equal(token_nll(model, ids.int()), want)  # int32 ids (what datasets gives) are made long
    assert torch.equal(short_context_nll(model, ids.int(), 8, 4), short_context_nll(model, ids, 8, 4))
    with pytest.raises(ValueError, match=r"^attention_mask must be a tensor \[b, n\] .* got list: pass torch.tensor"):
        token_nll(model, ids, [[1] * 20] * 2)
    with pytest.raises(ValueError, match=r"^long_nll must be a float tensor of shape \(2, 19\) .* got list$"):
        self_scored_short_nll(model, ids, [[0.0] * 19] * 2, 8, 4)
    with pytest.raises(ValueError, match=r"^long_nll must be a float tensor of shape \(2, 19\) .* got shape \(2, 20\)"):
        truncated_context_nll(model, ids, 8, 4, long_nll=torch.zeros(2, 20))


# ------------------------------------------------------------------------------ context_kl (LongFilter's score)
def brute_force_kl(model, ids_1d, window, stride, bos=None):
    """KL(p_long || p_short) of every target, each window run on its own (the first window that scores a
    target gives its short context, as brute_force_short); targets of window 0: 0."""
    n = ids_1d.shape[0]
    with torch.no_grad():
        long = torch.log_softmax(model(ids_1d[None]).logits[0].float(), -1)  # [n, V]
    out = torch.zeros(n - 1)
    if n <= window:
        return out
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] != n - window:
        starts.append(n - window)
    done = set(range(1, window))  # window 0's targets: no shorter context
    for start in starts[1:]:
        win = ids_1d[start : start + window].clone()
        if bos is not None and ids_1d[0] == bos:
            win[0] = bos
        with torch.no_grad():
            short = torch.log_softmax(model(win[None]).logits[0].float(), -1)
        for j in range(window - 1):
            p = start + j + 1  # target position
            if p not in done:
                done.add(p)
                lp = long[p - 1]
                out[p - 1] = (lp.exp() * (lp - short[j])).sum()
    return out


@pytest.mark.parametrize("stride", [1, 3, 6])
@pytest.mark.parametrize("bos", [None, BOS])
def test_context_kl_equals_brute_force(model, stride, bos):
    window, n = 8, 29
    ids = random_ids(2, n, seed=stride, bos=bos is not None)
    got = scoring.context_kl(model, ids, window, stride, bos_token_id=bos, batch_size=2)
    for r in range(2):
        torch.testing.assert_close(got[r], brute_force_kl(model, ids[r], window, stride, bos), atol=ATOL, rtol=0)
    assert bool((got >= 0).all()) and bool((got[:, : window - 1] == 0).all())


def test_context_kl_padding_and_short_rows(model):
    window, stride, n = 8, 5, 33
    ids = random_ids(3, n, seed=9)
    lengths = [33, 12, 8]  # longer than w, a little longer, = w (no shorter context: all 0)
    mask = torch.zeros_like(ids)
    for r, L in enumerate(lengths):
        mask[r, :L] = 1
        ids[r, L:] = 0
    got = scoring.context_kl(model, ids, window, stride, attention_mask=mask, bos_token_id=BOS)
    for r, L in enumerate(lengths):
        torch.testing.assert_close(
            got[r, : L - 1], brute_force_kl(model, ids[r, :L], window, stride, BOS), atol=ATOL, rtol=0
        )
        assert torch.all(got[r, L - 1 :] == 0)
    assert torch.all(got[2] == 0)
