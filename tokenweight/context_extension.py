"""Context extension: prepare a model trained at a short context for the long run (RoPE).

:func:`extend_context` sets ``max_position_embeddings`` and the RoPE parameters of a model for
context ``n``. The default follows the paper: Llama-3 8B went from 8k to 32k context with θ raised
from 500 000 to 15 300 000, i.e. a factor 30.6 for a 4x longer context. For any other ratio we
extend that point with the power law through it (``factor = 1`` at ratio 1)::

    θ' = θ · (n / w) ** (log 30.6 / log 4)        # exponent ≈ 2.4677

so 2x → ×5.53, 4x → ×30.6, 8x → ×169 (:func:`theta_for_extension`). (A power law in the ratio is
the usual shape of NTK-style base scaling, ``θ · r^(d/(d-2))``; the paper's exponent is just
steeper than NTK's ≈ 1.) Any explicit ``rope_theta`` wins. The model's own RoPE scaling types of
transformers 5.x (``config.rope_parameters``: ``linear``, ``dynamic``, ``yarn``, ``llama3``) are
available with ``rope_scaling=``; with a scaling type, θ is kept unless given. ``w`` is the
context the model was trained at (:func:`pretrained_context`).
"""

from __future__ import annotations

import json
import math

#: the paper's point: 4x context (8k -> 32k) with θ 500 000 -> 15 300 000
PAPER_THETA_FACTOR = 30.6
PAPER_CONTEXT_RATIO = 4.0
#: exponent of the θ power law through the paper's point (≈ 2.4677)
THETA_EXPONENT = math.log(PAPER_THETA_FACTOR) / math.log(PAPER_CONTEXT_RATIO)

#: the model's own RoPE scaling types that ``rope_scaling=`` selects (transformers 5.x)
ROPE_SCALING_TYPES = ("linear", "dynamic", "yarn", "llama3")


def theta_for_extension(rope_theta: float, factor: float) -> float:
    """RoPE base for a context ``factor`` times longer: ``θ · factor ** (log 30.6 / log 4)``.

    Exactly the paper's 500 000 → 15 300 000 at ``factor = 4``; ``factor = 1`` leaves θ unchanged.
    """
    if not (rope_theta > 0):
        raise ValueError(f"rope_theta must be > 0, got {rope_theta}")
    if not (factor >= 1):
        raise ValueError(f"factor must be >= 1 (the long context is at least the base length), got {factor}")
    return float(rope_theta * factor**THETA_EXPONENT)


def _rope_dicts(config) -> dict[str, dict]:
    """The RoPE parameter dict(s) of a config: ``{"": dict}``, or one per layer type (Gemma-3:
    ``sliding_attention``, ``full_attention``); empty without RoPE parameters."""
    params = getattr(config, "rope_parameters", None)
    if not isinstance(params, dict) or not params:
        return {}
    nested = config.nested_rope_parameter_keys(params) if hasattr(config, "nested_rope_parameter_keys") else []
    return {k: params[k] for k in nested if params[k] is not None} if nested else {"": params}


def pretrained_context(model) -> int:
    """The short context ``w`` a model (or config) was trained at, before any context extension:
    ``original_max_position_embeddings`` of its RoPE parameters when they have one (Llama-3.1's 8192
    under its ``llama3`` scaling to 131072, Phi-3's with ``longrope``, YaRN models), else
    ``max_position_embeddings``."""
    config = getattr(model, "config", model)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    originals = [
        int(d["original_max_position_embeddings"])
        for d in _rope_dicts(config).values()
        if d.get("original_max_position_embeddings")
    ]
    return min(originals) if originals else int(config.max_position_embeddings)


def _rebuild_rotary(model, config) -> int:
    """Recompute every rotary-embedding module from ``config`` (their frequencies are cached at init:
    ``inv_freq``, or one ``<layer_type>_inv_freq`` per layer type as in Gemma-3)."""
    count = 0
    for name, mod in list(model.named_modules()):
        if not (hasattr(mod, "rope_type") and getattr(mod, "config", None) is not None):
            continue
        cached = [b for key, b in mod.named_buffers(recurse=False) if key.endswith("inv_freq")]
        if not cached:
            continue
        device = cached[0].device
        new = type(mod)(mod.config).to(device)
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, new)
        count += 1
    return count


def _scaling_spec(rope_scaling: str | dict, n: int, w: int) -> dict:
    """The RoPE dict of an explicit scaling type for ``w -> n`` (factor ``n / w``, original ``w``)."""
    spec = {"rope_type": rope_scaling} if isinstance(rope_scaling, str) else dict(rope_scaling)
    legacy = spec.pop("type", None)
    kind = spec.get("rope_type", legacy)
    if kind not in ROPE_SCALING_TYPES:
        raise ValueError(f"rope_scaling type must be one of {', '.join(ROPE_SCALING_TYPES)}, got {kind!r}")
    spec["rope_type"] = kind
    spec.setdefault("factor", float(max(n / w, 1.0)))
    if kind in ("yarn", "llama3"):
        spec.setdefault("original_max_position_embeddings", w)
    if kind == "llama3":
        spec.setdefault("low_freq_factor", 1.0)
        spec.setdefault("high_freq_factor", 4.0)
    return spec


def extend_context(
    model,
    n: int,
    rope_theta: float | None = None,
    rope_scaling: str | dict | None = None,
    base_context: int | None = None,
):
    """Set up ``model`` (in place, and returned) for training and inference at context ``n``.

    ``w`` = ``base_context``, default :func:`pretrained_context` (the context the model was trained
    at: ``original_max_position_embeddings`` of its RoPE parameters, else ``max_position_embeddings``).
    Each RoPE dict of ``config.rope_parameters`` is extended (per layer type where the config has one
    per type; a ``sliding_attention`` one is kept: those layers never look further back than their
    window, as in Gemma-3's own long-context recipe, which changes only its global layers):

    - no ``rope_scaling``: θ ← ``rope_theta`` if given, else the paper's rule
      ``θ · (n/c)^(log 30.6 / log 4)`` when ``n > c``, where ``c`` is the context the dict already
      serves: ``w`` for plain RoPE, ``max_position_embeddings`` for a dict that already scales
      (``linear``, ``dynamic``, ``yarn``, ``llama3``, ``longrope``: e.g. Llama-3.1 serves 131072 and
      is left as it is up to there). The scaling itself is kept; a ``yarn``/``longrope`` dict without
      ``factor`` gets its implicit one (``max_position_embeddings / original``) pinned, so that the
      new ``max_position_embeddings`` changes nothing but θ. ``longrope`` already switches from its
      ``short_factor`` (windows of at most ``original_max_position_embeddings`` tokens, i.e. the
      short-context scores) to its ``long_factor`` beyond, so it needs nothing up to its capacity.
    - ``rope_scaling`` a type name (``linear``, ``dynamic``, ``yarn``, ``llama3``) or a dict with
      ``rope_type`` and that type's parameters: the dict is replaced by that scaling of ``w -> n``
      (``factor`` default ``n / w``, ``original_max_position_embeddings`` ``w``; llama3's
      ``low_freq_factor``/``high_freq_factor`` default to Llama-3.1's 1 and 4; short/long factors of
      a longrope dict are dropped), θ and ``partial_rotary_factor`` kept unless ``rope_theta`` is
      given. ``dynamic`` sets ``max_position_embeddings = w``: HF's dynamic NTK scales the base only
      for sequences longer than ``max_position_embeddings``.

    ``max_position_embeddings`` becomes ``max(max_position_embeddings, n)`` (a top-level
    ``original_max_position_embeddings``, Phi-3's, follows the dicts). When nothing changes (``n``
    within what the model serves, no explicit option) the model is returned untouched; else the
    rotary modules' cached frequencies are recomputed, so the model can be used directly, and
    ``save_pretrained`` stores the new config. A model without RoPE parameters, or a family that
    refuses the result (Phi-3 takes only ``default``/``longrope``), raises ValueError.
    """
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if not (isinstance(n, int) and n >= 2):
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    if rope_theta is not None and not (rope_theta > 0):
        raise ValueError(f"rope_theta must be > 0, got {rope_theta}")
    if base_context is not None and not (isinstance(base_context, int) and base_context >= 2):
        raise ValueError(f"base_context must be an int >= 2, got {base_context!r}")
    dicts = {k: d for k, d in _rope_dicts(config).items() if "sliding" not in k}
    if not dicts:
        raise ValueError(
            f"model type {getattr(config, 'model_type', '?')!r} has no rope_parameters in its config: "
            "extend_context supports RoPE models (Llama, Mistral, Qwen, Gemma, ...)"
        )
    w = base_context or pretrained_context(config)
    capacity = int(config.max_position_embeddings)
    before = json.dumps([config.rope_parameters, capacity], sort_keys=True, default=str)
    if rope_scaling is None:
        for d in dicts.values():
            old = float(d.get("rope_theta", getattr(config, "default_theta", 10000.0)))
            served = w if d.get("rope_type", "default") == "default" else capacity
            if n > capacity and d.get("rope_type") in ("yarn", "longrope") and d.get("factor") is None:
                d["factor"] = capacity / d["original_max_position_embeddings"]
            if rope_theta is not None:
                d["rope_theta"] = float(rope_theta)
            elif n > served:
                d["rope_theta"] = theta_for_extension(old, n / served)
        config.max_position_embeddings = max(capacity, n)
    else:
        spec = _scaling_spec(rope_scaling, n, w)
        for d in dicts.values():
            theta = float(rope_theta) if rope_theta is not None else d.get("rope_theta")
            keep = {k: d[k] for k in ("partial_rotary_factor", "mrope_section") if k in d}
            d.clear()
            d.update(spec, rope_theta=theta, **keep)
        config.max_position_embeddings = w if spec["rope_type"] == "dynamic" else max(capacity, n)
        if getattr(config, "original_max_position_embeddings", None) is not None:
            config.original_max_position_embeddings = spec.get("original_max_position_embeddings", w)
    if json.dumps([config.rope_parameters, config.max_position_embeddings], sort_keys=True, default=str) == before:
        return model
    if hasattr(config, "validate_rope"):
        config.validate_rope()
    _rebuild_rotary(model, config)
    return model
