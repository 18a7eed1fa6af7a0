"""The fused alternative to the chunked loss: per-token NLL from Cut-Cross-Entropy (CCE), on CUDA.

Why this module exists: :func:`tokenweight.loss.chunked_nll` runs anywhere and bounds the logits to
one ``[chunk, V]`` float32 buffer; CCE (Wijmans et al. 2024, ``cut-cross-entropy``, Apple's Triton
kernels) never writes logits to GPU memory at all: it computes the log-sum-exp over the vocabulary
and the target logit in on-chip tiles, and its backward recomputes the tiles. :func:`cce_nll` has the
contract of ``chunked_nll`` (aligned ``hidden [..., d]``, ``lm_head``, ``labels [...]`` -> ``[...]``
float32 NLL, 0 at ignored positions, differentiable in hidden and weight), so the trainer's weighted
loss (weights from ``nll.detach()``) runs unchanged on top of it (``--loss-kernel cce``).

How our output layer maps onto ``linear_cross_entropy(e, c, targets, reduction="none", shift=False)``
(cut-cross-entropy 25.1.1, read from its source):

- ``e`` = the hidden states in the compute dtype (autocast's, else the inputs', as the model's
  ``lm_head`` would run), ``c`` = the head's weight cast to it; CCE multiplies them with float32
  accumulation and does everything after the product in float32 (so its logits are not rounded to
  bf16 as the model's own ``lm_head`` output is: NLLs differ from ``chunked_nll`` by that rounding).
- Logit post-processing (:class:`tokenweight.logits.LogitPostprocessing`): a soft-cap ``c·tanh(z/c)``
  is CCE's ``softcap``; scales (Granite's ``z / s``, Cohere's ``z · s``) are folded into one factor
  ``f`` that multiplies ``e`` (``(f·e)·W = f·(e·W)``: the same logits, one rounding of ``f·e`` in
  hidden's dtype apart; exact for powers of two). A bias, or anything else, CCE cannot express: refused
  with one line naming ``--loss-kernel chunked``.
- ``filter_eps=None``: CCE's default (``"high"``) skips gradient tiles whose softmax entries are
  all below ``eps(dtype)/32``, an approximation; ``None`` computes every tile, so gradients are those
  of the NLL (pass ``filter_eps="high"`` for CCE's speed-up).
- CCE's backward takes only bf16/fp16 hidden states (an assertion in its kernel), so training needs
  a 16-bit compute dtype (``--dtype bfloat16``/``float16``); float32 works without gradients only.
  Its gradients accumulate over vocabulary and position tiles in that 16-bit dtype (ours: float32),
  which ``benchmarks/gpu_check.sh`` measures against ``chunked_nll``.

The package imports Triton at import time, so it cannot even be imported on a machine without it:
it is an optional extra (``pip install 'tokenweight[cce]'``), imported on first use, pinned (another
version is refused: its semantics were read from 25.1.1).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tokenweight.logits import LogitPostprocessing
from tokenweight.loss import _check_inputs, _check_post, _describe

__all__ = [
    "CCE_VERSION",
    "CCEKernel",
    "cce_kernel",
    "cce_logit_mapping",
    "cce_model_problem",
    "cce_nll",
    "cce_problem",
]

#: the version whose semantics this module was written against (pyproject's ``cce`` extra)
CCE_VERSION = "25.1.1"
_INSTALL = "pip install 'tokenweight[cce]'"
_ALTERNATIVE = "use --loss-kernel chunked"
_SIXTEEN_BIT = (torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class CCEKernel:
    """CCE's ``linear_cross_entropy`` and the compute dtypes its backward accepts."""

    linear_cross_entropy: Callable[..., Tensor]
    backward_dtypes: tuple[torch.dtype, ...] = _SIXTEEN_BIT


@functools.lru_cache(maxsize=1)
def cce_kernel() -> CCEKernel:
    """The installed ``cut_cross_entropy`` (imported once; ``ImportError`` naming the install line
    when it is missing, cannot be imported, e.g. without Triton, or is not :data:`CCE_VERSION`)."""
    try:
        import cut_cross_entropy
    except Exception as e:  # noqa: BLE001 -- ImportError, or Triton failing at import: both mean "not usable"
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise ImportError(f"cut-cross-entropy cannot be imported ({type(e).__name__}: {first}): {_INSTALL}") from None
    version = getattr(cut_cross_entropy, "__version__", None)
    if version != CCE_VERSION:
        raise ImportError(
            f"cut-cross-entropy {version} is installed, tokenweight is written and tested against {CCE_VERSION}: "
            f"{_INSTALL}"
        )
    return CCEKernel(cut_cross_entropy.linear_cross_entropy)


def _kernel_for(device: torch.device) -> CCEKernel:
    """The kernel for tensors on ``device`` (the seam the CPU tests replace with a pure-torch stand-in)."""
    if device.type != "cuda":
        raise ValueError(
            f"cce_nll needs CUDA tensors (CCE is a Triton GPU kernel), got {device}: use tokenweight.loss.chunked_nll"
        )
    return cce_kernel()


def cce_problem(device: str | torch.device, dtype: torch.dtype) -> str | None:
    """Why ``--loss-kernel cce`` cannot train on ``device`` with output-layer compute dtype ``dtype``
    (one sentence naming the fix, for an error message); None when it can. Checked in this order:
    a CUDA device, the package (imported here), a 16-bit dtype (CCE's backward)."""
    kind = torch.device(device).type
    if kind != "cuda":
        return f"--loss-kernel cce needs a CUDA GPU (Triton), and this run's device is {kind}: {_ALTERNATIVE}"
    try:
        kernel = cce_kernel()
    except ImportError as e:
        return f"--loss-kernel cce: {e}, or {_ALTERNATIVE}"
    if dtype not in kernel.backward_dtypes:
        return (
            f"--loss-kernel cce trains in bfloat16 or float16 only (CCE's backward takes 16-bit hidden states), "
            f"got {str(dtype).removeprefix('torch.')}: pass --dtype bfloat16, or {_ALTERNATIVE}"
        )
    return None


def cce_logit_mapping(post: LogitPostprocessing | None, bias: Tensor | None = None) -> tuple[float, float | None]:
    """``(factor, softcap)``: the model's logits ``post(e·W)`` as CCE's ``softcap(((factor·e)·W))``.

    ``ValueError`` (one line naming ``--loss-kernel chunked``) for what CCE cannot express: a bias of
    the output layer, or a post-processing op other than scales and a final soft-cap.
    """
    if bias is not None:
        raise ValueError(f"--loss-kernel cce: CCE has no bias term and this output layer has one: {_ALTERNATIVE}")
    factor, softcap = 1.0, None
    ops = post.ops if post else ()
    for k, (op, c) in enumerate(ops):
        if op == "mul":
            factor *= c
        elif op == "div":
            factor /= c
        elif op == "softcap" and k == len(ops) - 1:
            softcap = abs(c)  # c·tanh(z/c) is even in c
        else:
            raise ValueError(
                f"--loss-kernel cce cannot express the logit post-processing {post.describe()}: {_ALTERNATIVE}"
            )
    return factor, softcap


def cce_model_problem(model: nn.Module) -> str | None:
    """Why ``model``'s output layer cannot run on CCE (a bias, a logit post-processing CCE cannot
    express: :func:`cce_logit_mapping`), as one sentence naming the fix; None when it can. The
    machine's side (device, package, dtype) is :func:`cce_problem`."""
    from tokenweight.logits import logit_postprocessing

    try:
        cce_logit_mapping(logit_postprocessing(model.config), getattr(model.get_output_embeddings(), "bias", None))
    except ValueError as e:
        return str(e)
    return None


class _NoTargets(torch.autograd.Function):
    """All-zero NLL ``[...]`` when no label is scored, with zero gradients (as ``chunked_nll`` gives),
    without calling the kernel on zero rows."""

    @staticmethod
    def forward(ctx, hidden, weight):
        ctx.shapes = (hidden.shape, hidden.dtype, weight.shape, weight.dtype, hidden.device)
        return torch.zeros(hidden.shape[:-1], dtype=torch.float32, device=hidden.device)

    @staticmethod
    def backward(ctx, grad):
        h_shape, h_dtype, w_shape, w_dtype, device = ctx.shapes
        return torch.zeros(h_shape, dtype=h_dtype, device=device), torch.zeros(w_shape, dtype=w_dtype, device=device)


def cce_nll(
    hidden: Tensor,
    lm_head: nn.Module | Tensor,
    labels: Tensor,
    *,
    ignore_index: int = -100,
    matmul_dtype: torch.dtype | None = None,
    postprocessing: LogitPostprocessing | None = None,
    filter_eps: float | str | None = None,
) -> Tensor:
    """Per-token NLL ``[...]`` (float32, differentiable) of ``labels`` under ``post(lm_head(hidden))``,
    computed by CCE without logits in memory: the contract of :func:`tokenweight.loss.chunked_nll`.

    Args:
        hidden: ``[..., d]`` on a CUDA device, aligned (``hidden[..., t, :]`` predicts ``labels[..., t]``).
        lm_head: ``nn.Linear(d, V)`` without bias, or its weight ``[V, d]``.
        labels: ``[...]`` integer targets in ``[0, V)``, or ``ignore_index``.
        matmul_dtype: dtype of the product (default: autocast's, else the inputs' promoted dtype);
            with gradients it must be bfloat16 or float16 (CCE's backward).
        postprocessing: the model's logit post-processing (:func:`cce_logit_mapping`: scales and a
            final soft-cap; anything else is refused).
        filter_eps: CCE's gradient filter; None (default) computes every gradient tile (exact).

    Returns:
        ``nll`` of ``labels.shape``, float32, 0 at ignored positions; gradients flow to ``hidden``
        and the weight (in their dtypes). ``ValueError`` for bad arguments or what CCE cannot do
        here; ``ImportError`` (naming the install line) without the package.
    """
    _, weight, bias, flat_y, cd = _check_inputs(hidden, lm_head, labels, 1, matmul_dtype)  # 1: no chunks
    factor, softcap = cce_logit_mapping(_check_post(postprocessing), bias)
    kernel = _kernel_for(hidden.device)
    if cd not in (torch.float32, *_SIXTEEN_BIT):
        raise ValueError(
            f"cce_nll computes in float32, bfloat16 or float16, got {cd}: use tokenweight.loss.chunked_nll"
        )
    wants_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    if wants_grad and cd not in kernel.backward_dtypes:
        raise ValueError(
            f"cce_nll: CCE's backward takes 16-bit hidden states only, the product runs in {cd}: train under "
            "bfloat16/float16 autocast (--dtype bfloat16), or use tokenweight.loss.chunked_nll"
        )
    kept = flat_y != ignore_index
    targets = flat_y[kept]
    vocab = weight.shape[0]
    out_of_range = (targets < 0) | (targets >= vocab)
    if bool(out_of_range.any()):  # CCE reads the weight row of each target unchecked
        bad = targets[out_of_range][0].item()
        raise ValueError(f"labels must lie in [0, {vocab}) or equal ignore_index={ignore_index}, got {bad}")
    if targets.numel() == 0:
        return _NoTargets.apply(hidden, weight)
    with torch.autocast(hidden.device.type, enabled=False):
        e = hidden if factor == 1.0 else hidden * factor  # in hidden's dtype, before the cast
        nll = kernel.linear_cross_entropy(
            e.to(cd),
            weight.to(cd),
            flat_y.view(labels.shape),
            ignore_index=int(ignore_index),
            softcap=softcap,
            reduction="none",
            shift=False,
            filter_eps=filter_eps,
            impl="cce",
        )
    if nll.shape != labels.shape or nll.dtype != torch.float32:
        raise RuntimeError(f"CCE returned {_describe(nll)} for labels {tuple(labels.shape)}: not the 25.1.1 semantics")
    return nll
