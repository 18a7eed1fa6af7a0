"""Models: load any HF causal LM, build Llama models from scratch, extend their context (RoPE).

Why this module exists: every subcommand (pretrain, score, train, eval) needs the same three things,
with the same error messages and the same defaults:

- :func:`load_model`: any Hugging Face causal LM by local folder or hub id. A missing folder that is
  not a plausible hub id is a user error (``UsageError``), never a traceback from deep inside
  ``huggingface_hub`` (the rule is :func:`tokenweight.identity.is_hub_id`; tokenizers load with
  :func:`tokenweight.identity.load_tokenizer`).
- :func:`resolve_runtime` / :class:`Runtime`: the runtime options every stage that runs a model
  shares (``device``, ``dtype``, ``attn_implementation``; the fields of
  :class:`tokenweight.config.RuntimeOptions`), checked here once, so that a combination that cannot
  run (flash-attention on CPU, float16 training on CPU, a device that is not there) is one line
  before any work starts; :func:`choose_attn_implementation` picks the best attention a model
  supports (flash_attention_2, else sdpa, else eager: Gemma-2 refuses sdpa) instead of crashing.
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

import json
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
#: tiny ≈ 1.2M, small ≈ 3.2M (sized to train on a CPU; its measured speed is in docs/TRAINING.md),
#: shallow ≈ 1.4M (2 layers: the demo's base model, because few layers form the
#: copy task's induction head much sooner than the 6-layer small preset; docs/TRAINING.md has the
#: measurements), mini ≈ 0.37M (the shallow model at a third of the width, one head: the demo's
#: smaller frozen scorer, 4.5x fewer parameters than shallow at vocab 4096), base ≈ 11M, large ≈ 60M.
#: Head dim 32 (64 for large; 40 for mini) keeps RoPE meaningful at small widths.
PRESETS: dict[str, Preset] = {
    "tiny": Preset(96, 4, 3, 3, 256, True),
    "small": Preset(160, 6, 5, 5, 432, True),
    "shallow": Preset(128, 2, 4, 4, 344, True),
    "mini": Preset(40, 2, 1, 1, 108, True),
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


# ----------------------------------------------------------------------------- runtime

#: compute dtypes of the runtime option ``dtype`` (training: mixed precision with float32 master weights)
RUNTIME_DTYPES = ("float32", "bfloat16", "float16")
#: attention implementations of the runtime option ``attn_implementation`` (auto: the best supported)
ATTN_IMPLEMENTATIONS = ("auto", "flash_attention_2", "sdpa", "eager")


@dataclass(frozen=True)
class Runtime:
    """Where and how a stage runs its models, checked and resolved by :func:`resolve_runtime`.

    ``device``: ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (never ``auto``); ``dtype``: one of
    :data:`RUNTIME_DTYPES`; ``attn_implementation``: one of :data:`ATTN_IMPLEMENTATIONS`, where
    ``auto`` is decided per model when it is loaded (:func:`choose_attn_implementation`).
    """

    device: str
    dtype: str
    attn_implementation: str

    def load(self, name_or_path):
        """The model of ``name_or_path`` in this runtime's dtype, on its device, with its attention."""
        return load_model(
            name_or_path, dtype=self.dtype, device=self.device, attn_implementation=self.attn_implementation
        )

    def attention_for(self, model_class, name: str = "") -> str:
        """The attention implementation a model of ``model_class`` gets here."""
        return choose_attn_implementation(model_class, self.attn_implementation, self.device, self.dtype, name=name)


def flash_attn_installed() -> bool:
    """Whether the ``flash_attn`` package (what transformers' ``flash_attention_2`` runs) is installed."""
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA device is present, else ``cpu``; any other device is checked
    (ValueError naming ``device``: not a device, or not present here)."""
    import torch

    text = str(device).strip().lower()
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"device {device!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cpu" and dev.index is None:
        return "cpu"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: no CUDA device is available here: use --device cpu (or auto)")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"device {device!r}: this machine has {count} CUDA device(s): use cuda:0 to cuda:{count - 1}"
            )
        return text
    if dev.type == "mps" and dev.index is None:
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {device!r}: MPS is not available here: use --device cpu (or auto)")
        return "mps"
    raise ValueError(f"device {device!r} is not supported: use auto, cpu, cuda or cuda:N")


def resolve_runtime(
    device: str = "auto", dtype: str = "float32", attn_implementation: str = "auto", *, training: bool = False
) -> Runtime:
    """The checked :class:`Runtime` of a stage's options (the one place of these rules).

    ValueError, its message starting with the option's name, for: an unknown or absent device; a
    dtype outside :data:`RUNTIME_DTYPES`; bfloat16 on a GPU without it (before Ampere); float16
    *training* on CPU (accelerate runs fp16 mixed precision on CPU without autocast, i.e. silently
    in float32); ``cuda:N`` for training (each process trains on its own GPU: choose them with
    ``CUDA_VISIBLE_DEVICES``); ``flash_attention_2`` without a CUDA device, without the
    ``flash_attn`` package, or in float32 (it runs in 16-bit only). On CPU every stage runs in
    float32 and bfloat16, and the inference stages (score, eval, show) also in float16.
    """
    import torch

    if dtype not in RUNTIME_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(RUNTIME_DTYPES)}, got {dtype!r}")
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)}, got {attn_implementation!r}"
        )
    dev = resolve_device(device)
    kind = dev.split(":")[0]
    if training and ":" in dev:
        raise ValueError(
            f"device {device!r}: training puts each process on its own GPU: pass --device cuda and choose the "
            "GPUs with CUDA_VISIBLE_DEVICES"
        )
    if kind == "cuda" and dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"dtype bfloat16: {torch.cuda.get_device_name(dev)} lacks it (it needs an Ampere or newer GPU): "
            "use --dtype float16 or float32"
        )
    if training and kind == "cpu" and dtype == "float16":
        raise ValueError(
            "dtype float16 training needs a GPU (on CPU accelerate runs float16 mixed precision without "
            "autocast, i.e. in float32): use --dtype bfloat16 or float32"
        )
    if attn_implementation == "flash_attention_2":
        if kind != "cuda":
            raise ValueError(
                f"attn_implementation flash_attention_2 needs a CUDA device, got device {dev}: use "
                "--attn-implementation sdpa (or auto), or --device cuda"
            )
        if not flash_attn_installed():
            raise ValueError(
                "attn_implementation flash_attention_2 needs the flash_attn package, which is not installed: "
                "pip install flash-attn, or use --attn-implementation sdpa (or auto)"
            )
        if dtype == "float32":
            raise ValueError(
                "attn_implementation flash_attention_2 runs in bfloat16 or float16, got dtype float32: pass "
                "--dtype bfloat16, or use --attn-implementation sdpa (or auto)"
            )
    return Runtime(dev, dtype, attn_implementation)


def causal_lm_class(config):
    """The ``AutoModelForCausalLM`` class of a model config; None when transformers has none for it."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM._model_mapping[type(config)]
    except (KeyError, ValueError):
        return None


def choose_attn_implementation(model_class, requested: str, device: str, dtype: str, *, name: str = "") -> str:
    """The attention implementation a model of ``model_class`` gets (how transformers 5 decides
    what a class supports: its ``_supports_flash_attn`` and ``_supports_sdpa`` flags).

    ``auto``: ``flash_attention_2`` when the class supports it, the ``flash_attn`` package is
    installed, the device is CUDA and the dtype is 16-bit; else ``sdpa`` when the class supports it
    (Llama, Qwen, Mistral, Gemma-3, ...); else ``eager`` (Gemma-2: transformers refuses sdpa for it
    because sdpa cannot soft-cap attention scores). An explicit implementation the class does not
    support is a ``UsageError`` naming the fix. ``model_class`` None (a config transformers maps
    to no causal-LM class): transformers' own default (sdpa, else eager) or the request as given.
    """
    if model_class is None:
        return None if requested == "auto" else requested
    flash = bool(getattr(model_class, "_supports_flash_attn", False))
    sdpa = bool(getattr(model_class, "_supports_sdpa", False))
    best = "sdpa" if sdpa else "eager"
    if flash and str(device).startswith("cuda") and dtype in ("bfloat16", "float16") and flash_attn_installed():
        best = "flash_attention_2"
    if requested == "auto":
        return best
    if (requested == "flash_attention_2" and not flash) or (requested == "sdpa" and not sdpa):
        what = f"model {name!r} ({model_class.__name__})" if name else model_class.__name__
        raise UsageError(
            f"{what} does not support attn_implementation {requested}: use --attn-implementation auto "
            f"(here: {best}) or eager"
        )
    return requested


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
    attn_implementation: str | None = "auto",
    runtime: Runtime | None = None,
):
    """Load any HF causal LM (``AutoModelForCausalLM``) from a local folder or a hub id.

    ``dtype``: float32 | bfloat16 | float16 | auto (the weights). ``device``: where to move it (None:
    stays on CPU; ``"auto"``: cuda when present). ``attn_implementation``: ``auto``/None (the best
    the model supports for where it runs: :func:`choose_attn_implementation`), ``flash_attention_2``,
    ``sdpa`` or ``eager``; one the model does not support is a ``UsageError`` naming the fix, before
    any weight is read. ``runtime``: where the model will run when that is not ``device``/``dtype``
    (training loads float32 weights on CPU; the Trainer moves them and autocasts to the runtime's
    dtype): what ``auto`` chooses for. Inference stages call ``Runtime.load`` instead.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    torch_dtype = _dtype(dtype)
    if device is not None:
        device = resolve_device(str(device))
    src = resolve_source(name_or_path, "model")
    local = Path(src).exists()
    if local and not (Path(src) / "config.json").is_file():
        raise UsageError(f"model path {src!r} has no config.json: pass a folder saved with save_pretrained")
    try:
        config = AutoConfig.from_pretrained(src)
        runs_on = runtime or Runtime(device or "cpu", dtype, "auto")
        attn = choose_attn_implementation(
            causal_lm_class(config), attn_implementation or "auto", runs_on.device, runs_on.dtype, name=str(src)
        )
        model = AutoModelForCausalLM.from_pretrained(src, config=config, dtype=torch_dtype, attn_implementation=attn)
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


def count_parameters(model) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())
