"""Models: load any HF causal LM, or build a Llama model from scratch.

Why this module exists: every subcommand (pretrain, score, train, eval) needs the same models,
with the same error messages and the same defaults:

- :func:`load_model`: any Hugging Face causal LM by local folder or hub id. A missing folder that is
  not a plausible hub id is a user error (``UsageError``), never a traceback from deep inside
  ``huggingface_hub`` (the rule is :func:`tokenweight.identity.is_hub_id`; tokenizers load with
  :func:`tokenweight.identity.load_tokenizer`). What one model gets when it is loaded is decided
  here: its device (:func:`resolve_device`), the dtype of its weights, and its attention:
  :func:`choose_attn_implementation` picks the best attention a model supports
  (flash_attention_2, else sdpa, else eager: Gemma-2 refuses sdpa) instead of crashing. The
  runtime options a stage runs its models with are checked in :mod:`tokenweight.runtime`; RoPE
  context extension is :mod:`tokenweight.context_extension`.
- :data:`PRESETS` / :func:`init_model`: Llama-architecture models from scratch, ~1M to ~60M
  parameters, the CPU-sized stand-ins for "a model pretrained at short context" (the paper's 8k
  Llama-3). Small presets tie input and output embeddings (at these sizes the embedding matrix is
  a large share of all parameters).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tokenweight.errors import UsageError
from tokenweight.identity import resolve_source

#: dtypes of the weights :func:`load_model` loads (auto: the checkpoint's own)
DTYPES = ("float32", "bfloat16", "float16", "auto")


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
#: smaller frozen scorer of claim 4's ablation, 4.5x fewer parameters than shallow at vocab 4096: it
#: cannot copy), narrow ≈ 0.41M (two heads at width 44: the capable smaller scorer within 4x, 4.04x
#: fewer; the search is in docs/TRAINING.md), base ≈ 11M, large ≈ 60M.
#: Head dim 32 (64 for large; 40 for mini, 22 for narrow) keeps RoPE meaningful at small widths.
PRESETS: dict[str, Preset] = {
    "tiny": Preset(96, 4, 3, 3, 256, True),
    "small": Preset(160, 6, 5, 5, 432, True),
    "shallow": Preset(128, 2, 4, 4, 344, True),
    "mini": Preset(40, 2, 1, 1, 108, True),
    "narrow": Preset(44, 2, 2, 2, 120, True),
    "base": Preset(256, 8, 8, 8, 768, False),
    "large": Preset(640, 10, 10, 10, 1728, False),
}


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
    runtime: Any = None,
):
    """Load any HF causal LM (``AutoModelForCausalLM``) from a local folder or a hub id.

    ``dtype``: float32 | bfloat16 | float16 | auto (the weights). ``device``: where to move it (None:
    stays on CPU; ``"auto"``: cuda when present). ``attn_implementation``: ``auto``/None (the best
    the model supports for where it runs: :func:`choose_attn_implementation`), ``flash_attention_2``,
    ``sdpa`` or ``eager``; one the model does not support is a ``UsageError`` naming the fix, before
    any weight is read. ``runtime``: a :class:`tokenweight.runtime.Runtime`, where the model will
    run when that is not ``device``/``dtype`` (training loads float32 weights on CPU; the Trainer
    moves them and autocasts to the runtime's dtype): what ``auto`` chooses for. Inference stages
    call :meth:`tokenweight.runtime.Runtime.load` instead.
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
        runs_on = (runtime.device, runtime.dtype) if runtime is not None else (device or "cpu", dtype)
        attn = choose_attn_implementation(
            causal_lm_class(config), attn_implementation or "auto", *runs_on, name=str(src)
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


def count_parameters(model) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())
