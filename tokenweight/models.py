"""Models: load any HF causal LM, build Llama models from scratch, extend their context (RoPE).

Why this module exists: every subcommand (pretrain, score, train, eval) needs the same three things,
with the same error messages and the same defaults:

- :func:`load_model`: any Hugging Face causal LM by local folder or hub id. A missing folder that is
  not a plausible hub id is a user error (``UsageError``), never a traceback from deep inside
  ``huggingface_hub`` (the rule is :func:`tokenweight.identity.is_hub_id`; tokenizers load with
  :func:`tokenweight.identity.load_tokenizer`).
- :data:`PRESETS` / :func:`init_model`: Llama-architecture models from scratch, ~1M to ~60M
  parameters, the CPU-sized stand-ins for "a model pretrained at short context" (the paper's 8k
  Llama-3). Small presets tie input and output embeddings (at these sizes the embedding matrix is
  a large share of all parameters).
- :func:`extend_context`: prepare a model for the long run: ``max_position_embeddings`` and RoPE.
  The default follows the paper: Llama-3 8B went from 8k to 32k context with θ raised from
  500 000 to 15 300 000, i.e. a factor 30.6 for a 4x longer context. For any other ratio we extend
  that point with the power law through it (``factor = 1`` at ratio 1)::

      θ' = θ · (n / w) ** (log 30.6 / log 4)        # exponent ≈ 2.4677

  so 2x → ×5.53, 4x → ×30.6, 8x → ×169. (A power law in the ratio is the usual shape of NTK-style
  base scaling, ``θ · r^(d/(d-2))``; the paper's exponent is just steeper than NTK's ≈ 1.) Any
  explicit ``rope_theta`` wins. The model's own RoPE scaling types of transformers 5.x
  (``config.rope_parameters``: ``linear``, ``dynamic``, ``yarn``, ``llama3``) are available with
  ``rope_scaling=``; with a scaling type, θ is kept unless given.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tokenweight.errors import UsageError
from tokenweight.identity import (
    load_tokenizer,  # noqa: F401  (re-exported until cli/ and demo.py switch)
    resolve_source,
)

#: the paper's point: 4x context (8k -> 32k) with θ 500 000 -> 15 300 000
PAPER_THETA_FACTOR = 30.6
PAPER_CONTEXT_RATIO = 4.0
#: exponent of the θ power law through the paper's point (≈ 2.4677)
THETA_EXPONENT = math.log(PAPER_THETA_FACTOR) / math.log(PAPER_CONTEXT_RATIO)

DTYPES = ("float32", "bfloat16", "float16", "auto")
ROPE_SCALING_TYPES = ("linear", "dynamic", "yarn", "llama3")


@dataclass(frozen=True)
class Preset:
    """Shape of a from-scratch Llama model (parameter counts are for a vocabulary of 8192)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    tie_word_embeddings: bool


#: from-scratch Llama presets. Parameters at vocab 8192 (exact counts in tests/test_models.py):
#: tiny ≈ 1.2M, small ≈ 3.2M (the CLI's default, sized to train on a CPU; its measured speed is in
#: docs/TRAINING.md), shallow ≈ 1.4M (2 layers: the demo's base model, because few layers form the
#: copy task's induction head much sooner than the 6-layer small preset; docs/TRAINING.md has the
#: measurements), base ≈ 11M, large ≈ 60M. Head dim 32 (64 for large) keeps RoPE meaningful at small widths.
PRESETS: dict[str, Preset] = {
    "tiny": Preset(96, 4, 3, 3, 256, True),
    "small": Preset(160, 6, 5, 5, 432, True),
    "shallow": Preset(128, 2, 4, 4, 344, True),
    "base": Preset(256, 8, 8, 8, 768, False),
    "large": Preset(640, 10, 10, 10, 1728, False),
}


def theta_for_extension(rope_theta: float, factor: float) -> float:
    """RoPE base for a context ``factor`` times longer: ``θ · factor ** (log 30.6 / log 4)``.

    Exactly the paper's 500 000 → 15 300 000 at ``factor = 4``; ``factor = 1`` leaves θ unchanged.
    """
    if not (rope_theta > 0):
        raise ValueError(f"rope_theta must be > 0, got {rope_theta}")
    if not (factor >= 1):
        raise ValueError(f"factor must be >= 1 (the long context is at least the base length), got {factor}")
    return float(rope_theta * factor**THETA_EXPONENT)


def _dtype(dtype: str):
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return "auto" if dtype == "auto" else getattr(torch, dtype)


def load_model(
    name_or_path: str | os.PathLike,
    *,
    dtype: str = "float32",
    device: Any = None,
    attn_implementation: str = "sdpa",
):
    """Load any HF causal LM (``AutoModelForCausalLM``) from a local folder or a hub id.

    ``dtype``: float32 | bfloat16 | float16 | auto. ``device``: where to move it (None: stays on
    CPU). sdpa is the default attention: it takes boolean and float masks correctly (eager adds a
    boolean 4D mask to the scores as 0/1 numbers, which silently masks nothing), and runs forward and
    backward on CPU.
    """
    from transformers import AutoModelForCausalLM

    torch_dtype = _dtype(dtype)
    src = resolve_source(name_or_path, "model")
    local = Path(src).exists()
    if local and not (Path(src) / "config.json").is_file():
        raise UsageError(f"model path {src!r} has no config.json: pass a folder saved with save_pretrained")
    try:
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch_dtype, attn_implementation=attn_implementation)
    except (OSError, ValueError) as e:
        if local:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(
            f"model {src!r} is not a local folder and could not be loaded from the hub ({first}): "
            "pass an existing folder or a reachable hub id"
        ) from None
    if device is not None:
        model = model.to(device)
    return model


def init_model(
    preset: str,
    vocab_size: int,
    max_position_embeddings: int,
    rope_theta: float = 10000.0,
    **overrides,
):
    """A randomly initialised ``LlamaForCausalLM`` of the given preset (seed torch before calling).

    ``overrides`` are any ``LlamaConfig`` fields (e.g. ``bos_token_id``, ``num_hidden_layers``);
    they win over the preset. The attention implementation is sdpa.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if not (isinstance(vocab_size, int) and vocab_size >= 2):
        raise ValueError(f"vocab_size must be an int >= 2, got {vocab_size!r}")
    if not (isinstance(max_position_embeddings, int) and max_position_embeddings >= 2):
        raise ValueError(f"max_position_embeddings must be an int >= 2, got {max_position_embeddings!r}")
    if not (rope_theta > 0):
        raise ValueError(f"rope_theta must be > 0, got {rope_theta}")
    kwargs = asdict(PRESETS[preset])
    kwargs.update(
        vocab_size=vocab_size,
        max_position_embeddings=max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": float(rope_theta)},
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    kwargs.update(overrides)
    attn = kwargs.pop("attn_implementation", "sdpa")
    config = LlamaConfig(**kwargs)
    config._attn_implementation = attn
    model = LlamaForCausalLM(config)
    return model.to(torch.float32)


def _rope_dicts(config) -> list[dict]:
    """The RoPE parameter dict(s) of a config: one, or one per layer type (e.g. Gemma-3)."""
    params = getattr(config, "rope_parameters", None)
    if not isinstance(params, dict) or not params:
        return []
    nested = config.nested_rope_parameter_keys(params) if hasattr(config, "nested_rope_parameter_keys") else []
    return [params[k] for k in nested if params[k] is not None] if nested else [params]


def _rebuild_rotary(model, config) -> int:
    """Recompute every rotary-embedding module from ``config`` (their ``inv_freq`` is cached at init)."""
    count = 0
    for name, mod in list(model.named_modules()):
        if not (hasattr(mod, "inv_freq") and hasattr(mod, "rope_type") and getattr(mod, "config", None) is not None):
            continue
        device = mod.inv_freq.device
        new = type(mod)(mod.config).to(device)
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, new)
        count += 1
    return count


def extend_context(
    model,
    n: int,
    rope_theta: float | None = None,
    rope_scaling: str | dict | None = None,
):
    """Set up ``model`` (in place, and returned) for training and inference at context ``n``.

    The base length ``w`` is the model's current ``max_position_embeddings`` (its pretraining
    context). Then:

    - no ``rope_scaling``: ``rope_theta`` (default ``θ · (n/w)^(log 30.6 / log 4)``, the paper's
      rule; ``n <= w`` keeps θ) and ``max_position_embeddings = n``;
    - ``rope_scaling`` a type name (``linear``, ``dynamic``, ``yarn``, ``llama3``) or a dict with
      ``rope_type`` and that type's parameters (``factor`` defaults to ``n / w``,
      ``original_max_position_embeddings`` to ``w``; llama3's ``low_freq_factor``/
      ``high_freq_factor`` default to Llama-3.1's 1 and 4): θ stays unless ``rope_theta`` is given.
      ``dynamic`` keeps ``max_position_embeddings = w``: HF's dynamic NTK scales the base only for
      sequences longer than ``max_position_embeddings``, so raising it would switch scaling off.

    The rotary modules' cached frequencies are recomputed, so the model can be used directly;
    ``save_pretrained`` stores the new config. Models without RoPE parameters raise ValueError.
    """
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if not (isinstance(n, int) and n >= 2):
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    if rope_theta is not None and not (rope_theta > 0):
        raise ValueError(f"rope_theta must be > 0, got {rope_theta}")
    dicts = _rope_dicts(config)
    if not dicts:
        raise ValueError(
            f"model type {getattr(config, 'model_type', '?')!r} has no rope_parameters in its config: "
            "extend_context supports RoPE models (Llama, Mistral, Qwen, Gemma, ...)"
        )
    w = int(config.max_position_embeddings)
    ratio = n / w
    if rope_scaling is None:
        for d in dicts:
            old = float(d.get("rope_theta", getattr(config, "default_theta", 10000.0)))
            d["rope_theta"] = (
                float(rope_theta) if rope_theta is not None else (theta_for_extension(old, ratio) if ratio > 1 else old)
            )
        config.max_position_embeddings = n
    else:
        spec = {"rope_type": rope_scaling} if isinstance(rope_scaling, str) else dict(rope_scaling)
        kind = spec.get("rope_type", spec.get("type"))
        spec.pop("type", None)
        if kind not in ROPE_SCALING_TYPES:
            raise ValueError(f"rope_scaling type must be one of {', '.join(ROPE_SCALING_TYPES)}, got {kind!r}")
        spec["rope_type"] = kind
        spec.setdefault("factor", float(max(ratio, 1.0)))
        if kind in ("yarn", "llama3"):
            spec.setdefault("original_max_position_embeddings", w)
        if kind == "llama3":
            spec.setdefault("low_freq_factor", 1.0)
            spec.setdefault("high_freq_factor", 4.0)
        for d in dicts:
            theta = float(rope_theta) if rope_theta is not None else d.get("rope_theta")
            keep = {k: d[k] for k in ("partial_rotary_factor", "mrope_section") if k in d}
            d.clear()
            d.update(spec, rope_theta=theta, **keep)
        if kind != "dynamic":
            config.max_position_embeddings = n
    if hasattr(config, "validate_rope"):
        config.validate_rope()
    _rebuild_rotary(model, config)
    return model


def count_parameters(model) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())
