"""tokenweight.models: presets, loading, and RoPE context extension against fresh-built references."""

from __future__ import annotations

import math

import pytest
import torch

from tokenweight.errors import UsageError
from tokenweight.models import (
    PRESETS,
    THETA_EXPONENT,
    count_parameters,
    extend_context,
    init_model,
    load_model,
    theta_for_extension,
)


def _tiny(n=16, theta=10000.0, vocab=64):
    torch.manual_seed(0)
    return init_model(
        "tiny",
        vocab,
        n,
        rope_theta=theta,
        hidden_size=32,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        num_hidden_layers=2,
    )


def _reference(model):
    """A model built from scratch from ``model.config`` with ``model``'s weights (no cached RoPE state)."""
    from transformers import LlamaForCausalLM

    ref = LlamaForCausalLM(model.config)
    ref.load_state_dict(model.state_dict())
    return ref.eval()


def test_presets_parameter_counts_at_vocab_8192():
    names = ("tiny", "small", "shallow", "mini", "base")
    counts = {name: count_parameters(init_model(name, 8192, 256)) for name in names}
    assert counts == {"tiny": 1_229_664, "small": 3_171_360, "shallow": 1_444_480, "mini": 366_600, "base": 11_014_400}
    # the demo's smaller scorer: >= 4x fewer parameters than its base model at the demo's vocabulary
    assert count_parameters(init_model("shallow", 4096, 256)) / count_parameters(init_model("mini", 4096, 256)) >= 4
    assert PRESETS["shallow"].num_hidden_layers == 2 and PRESETS["shallow"].tie_word_embeddings
    assert PRESETS["tiny"].tie_word_embeddings and PRESETS["small"].tie_word_embeddings
    assert not PRESETS["base"].tie_word_embeddings and not PRESETS["large"].tie_word_embeddings
    p = PRESETS["large"]  # counted analytically (building it costs seconds): 60 060 800
    d, f, layers = p.hidden_size, p.intermediate_size, p.num_hidden_layers
    assert layers * (4 * d * d + 3 * d * f + 2 * d) + d + 2 * 8192 * d == 60_060_800


def test_init_model_config_and_overrides():
    m = init_model("tiny", 100, 32, rope_theta=500000.0, bos_token_id=1, num_hidden_layers=1)
    c = m.config
    assert (c.vocab_size, c.max_position_embeddings, c.num_hidden_layers, c.bos_token_id) == (100, 32, 1, 1)
    assert c.rope_parameters == {"rope_type": "default", "rope_theta": 500000.0}
    assert c._attn_implementation == "sdpa" and m.dtype == torch.float32
    with pytest.raises(ValueError, match="preset"):
        init_model("huge", 100, 32)
    with pytest.raises(ValueError, match="vocab_size"):
        init_model("tiny", 1, 32)


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


def test_load_model_errors_and_dtype(tmp_path):
    with pytest.raises(UsageError, match="model path '/no/such/dir' does not exist"):
        load_model("/no/such/dir")
    with pytest.raises(UsageError, match="does not exist"):
        load_model("./relative/missing")
    (tmp_path / "f.bin").write_bytes(b"x")
    with pytest.raises(UsageError, match="is a file"):
        load_model(tmp_path / "f.bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no config.json"):
        load_model(tmp_path / "empty")
    with pytest.raises(ValueError, match="dtype"):
        load_model(tmp_path / "empty", dtype="fp8")
    _tiny().save_pretrained(tmp_path / "m")
    m = load_model(tmp_path / "m", dtype="bfloat16")
    assert m.dtype == torch.bfloat16 and m.config._attn_implementation == "sdpa"
