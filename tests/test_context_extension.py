"""tokenweight.context_extension: the paper's θ rule and RoPE context extension against fresh-built references."""

from __future__ import annotations

import math

import pytest
import torch

from tests.test_models import _tiny
from tokenweight.context_extension import THETA_EXPONENT, extend_context, theta_for_extension
from tokenweight.models import load_model


def _reference(model):
    """A model built from scratch from ``model.config`` with ``model``'s weights (no cached RoPE state)."""
    from transformers import LlamaForCausalLM

    ref = LlamaForCausalLM(model.config)
    ref.load_state_dict(model.state_dict())
    return ref.eval()


def test_theta_rule_passes_through_the_paper_point():
    assert theta_for_extension(500_000.0, 4.0) == pytest.approx(15_300_000.0, rel=1e-12)
    assert theta_for_extension(500_000.0, 1.0) == 500_000.0
    assert theta_for_extension(10_000.0, 2.0) == pytest.approx(10_000.0 * 2 ** (math.log(30.6) / math.log(4)))
    assert THETA_EXPONENT == pytest.approx(2.467730, abs=1e-6)
    with pytest.raises(ValueError, match="factor"):
        theta_for_extension(10_000.0, 0.5)


def test_extend_context_default_theta_matches_fresh_model():
    m = _tiny(n=16, theta=500_000.0).eval()
    x = torch.randint(0, 64, (2, 64), generator=torch.Generator().manual_seed(1))
    before = m(x).logits
    extend_context(m, 64)
    assert m.config.max_position_embeddings == 64
    assert m.config.rope_parameters["rope_theta"] == pytest.approx(15_300_000.0, rel=1e-12)
    dim = m.config.head_dim
    expect = 1.0 / (15_300_000.0 ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    torch.testing.assert_close(m.model.rotary_emb.inv_freq, expect, rtol=1e-6, atol=0)
    after = m(x).logits
    assert not torch.allclose(before, after)  # the rotary cache really was rebuilt
    torch.testing.assert_close(after, _reference(m)(x).logits, rtol=0, atol=0)


def test_extend_context_explicit_theta_and_no_growth():
    m = _tiny(n=16)
    extend_context(m, 64, rope_theta=123.0)
    assert m.config.rope_parameters["rope_theta"] == 123.0
    m = _tiny(n=16)
    extend_context(m, 16)
    assert m.config.rope_parameters["rope_theta"] == 10000.0


@pytest.mark.parametrize("kind", ["linear", "dynamic", "yarn", "llama3"])
def test_extend_context_scaling_types_roundtrip(kind, tmp_path):
    m = _tiny(n=16).eval()
    extend_context(m, 64, rope_scaling=kind)
    rp = m.config.rope_parameters
    assert rp["rope_type"] == kind and rp["factor"] == 4.0 and rp["rope_theta"] == 10000.0
    assert m.config.max_position_embeddings == (16 if kind == "dynamic" else 64)
    x = torch.randint(0, 64, (1, 64), generator=torch.Generator().manual_seed(2))
    out = m(x).logits
    m.save_pretrained(tmp_path)
    loaded = load_model(tmp_path).eval()
    assert loaded.config.rope_parameters["rope_type"] == kind
    torch.testing.assert_close(loaded(x).logits, out, rtol=0, atol=0)
    if kind == "linear":
        dim = m.config.head_dim
        base = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        torch.testing.assert_close(m.model.rotary_emb.inv_freq, base / 4.0)


def test_extend_context_bad_arguments():
    with pytest.raises(ValueError, match="rope_scaling"):
        extend_context(_tiny(), 64, rope_scaling="ntk")
    with pytest.raises(ValueError, match="n must"):
        extend_context(_tiny(), 1)
    extend_context(m := _tiny(), 64, rope_scaling={"rope_type": "yarn", "factor": 8.0, "beta_fast": 16})
    assert m.config.rope_parameters["factor"] == 8.0 and m.config.rope_parameters["beta_fast"] == 16
