"""Runtime: where and how a stage runs its models (``device``, ``dtype``, ``attn_implementation``).

Every stage that runs a model (pretrain, score, train, eval, show) shares these runtime options
(the fields of :class:`tokenweight.config.RuntimeOptions`). :func:`resolve_runtime` checks them
here once, so that a combination that cannot run (flash-attention on CPU, float16 training on CPU,
a device that is not there) is one line before any work starts; the :class:`Runtime` it returns
loads models in those options (:meth:`Runtime.load`). What one model gets when it is loaded (the
device ``auto`` stands for, the attention ``auto`` picks for its class) is the loader's rule, in
:mod:`tokenweight.models`, which imports nothing of this module (``Runtime.load`` calls
``load_model``: the reverse import would be a cycle). Its names are looked up on the module
(``models.load_model``), so a test that replaces one there replaces it for the runtime too.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenweight import models

#: compute dtypes of the runtime option ``dtype`` (training: mixed precision with float32 master weights)
RUNTIME_DTYPES = ("float32", "bfloat16", "float16")
#: attention implementations of the runtime option ``attn_implementation`` (auto: the best supported)
ATTN_IMPLEMENTATIONS = ("auto", "flash_attention_2", "sdpa", "eager")


@dataclass(frozen=True)
class Runtime:
    """Where and how a stage runs its models, checked and resolved by :func:`resolve_runtime`.

    ``device``: ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (never ``auto``); ``dtype``: one of
    :data:`RUNTIME_DTYPES`; ``attn_implementation``: one of :data:`ATTN_IMPLEMENTATIONS`, where
    ``auto`` is decided per model when it is loaded (:func:`tokenweight.models.choose_attn_implementation`).
    """

    device: str
    dtype: str
    attn_implementation: str

    def load(self, name_or_path):
        """The model of ``name_or_path`` in this runtime's dtype, on its device, with its attention."""
        return models.load_model(
            name_or_path, dtype=self.dtype, device=self.device, attn_implementation=self.attn_implementation
        )

    def attention_for(self, model_class, name: str = "") -> str:
        """The attention implementation a model of ``model_class`` gets here."""
        return models.choose_attn_implementation(
            model_class, self.attn_implementation, self.device, self.dtype, name=name
        )


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
    dev = models.resolve_device(device)
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
        if not models.flash_attn_installed():
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
