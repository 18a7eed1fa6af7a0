"""tokenweight.runtime's rules (resolve_runtime), the attention choice, and what load_model gives
(dtype of the parameters, config._attn_implementation, device). Tiny local models only (~2 s)."""

from __future__ import annotations

import pytest
import torch

from tokenweight import models as M
from tokenweight.config import RuntimeOptions
from tokenweight.errors import UsageError
from tokenweight.models import choose_attn_implementation, init_model, load_model
from tokenweight.runtime import Runtime, resolve_runtime


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama") / "m"
    torch.manual_seed(0)
    init_model(
        "tiny", 64, 32, hidden_size=32, num_attention_heads=2, num_key_value_heads=2, intermediate_size=64
    ).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def gemma2(tmp_path_factory):
    """A tiny random Gemma-2 (attention and final-logit soft-capping; transformers refuses sdpa for it)."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    path = tmp_path_factory.mktemp("gemma2") / "m"
    torch.manual_seed(0)
    cfg = Gemma2Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=64,
        sliding_window=16,
    )
    Gemma2ForCausalLM(cfg).save_pretrained(path)
    return path


def test_auto_runtime_on_this_machine():
    rt = resolve_runtime()
    assert rt == Runtime("cuda" if torch.cuda.is_available() else "cpu", "float32", "auto")
    assert RuntimeOptions().runtime() == rt


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only rules")
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"device": "tpu"}, "device 'tpu' is not a device: use auto, cpu, cuda or cuda:N"),
        ({"device": "cuda"}, "device 'cuda': no CUDA device is available here: use --device cpu (or auto)"),
        ({"device": "cpu:1"}, "device 'cpu:1' is not supported: use auto, cpu, cuda or cuda:N"),
        ({"dtype": "fp8"}, "dtype must be one of float32, bfloat16, float16, got 'fp8'"),
        ({"attn_implementation": "flex"}, "attn_implementation must be one of auto, flash_attention_2, sdpa, eager"),
        (
            {"attn_implementation": "flash_attention_2"},
            "attn_implementation flash_attention_2 needs a CUDA device, got device cpu: use --attn-implementation "
            "sdpa (or auto), or --device cuda",
        ),
        (
            {"dtype": "float16", "training": True},
            "dtype float16 training needs a GPU (on CPU accelerate runs float16 mixed precision without autocast, "
            "i.e. in float32): use --dtype bfloat16 or float32",
        ),
    ],
)
def test_bad_combinations_name_the_option_and_the_alternative(kwargs, message):
    with pytest.raises(ValueError) as e:
        resolve_runtime(**kwargs)
    assert str(e.value).startswith(message)


def test_what_runs_on_cpu():
    """CPU: float32 and bfloat16 everywhere, float16 for inference; eager and sdpa."""
    for dtype in ("float32", "bfloat16"):
        assert resolve_runtime("cpu", dtype, training=True).dtype == dtype
    assert resolve_runtime("cpu", "float16").dtype == "float16"
    assert resolve_runtime("cpu", attn_implementation="eager").attn_implementation == "eager"


def test_flash_attention_without_the_package(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the rules as on a CUDA machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(M, "flash_attn_installed", lambda: False)
    with pytest.raises(ValueError, match="needs the flash_attn package, which is not installed: pip install"):
        resolve_runtime("cuda", "bfloat16", "flash_attention_2")
    monkeypatch.setattr(M, "flash_attn_installed", lambda: True)
    with pytest.raises(ValueError, match="runs in bfloat16 or float16, got dtype float32: pass --dtype bfloat16"):
        resolve_runtime("cuda", "float32", "flash_attention_2")
    assert resolve_runtime("cuda", "bfloat16", "flash_attention_2").attn_implementation == "flash_attention_2"
    with pytest.raises(ValueError, match="training puts each process on its own GPU"):
        resolve_runtime("cuda:0", training=True)


def test_attention_choice_follows_the_class_flags(monkeypatch):
    from transformers import Gemma2ForCausalLM, LlamaForCausalLM

    assert choose_attn_implementation(LlamaForCausalLM, "auto", "cpu", "float32") == "sdpa"
    assert choose_attn_implementation(Gemma2ForCausalLM, "auto", "cpu", "bfloat16") == "eager"
    assert choose_attn_implementation(LlamaForCausalLM, "eager", "cpu", "float32") == "eager"
    monkeypatch.setattr(M, "flash_attn_installed", lambda: True)
    assert choose_attn_implementation(LlamaForCausalLM, "auto", "cuda", "bfloat16") == "flash_attention_2"
    assert choose_attn_implementation(LlamaForCausalLM, "auto", "cuda", "float32") == "sdpa"  # flash is 16-bit
    assert choose_attn_implementation(LlamaForCausalLM, "auto", "cpu", "bfloat16") == "sdpa"
    assert choose_attn_implementation(Gemma2ForCausalLM, "auto", "cuda:1", "float16") == "flash_attention_2"
    monkeypatch.setattr(M, "flash_attn_installed", lambda: False)
    assert choose_attn_implementation(Gemma2ForCausalLM, "auto", "cuda", "bfloat16") == "eager"
    assert choose_attn_implementation(None, "auto", "cpu", "float32") is None  # transformers' own default


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("attn", ["auto", "sdpa", "eager"])
def test_every_option_reaches_the_model(llama, dtype, attn):
    m = resolve_runtime("cpu", dtype, attn).load(llama)
    assert {p.dtype for p in m.parameters()} == {getattr(torch, dtype)}
    assert {p.device.type for p in m.parameters()} == {"cpu"}
    assert m.config._attn_implementation == ("sdpa" if attn == "auto" else attn)


def test_gemma2_gets_eager_not_a_crash(gemma2):
    m = load_model(gemma2)  # auto: transformers 5.23 refuses sdpa for Gemma-2 (ValueError at load)
    assert m.config._attn_implementation == "eager"
    assert torch.isfinite(m(torch.tensor([[1, 2, 3, 4]])).logits).all()
    with pytest.raises(UsageError) as e:
        load_model(gemma2, attn_implementation="sdpa")
    assert str(e.value) == (
        f"model {str(gemma2)!r} (Gemma2ForCausalLM) does not support attn_implementation sdpa: use "
        "--attn-implementation auto (here: eager) or eager"
    )


def test_training_loads_float32_and_chooses_for_where_it_trains(llama, monkeypatch):
    """``runtime=``: the attention is chosen for the runtime (bf16 on CUDA here: flash) while the
    weights load in float32 on the CPU (the Trainer moves them and autocasts)."""
    monkeypatch.setattr(M, "flash_attn_installed", lambda: True)
    seen = {}
    real = M.choose_attn_implementation

    def spy(cls, requested, device, dtype, *, name=""):
        seen.update(device=device, dtype=dtype, choice=real(cls, requested, device, dtype, name=name))
        return "sdpa"  # flash_attn is not really installed here: load with sdpa

    monkeypatch.setattr(M, "choose_attn_implementation", spy)
    m = load_model(llama, runtime=Runtime("cuda", "bfloat16", "auto"))
    assert seen == {"device": "cuda", "dtype": "bfloat16", "choice": "flash_attention_2"}
    assert m.dtype == torch.float32 and next(m.parameters()).device.type == "cpu"
