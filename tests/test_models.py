"""tokenweight.models: presets, building from scratch, and loading."""

from __future__ import annotations

import pytest
import torch

from tokenweight.errors import UsageError
from tokenweight.models import PRESETS, count_parameters, init_model, load_model


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


def test_presets_parameter_counts_at_vocab_8192():
    names = ("tiny", "small", "shallow", "mini", "narrow", "base")
    counts = {name: count_parameters(init_model(name, 8192, 256)) for name in names}
    assert counts == {
        "tiny": 1_229_664,
        "small": 3_171_360,
        "shallow": 1_444_480,
        "mini": 366_600,
        "narrow": 407_836,
        "base": 11_014_400,
    }
    # the demo's smaller scorers: >= 4x fewer parameters than its base model at the demo's vocabulary
    for small in ("mini", "narrow"):
        assert count_parameters(init_model("shallow", 4096, 256)) / count_parameters(init_model(small, 4096, 256)) >= 4
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
