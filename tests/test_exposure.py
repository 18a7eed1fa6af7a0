"""Exposure balancing (EXACT): the factors and weights against a brute-force reference, its spec
strings, its composition with a contrastive scheme, packed rows (the prefix restarts per document)
and the component (no scorer needed)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from tests.train.train_helpers import sequences, tiny_model
from tokenweight.exposure import apply_exposure, bucket_histogram, effective_context, exposure_factors
from tokenweight.weighting import WeightingScheme


def brute(prefix: list[int], mask: list[bool], alpha: float, tail: int, base: float = 2.0, v=None) -> list[float]:
    """The definition of tokenweight/exposure.py, one row, in plain Python."""
    scored = [t for t, m in enumerate(mask) if m]
    v = v or [1.0] * len(mask)
    bucket = {t: math.floor(math.log(prefix[t], base) + 1e-9) for t in scored if prefix[t] >= tail}
    if not bucket:
        return [v[t] if mask[t] else 0.0 for t in range(len(mask))]
    counts = {k: sum(1 for b in bucket.values() if b == k) for k in set(bucket.values())}
    big_t = len(scored)
    u = {t: 1 + (alpha * big_t / (len(counts) * counts[bucket[t]]) if t in bucket else 0.0) for t in scored}
    total = sum(v[t] * u[t] for t in scored)
    return [v[t] * u[t] * big_t / total if mask[t] else 0.0 for t in range(len(mask))]


@pytest.mark.parametrize("alpha,tail", [(0.5, 8), (1.0, 16), (2.0, 1), (0.0, 4)])
def test_weights_equal_brute_force(alpha, tail):
    g = torch.Generator().manual_seed(0)
    prefix = torch.arange(1, 41)[None].repeat(3, 1)
    mask = torch.rand(3, 40, generator=g) > 0.2
    mask[2, 10:] = False  # a row whose scored targets are all before the tail for tail 16
    w = WeightingScheme(exposure=alpha, exposure_tail=tail)(torch.zeros(3, 40), None, mask, prefix=prefix)
    for r in range(3):
        want = brute(prefix[r].tolist(), mask[r].tolist(), alpha, tail)
        assert w[r].tolist() == pytest.approx(want, rel=1e-6, abs=1e-7)
        assert w[r][mask[r]].mean().item() == pytest.approx(1.0, abs=1e-6)


def test_buckets_split_at_powers_of_the_base_and_share_the_extra_mass_equally():
    prefix = torch.arange(1, 33)[None]  # tail 8: buckets 3 (8..15: 8 targets), 4 (16..31: 16), 5 (32: 1)
    mask = torch.ones(1, 32, dtype=torch.bool)
    u = exposure_factors(prefix, mask, alpha=0.75, tail=8)[0]
    assert u[:7].eq(1).all()
    extra = u - 1
    assert extra[7:15].sum().item() == pytest.approx(extra[15:31].sum().item()) == pytest.approx(extra[31].item())
    assert extra.sum().item() == pytest.approx(0.75 * 32)
    assert bucket_histogram(prefix, mask) == {0: 1, 1: 2, 2: 4, 3: 8, 4: 16, 5: 1}
    assert bucket_histogram(prefix, mask, base=4.0) == {0: 3, 1: 12, 2: 17}


@pytest.mark.parametrize("base", [2.0, 3.0, 4.0])
def test_length_histogram_equals_counting_every_target(base):
    lengths = [1, 2, 9, 40, 17, 64, 65, 300]
    brute_counts: dict[int, int] = {}
    for length in lengths:
        for e in range(1, length):
            k = math.floor(math.log(e, base) + 1e-9)
            brute_counts[k] = brute_counts.get(k, 0) + 1
    from tokenweight.exposure import length_histogram

    assert length_histogram(lengths, base) == brute_counts


def test_composition_is_the_product_renormalised():
    g = torch.Generator().manual_seed(1)
    long, short = torch.rand(2, 30, generator=g) * 6, torch.rand(2, 30, generator=g) * 6
    mask = torch.ones(2, 30, dtype=torch.bool)
    prefix = effective_context(31).expand(2, -1)
    dense = WeightingScheme.parse("dense:0.75")(long, short, mask)
    both = WeightingScheme.parse("custom:transforms=abs,norm=l1,lambda=0.75,exposure=0.5,tail=8")
    w = both(long, short, mask, prefix=prefix)
    for r in range(2):
        want = brute(prefix[r].tolist(), mask[r].tolist(), 0.5, 8, v=dense[r].tolist())
        assert w[r].tolist() == pytest.approx(want, rel=1e-5)
    torch.testing.assert_close(apply_exposure(dense, prefix, mask, 0.5, 8), w)


@pytest.mark.parametrize(
    "spec",
    [
        "exact:0.5",
        "exact:0.25:256",
        "custom:exposure=1,tail=64,base=4",
        "sparse:0.3*exact:0.5",
        "dense:0.75*exact:0.25:256",
        "longce:5*custom:exposure=1,base=4",
        "custom:cmp=quotient,transforms=abs,norm=l1,exposure=0.5",
    ],
)
def test_specs_round_trip(spec):
    scheme = WeightingScheme.parse(spec)
    assert WeightingScheme.parse(str(scheme)) == scheme and str(scheme) == spec


def test_a_product_is_the_scheme_with_exposure_balancing():
    product = WeightingScheme.parse("sparse:0.3*exact:0.5:64")
    assert product == WeightingScheme.parse("custom:transforms=abs,kappa=0.3,norm=l1,exposure=0.5,tail=64")
    assert product == dataclasses.replace(WeightingScheme.parse("sparse:0.3"), exposure=0.5, exposure_tail=64)
    assert WeightingScheme.parse("uniform*exact:0.5") == WeightingScheme.parse("exact:0.5")
    for bad in ("exact:0.5*dense:0.75", "dense:0.75*sparse:0.3", "dense:0.75*exact:0.5*exact:1"):
        with pytest.raises(ValueError, match=r"a product is <scheme>\*exact"):
            WeightingScheme.parse(bad)


def test_bad_specs_and_missing_inputs():
    with pytest.raises(ValueError, match="α must be a finite number >= 0"):
        WeightingScheme.parse("exact:-1")
    with pytest.raises(ValueError, match="τ='x' is not a positive integer"):
        WeightingScheme.parse("exact:0.5:x")
    with pytest.raises(ValueError, match="need exposure"):
        WeightingScheme.parse("custom:tail=8")
    with pytest.raises(ValueError, match="pass prefix="):
        WeightingScheme.parse("exact:0.5:8")(torch.zeros(1, 4), None)
    with pytest.raises(ValueError, match="has no tail"):
        WeightingScheme.parse("exact:0.5")(torch.zeros(1, 4), None, prefix=torch.arange(1, 5)[None])
    assert not WeightingScheme.parse("exact:0.5").needs_short  # positions only: no scorer


def test_component_packed_rows_restart_the_prefix_per_document():
    """exact on a packed row (weight_norm document) = its documents alone; on unpacked rows the
    prefix of target j is j + 1; no scorer is needed."""
    from tokenweight import PadCollator, TokenWeighting

    docs = sequences(3, 40, seed=2, short_every=2)
    model = tiny_model(n=128, seed=0)
    tw = TokenWeighting("exact:0.5", window=8, weight_norm="document")
    packed = PadCollator(0)([{"input_ids": [t for d in docs for t in d], "doc_lengths": [len(d) for d in docs]}])
    out, alone = (
        tw(model, packed),
        TokenWeighting("exact:0.5", window=8)(model, PadCollator(0)([{"input_ids": d} for d in docs])),
    )
    start = 0
    for k, d in enumerate(docs):
        torch.testing.assert_close(out.weights[0, start : start + len(d) - 1], alone.weights[k, : len(d) - 1])
        want = brute(list(range(1, len(d))), [True] * (len(d) - 1), 0.5, 8)
        assert alone.weights[k, : len(d) - 1].tolist() == pytest.approx(want, rel=1e-5)
        start += len(d)


# ------------------------------------------------------------------------------ first-window protection
def brute_force_protect(v, prefix, mask, tau):
    """Per row: targets with prefix < τ weigh 1; the others keep v's proportions, scaled to mean 1 over
    them (all 1 when their v sums to 0)."""
    w = torch.zeros_like(v)
    for r in range(v.shape[0]):
        rest = [j for j in range(v.shape[1]) if mask[r, j] and prefix[r, j] >= tau]
        for j in range(v.shape[1]):
            if mask[r, j] and prefix[r, j] < tau:
                w[r, j] = 1.0
        total = sum(float(v[r, j]) for j in rest)
        for j in rest:
            w[r, j] = float(v[r, j]) * len(rest) / total if total > 0 else 1.0
    return w


@pytest.mark.parametrize("spec", ["dense:0.75", "sparse:0.3", "longce:5", "dense:0.75*exact:0.5"])
@pytest.mark.parametrize("tau", [0, 5])
def test_protection_equals_brute_force(spec, tau):
    g = torch.Generator().manual_seed(7)
    long, short = torch.rand(3, 20, generator=g) * 4, torch.rand(3, 20, generator=g) * 4
    mask = torch.rand(3, 20, generator=g) > 0.2
    prefix = torch.arange(1, 21).expand(3, 20)
    base = WeightingScheme.parse(spec)
    protected = dataclasses.replace(base, protect=tau)
    v = base(long, short, mask, prefix=prefix, tail=8)
    got = protected(long, short, mask, prefix=prefix, tail=8)
    want = brute_force_protect(v, prefix, mask, tau or 8)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert torch.all(got[mask & (prefix < (tau or 8))] == 1.0) and torch.all(got[~mask] == 0)


@pytest.mark.parametrize(
    "spec, text",
    [
        ("dense:0.75*protect", "dense:0.75*protect"),
        ("sparse:0.3*exact:0.5*protect:64", "sparse:0.3*exact:0.5*protect:64"),
        ("dense:0.75*protect*exact:0.5", "dense:0.75*exact:0.5*protect"),
        (
            "custom:cmp=quotient,transforms=abs,norm=l1,protect=0",
            "custom:cmp=quotient,transforms=abs,norm=l1,protect=0",
        ),
        ("exact:0.5*protect", "exact:0.5*protect"),
    ],
)
def test_protection_specs_round_trip(spec, text):
    scheme = WeightingScheme.parse(spec)
    assert str(scheme) == text and WeightingScheme.parse(text) == scheme
    assert scheme.needs_positions


def test_protection_bad_specs_and_inputs():
    for bad, needle in [
        ("dense:0.75*protect*protect", "each at most once"),
        ("dense:0.75*protect:x", "is not a non-negative integer"),
        ("dense:0.75*shield", "each at most once"),
    ]:
        with pytest.raises(ValueError, match=needle):
            WeightingScheme.parse(bad)
    scheme = WeightingScheme.parse("dense:0.75*protect")
    with pytest.raises(ValueError, match="pass prefix="):
        scheme(torch.ones(1, 4), torch.ones(1, 4))
    with pytest.raises(ValueError, match="protects the base window"):
        scheme(torch.ones(1, 4), torch.ones(1, 4), prefix=torch.arange(1, 5)[None])
    assert WeightingScheme.parse("uniform*protect").is_uniform  # protecting plain CE changes nothing


def test_component_protects_each_documents_first_window():
    """dense × protection through the component on a packed row (weight_norm document) = its documents
    alone, and there the first w - 1 targets weigh exactly 1 (their prefix is shorter than w)."""
    from tokenweight import PadCollator, TokenWeighting

    docs = sequences(3, 40, seed=4, short_every=2)
    model = tiny_model(n=128, seed=1)
    short = [torch.rand(len(d), generator=torch.Generator().manual_seed(k)) * 3 for k, d in enumerate(docs)]
    flat = [t for d in docs for t in d]
    packed = PadCollator(0)([{"input_ids": flat, "doc_lengths": [len(d) for d in docs], "short_nll": torch.cat(short)}])
    tw = TokenWeighting("dense:0.75*protect", window=8, weight_norm="document")
    out = tw(model, packed)
    alone = TokenWeighting("dense:0.75*protect", window=8)(
        model, PadCollator(0)([{"input_ids": d, "short_nll": s} for d, s in zip(docs, short)])
    )
    start = 0
    for k, d in enumerate(docs):
        torch.testing.assert_close(out.weights[0, start : start + len(d) - 1], alone.weights[k, : len(d) - 1])
        assert torch.all(alone.weights[k, :7] == 1.0)
        start += len(d)
