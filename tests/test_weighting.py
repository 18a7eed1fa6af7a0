"""Tests of tokenweight.weighting: every named scheme against hand-computed numbers, properties
(L1 mean, exact top-κ counts, seeded uniform tie-breaking, masking, spec round trips) with
hypothesis, and the ValueError of every bad argument."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenweight import WeightingScheme as W

PROPS = settings(derandomize=True, deadline=None, database=None, max_examples=60)

# docs/METHOD.md worked example (the paper's Table 1).
LONG = [8.75, 0.20, 0.58, 7.82, 1.32, 4.54]
SHORT = [8.49, 0.21, 0.64, 8.82, 1.03, 4.40]
D = [0.26, -0.01, -0.06, -1.00, 0.29, 0.14]  # long - short, by hand
ABS_D = [0.26, 0.01, 0.06, 1.00, 0.29, 0.14]
SUM_ABS = 1.76


def weigh(spec, long=LONG, short=SHORT, **kw):
    return W.parse(spec)(torch.tensor(long), torch.tensor(short), **kw)


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32), atol=atol, rtol=0)


# ---- named schemes, by hand -----------------------------------------------------------------------
def test_scores_worked_example():
    scores = W().scores(torch.tensor(LONG), torch.tensor(SHORT))
    close(scores, D)
    close(scores.abs(), ABS_D)
    quot = W(comparison="quotient").scores(torch.tensor([2.0, 0.0]), torch.tensor([4.0, 0.0]))
    close(quot, [(2 + 1e-5) / (4 + 1e-5), 1.0], atol=1e-7)


def test_uniform_and_dense_one_are_exactly_one():
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]], dtype=torch.bool)
    long = torch.tensor([[1.0, 2.0, float("nan")], [3.0, 4.0, 5.0]])
    for spec in ["uniform", "dense:1", "custom:cmp=quotient", "custom:lambda=0.3"]:
        scheme = W.parse(spec)
        assert scheme.is_uniform and not scheme.needs_short
        w = scheme(long, None, mask=mask)
        assert torch.equal(w, mask.float())
        assert torch.equal(scheme(long, long * 2, mask=mask), mask.float())


def test_dense_worked_example():
    expected = [0.75 + 0.25 * 6 * a / SUM_ABS for a in ABS_D]  # 0.9716, 0.7585, ..., 1.6023, ...
    close(weigh("dense:0.75"), expected)
    close(weigh("dense:0"), [6 * a / SUM_ABS for a in ABS_D])


def test_sparse_worked_example():
    # top floor(0.5*6) = 3 of |d|: 1.00 (3), 0.29 (4), 0.26 (0); L1 -> 6/3 = 2
    assert torch.equal(weigh("sparse:0.5"), torch.tensor([2.0, 0, 0, 2, 2, 0]))
    # floor(0.34*6) = 2: tokens 3 and 4 -> 3 each
    assert torch.equal(weigh("sparse:0.34"), torch.tensor([0.0, 0, 0, 3, 3, 0]))


def test_longce_worked_example():
    close(weigh("longce:5"), [math.exp(-d) for d in D])  # max e^1 = 2.718 < 5: no clipping
    close(weigh("longce:1.5"), [math.exp(-0.26), math.exp(0.01), math.exp(0.06), 1.5, math.exp(-0.29), math.exp(-0.14)])


def test_ppmi_npmi_rho1_worked_example():
    # ppmi s=1: relu(-d) = 0, .01, .06, 1, 0, 0 -> top 3 = tokens 3, 2, 1
    assert torch.equal(weigh("ppmi:1:0.5"), torch.tensor([0.0, 2, 2, 2, 0, 0]))
    # npmi s=1: relu(d) = .26, 0, 0, 0, .29, .14; floor(0.34*6) = 2 -> tokens 4, 0
    assert torch.equal(weigh("npmi:1:0.34"), torch.tensor([3.0, 0, 0, 0, 3, 0]))
    # npmi s=e^0.2: d - 0.2 -> only .06 (0) and .09 (4) stay positive
    assert torch.equal(weigh(f"npmi:{math.exp(0.2)}:0.34"), torch.tensor([3.0, 0, 0, 0, 3, 0]))
    # rho1: raw d, floor(0.6*6) = 3 -> tokens 4, 0, 5
    assert torch.equal(weigh("rho1:0.6"), torch.tensor([2.0, 0, 0, 0, 2, 2]))


def test_ppmi_tie_among_zeros_is_random():
    # s = 1.05: -d - log 1.05 = -.309, -.039, .011, .951, -.339, -.189 -> relu keeps tokens 2, 3;
    # the third of floor(3) slots goes to one of the four tied zeros (0, 1, 4, 5).
    picked = set()
    for seed in range(40):
        w = weigh("ppmi:1.05:0.5", generator=torch.Generator().manual_seed(seed))
        assert w[2] == 2 and w[3] == 2 and w.sum() == 6 and set(w.tolist()) == {0.0, 2.0}
        picked.add(int(torch.nonzero(w[[0, 1, 4, 5]]).item()))
    assert picked == {0, 1, 2, 3}


def test_softmax_and_quotient_by_hand():
    e = [math.exp(a) for a in ABS_D]
    close(weigh("custom:transforms=abs,norm=softmax"), [6 * x / sum(e) for x in e])
    q = [(a + 1e-5) / (s + 1e-5) for a, s in zip(LONG, SHORT)]
    close(weigh("custom:cmp=quotient,transforms=neg+exp,trunc=0.5"), [min(math.exp(-x), 0.5) for x in q])
    # shift then truncation then interpolation, no normalization
    close(
        weigh("custom:transforms=abs+shift:2,trunc=0.1,lambda=0.5"),
        [0.5 + 0.5 * min(a - math.log(2), 0.1) for a in ABS_D],
    )


def test_batch_with_mask_and_padding():
    long = torch.tensor([LONG + [0.0, 0.0], [1.0] * 8])
    short = torch.tensor([SHORT + [9.0, 9.0], [1.0] * 8])
    mask = torch.tensor([[1] * 6 + [0, 0], [0] * 8])
    w = W.parse("dense:0.75")(long, short, mask=mask)
    close(w[0], [0.75 + 0.25 * 6 * a / SUM_ABS for a in ABS_D] + [0.0, 0.0])
    assert torch.equal(w[1], torch.zeros(8))  # a row with no scored token


def test_one_dim_low_precision_and_no_grad():
    long = torch.tensor(LONG, dtype=torch.bfloat16, requires_grad=True)
    short = torch.tensor(SHORT, dtype=torch.float16)
    w = W.parse("dense:0.75")(long, short)
    assert w.shape == (6,) and w.dtype == torch.float32 and not w.requires_grad
    ref = W.parse("dense:0.75")(long.detach().float()[None], short.float()[None])
    assert torch.equal(w, ref[0])


# ---- properties --------------------------------------------------------------------------------------
def _batch(seed, b, n, p_mask, levels=None):
    g = torch.Generator().manual_seed(seed)
    if levels:  # few distinct values: many ties
        long = torch.randint(0, levels, (b, n), generator=g).float()
        short = torch.zeros(b, n)
    else:
        long, short = torch.rand(b, n, generator=g) * 10, torch.rand(b, n, generator=g) * 10
    mask = torch.rand(b, n, generator=g) >= p_mask
    return long, short, mask


L1_SPECS = [
    "dense:0",
    "sparse:0.3",
    "ppmi:1.5:0.5",
    "npmi:0.5:0.7",
    "rho1:0.6",
    "custom:transforms=abs,norm=l1",
    "custom:cmp=quotient,transforms=neg+exp,trunc=1.2,norm=l1",
]


@PROPS
@given(
    st.sampled_from(L1_SPECS),
    st.integers(0, 2**31),
    st.integers(1, 4),
    st.integers(1, 40),
    st.sampled_from([0.0, 0.3, 0.9]),
    st.sampled_from([None, 3]),
)
def test_l1_mean_is_one_over_scored_tokens(spec, seed, b, n, p_mask, levels):
    long, short, mask = _batch(seed, b, n, p_mask, levels)
    w = W.parse(spec)(long, short, mask=mask)
    assert torch.all(w[~mask] == 0) and torch.all(w >= 0)
    for row in range(b):
        if mask[row].any():
            assert abs(w[row][mask[row]].mean().item() - 1) < 1e-5


@PROPS
@given(
    st.floats(0, 1, exclude_min=True),
    st.integers(0, 2**31),
    st.integers(1, 4),
    st.integers(1, 60),
    st.sampled_from([0.0, 0.5]),
)
def test_top_kappa_keeps_exactly_floor_kappa_t(kappa, seed, b, n, p_mask):
    long, short, mask = _batch(seed, b, n, p_mask, levels=4)
    w = W(sparsification=kappa)(long, short, mask=mask)  # no normalization: raw 0/1
    assert set(w.unique().tolist()) <= {0.0, 1.0} and torch.all(w[~mask] == 0)
    for row in range(b):
        t = int(mask[row].sum())
        assert int(w[row].sum()) == math.floor(Fraction(repr(kappa)) * t)
        kept, dropped = long[row][(w[row] == 1)], long[row][(w[row] == 0) & mask[row]]
        if len(kept) and len(dropped):
            assert kept.min() >= dropped.max()


def test_kappa_is_read_as_written_and_zero_kept_edge():
    n = 100
    w = W(sparsification=0.29)(torch.arange(n).float(), torch.zeros(n))
    assert int(w.sum()) == 29 and torch.equal(w[-29:], torch.ones(29))  # float math would keep 28
    # floor(0.1*5) = 0: nothing kept -> all zero; with L1 the all-zero row becomes uniform
    long, short = torch.rand(5), torch.rand(5)
    assert torch.equal(W(sparsification=0.1)(long, short), torch.zeros(5))
    assert torch.equal(W.parse("sparse:0.1")(long, short), torch.ones(5))
    assert torch.equal(
        W.parse("sparse:0.1")(long, short, mask=torch.tensor([1, 1, 0, 1, 1])), torch.tensor([1.0, 1, 0, 1, 1])
    )


def test_tie_breaking_seeded_deterministic_and_varied():
    long = short = torch.zeros(20)  # every score ties
    scheme = W.parse("sparse:0.5")
    first = scheme(long, short)
    assert torch.equal(first, scheme(long, short))  # default generator: seed 0
    assert torch.equal(first, scheme(long, short, generator=torch.Generator().manual_seed(0)))
    seeded = dataclasses.replace(scheme, seed=7)
    assert torch.equal(seeded(long, short), scheme(long, short, generator=torch.Generator().manual_seed(7)))
    picks = {tuple(dataclasses.replace(scheme, seed=s)(long, short).tolist()) for s in range(20)}
    assert len(picks) >= 18 and all(sum(p) == 20 for p in picks)


def test_tie_breaking_is_uniform():
    # 4000 rows: token 0 (score 5) always kept; 2 of the 4 tied 1s, each with probability 1/2;
    # the 0s never. Binomial(4000, 1/2) has sd 31.6: a biased rule (e.g. first index) fails.
    row = torch.tensor([5.0, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    long = row.repeat(4000, 1)
    w = W(sparsification=0.3)(long, torch.zeros_like(long), generator=torch.Generator().manual_seed(1))
    counts = w.sum(0)
    assert counts[0] == 4000 and counts[5:].sum() == 0 and counts.sum() == 4000 * 3
    assert torch.all((counts[1:5] - 2000).abs() < 130), counts


@PROPS
@given(
    st.sampled_from(
        [
            "dense:0.5",
            "custom:transforms=abs,norm=softmax",
            "custom:transforms=relu,norm=l1",
            "custom:transforms=neg+relu,norm=softmax",
        ]
    ),
    st.integers(1, 30),
    st.integers(0, 2**31),
)
def test_all_zero_row_becomes_uniform(spec, n, seed):
    # row 0: long == short, so |d| = relu(d) = 0 everywhere -> exactly 1 by the rule (not 0/0);
    # (with top-κ a row is never all zero unless floor(κ·T) = 0: see the test above)
    # row 1: random scores, so its normalization is unaffected by row 0.
    long, short, mask = _batch(seed, 2, n, 0.3)
    short[0] = long[0]
    w = W.parse(spec)(long, short, mask=mask)
    assert torch.equal(w[0], mask[0].float())
    assert torch.equal(w[1], W.parse(spec)(long[1:], short[1:], mask=mask[1:])[0])


_floats = st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False)
_transform = st.one_of(st.sampled_from(["abs", "neg", "exp", "relu"]), _floats.map(lambda s: f"shift:{s!r}"))
_schemes = st.builds(
    W,
    comparison=st.sampled_from(["difference", "quotient"]),
    transforms=st.lists(_transform, max_size=4),
    truncation=st.none() | _floats,
    sparsification=st.none() | st.floats(0, 1, exclude_min=True),
    normalization=st.sampled_from([None, "l1", "softmax"]),
    interpolation=st.none() | st.floats(0, 1),
    seed=st.sampled_from([0, 0, 1]) | st.integers(0, 2**64 - 1),
)


@PROPS
@given(_schemes)
def test_spec_round_trip(scheme):
    text = str(scheme)
    assert W.parse(text) == scheme and hash(W.parse(text)) == hash(scheme)
    assert str(W.parse(text)) == text and W.parse(text.upper()) == scheme


@pytest.mark.parametrize(
    "spec", ["uniform", "dense:0.75", "sparse:0.3", "longce:5", "ppmi:2:0.3", "npmi:0.5:1", "rho1:0.6", "dense:0"]
)
def test_named_specs_print_as_named(spec):
    assert str(W.parse(spec)) == spec


def test_named_equals_explicit_and_general_form():
    assert W.parse("dense:0.75") == W(transforms=["abs"], normalization="L1", interpolation=0.75)
    assert W.parse("ppmi:2:0.3") == W.parse("custom:transforms=neg+shift:2.0+relu,kappa=0.3,norm=l1")
    assert W.parse("longce:5") == W(transforms="neg+exp", truncation=5)
    assert W.parse("custom:") == W() and str(W.parse("custom:norm=none,trunc=none")) == "uniform"
    seeded = dataclasses.replace(W.parse("sparse:0.3"), seed=3)
    assert str(seeded) == "custom:transforms=abs,kappa=0.3,norm=l1,seed=3"
    s = W.parse("custom:transforms=abs+shift:1e+20,trunc=5,kappa=0.3,norm=l1,lambda=0.5,cmp=quotient,seed=3")
    assert s.transforms == ("abs", "shift:1e20") and s.seed == 3 and W.parse(str(s)) == s
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seed = 4
    assert len({W.parse("dense:0.75"), W(transforms=("abs",), normalization="l1", interpolation=0.75)}) == 1


@PROPS
@given(
    st.sampled_from(
        ["dense:0.75", "sparse:0.4", "ppmi:1:0.5", "longce:2", "custom:transforms=abs,norm=softmax", "rho1:0.7"]
    ),
    st.integers(0, 2**31),
    st.integers(1, 3),
    st.integers(2, 30),
)
def test_masked_tokens_are_zero_and_do_not_influence(spec, seed, b, n):
    long, short, mask = _batch(seed, b, n, 0.4, levels=3 if "0." in spec else None)
    scheme = W.parse(spec)
    w = scheme(long, short, mask=mask)
    assert torch.all(w[~mask] == 0)
    garbage_long, garbage_short = long.clone(), short.clone()
    garbage_long[~mask], garbage_short[~mask] = float("nan"), float("inf")
    assert torch.equal(scheme(garbage_long, garbage_short, mask=mask), w)
    if scheme.sparsification is None:  # deterministic: same as scoring only the kept tokens
        for row in range(b):
            if mask[row].any():
                alone = scheme(long[row][mask[row]], short[row][mask[row]])
                torch.testing.assert_close(w[row][mask[row]], alone, atol=1e-6, rtol=1e-6)


# ---- bad arguments -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(sparsification=0), "sparsification=0"),
        (dict(sparsification=1.5), "sparsification=1.5"),
        (dict(interpolation=-0.1), "interpolation=-0.1"),
        (dict(interpolation=1.01), "interpolation=1.01"),
        (dict(truncation=0), "truncation=0"),
        (dict(truncation=-2.0), "truncation=-2.0"),
        (dict(truncation=float("inf")), "truncation=inf"),
        (dict(transforms=("shift:0",)), "'shift:0'"),
        (dict(transforms=("shift:-1",)), "'shift:-1'"),
        (dict(transforms=("sqrt",)), "'sqrt'"),
        (dict(comparison="ratio"), "comparison='ratio'"),
        (dict(normalization="l2"), "normalization='l2'"),
        (dict(seed=-1), "seed=-1"),
        (dict(seed=1.5), "seed=1.5"),
        (dict(interpolation="0.5"), "interpolation='0.5'"),
    ],
)
def test_bad_fields_raise(kwargs, needle):
    with pytest.raises(ValueError, match="is invalid|unknown") as err:
        W(**kwargs)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("dense", "dense takes 1 parameter"),
        ("dense:x", "λ='x'"),
        ("foo:1", "unknown scheme 'foo'"),
        ("sparse:1.5", "sparsification=1.5"),
        ("ppmi:0:0.5", "shift"),
        ("ppmi:2", "ppmi takes 2"),
        ("uniform:1", "uniform takes 0"),
        ("custom:bogus=1", "'bogus=1'"),
        ("custom:abs", "'abs'"),
        ("custom:kappa=0.5,kappa=0.3", "given twice"),
        ("custom:norm=l2", "normalization='l2'"),
        ("custom:cmp=ratio", "comparison='ratio'"),
        ("custom:transforms=sqrt", "'sqrt'"),
        ("custom:seed=-1", "seed='-1'"),
        ("custom:lambda=x", "lambda='x'"),
        ("", "unknown scheme ''"),
    ],
)
def test_bad_specs_raise(spec, needle):
    with pytest.raises(ValueError) as err:
        W.parse(spec)
    msg = str(err.value)
    assert f"invalid weighting spec {spec!r}" in msg and needle in msg and "valid forms: uniform, dense:<λ>" in msg
    with pytest.raises(ValueError, match="expected a string"):
        W.parse(0.5)


def test_bad_tensors_raise():
    scheme = W.parse("dense:0.5")
    a, b = torch.zeros(2, 3), torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(2, 4\)"):
        scheme(a, b)
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(2, 4\)"):
        W()(a, b)  # uniform still checks the shapes it is given
    with pytest.raises(ValueError, match=r"mask shape \(3,\) differs from long_nll shape \(2, 3\)"):
        scheme(a, a, mask=torch.ones(3))
    with pytest.raises(ValueError, match="only 0 and 1"):
        scheme(a, a, mask=torch.full((2, 3), 2))
    with pytest.raises(ValueError, match=r"\[b, T\] or \[T\], got \(1, 2, 3\)"):
        scheme(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="short_nll is required by weighting scheme dense:0.5"):
        scheme(a)
    with pytest.raises(ValueError, match="NaN or inf at scored tokens"):
        scheme(torch.tensor([1.0, float("nan")]), torch.zeros(2))
    with pytest.raises(ValueError, match="overflows"):
        W(transforms=("exp",), normalization="l1")(torch.tensor([100.0, 1.0]), torch.zeros(2))
    clipped = W(transforms=("exp",), truncation=2.0, normalization="l1")(torch.tensor([100.0, 0.0]), torch.zeros(2))
    close(clipped, [2 * 2 / 3, 2 * 1 / 3])


# ---- groups: every document of a packed row weighted on its own ------------------------------
GROUP_SPECS = [*L1_SPECS, "dense:0.75", "longce:5", "uniform", "custom:transforms=abs,norm=softmax"]
NO_TIES = [s for s in GROUP_SPECS if not s.startswith(("ppmi", "npmi"))]  # relu makes tied zeros


def _groups(seed, b, n, k, contiguous):
    """Group ids in [0, k) per row (contiguous runs like documents, or interleaved), some -1."""
    g = torch.Generator().manual_seed(seed)
    if contiguous:
        groups = torch.randint(0, k, (b, n), generator=g).sort(dim=1).values
    else:
        groups = torch.randint(0, k, (b, n), generator=g)
    return torch.where(torch.rand(b, n, generator=g) < 0.1, -1, groups)


@PROPS
@given(
    st.sampled_from(NO_TIES),
    st.integers(0, 2**31),
    st.integers(1, 3),
    st.integers(1, 40),
    st.integers(1, 4),
    st.booleans(),
)
def test_each_group_is_weighted_as_alone(spec, seed, b, n, k, contiguous):
    """Brute force: each (row, group)'s scored tokens weighted as a sequence of their own. No ties
    (continuous scores), so top-κ's random tie-breaking never matters."""
    long, short, mask = _batch(seed, b, n, 0.2)
    groups = _groups(seed + 1, b, n, k, contiguous)
    scheme = W.parse(spec)
    w = scheme(long, short, mask=mask, groups=groups)
    scored = mask & (groups >= 0)
    assert torch.all(w[~scored] == 0)
    for r in range(b):
        for gid in range(k):
            sel = scored[r] & (groups[r] == gid)
            if sel.any():
                torch.testing.assert_close(w[r, sel], scheme(long[r, sel], short[r, sel]), atol=1e-5, rtol=0)


@PROPS
@given(st.sampled_from(GROUP_SPECS), st.integers(0, 2**31), st.integers(1, 4), st.integers(1, 40))
def test_one_group_per_row_equals_no_groups_ties_included(spec, seed, b, n):
    """The same tokens kept (top-κ's keys are shared), the same weights up to summation order."""
    long, short, mask = _batch(seed, b, n, 0.3, levels=3)  # many ties
    scheme = W.parse(spec)
    for gen in (None, 7):
        plain = scheme(long, short, mask=mask, generator=None if gen is None else torch.Generator().manual_seed(gen))
        grouped = scheme(
            long,
            short,
            mask=mask,
            generator=None if gen is None else torch.Generator().manual_seed(gen),
            groups=torch.where(mask, 5, -1),
        )
        assert torch.equal(plain != 0, grouped != 0)
        torch.testing.assert_close(grouped, plain, atol=1e-6, rtol=0)
    one = scheme(long[0], short[0], groups=torch.zeros(n, dtype=torch.long))
    torch.testing.assert_close(one, scheme(long[0], short[0]), atol=1e-6, rtol=0)


def test_groups_hand_example():
    """dense:0 (L1 only) of two documents: each has mean weight 1 on its own."""
    long, short = torch.tensor([[3.0, 1.0, 2.0, 2.0, 4.0]]), torch.zeros(1, 5)
    w = W.parse("dense:0")(long, short, groups=torch.tensor([[0, 0, -1, 1, 1]]))
    close(w[0], [1.5, 0.5, 0.0, 2 * 2 / 6, 2 * 4 / 6])
    w = W.parse("sparse:0.5")(long, short, groups=torch.tensor([[0, 0, 0, 1, 1]]))
    close(w[0], [3.0, 0.0, 0.0, 0.0, 2.0])  # floor(0.5·3) = 1 of document 0, floor(0.5·2) = 1 of document 1


@pytest.mark.parametrize(
    "groups,needle",
    [(torch.zeros(1, 4, dtype=torch.long), "shape"), (torch.zeros(1, 5), "integer"), (torch.full((1, 5), -2), ">= -1")],
)
def test_bad_groups_raise(groups, needle):
    with pytest.raises(ValueError, match=needle):
        W.parse("dense:0.5")(torch.ones(1, 5), torch.zeros(1, 5), groups=groups)
