"""Memory-efficient (weighted) cross-entropy for language models.

Why this module exists: the logits of a long sequence are the largest tensor of a training step.
At n = 32 768 tokens and a 128k vocabulary they take 16 GiB in float32, and autograd keeps about
three such tensors (logits, log-softmax, their gradient). Token weighting makes it worse: the
weights are computed *from* the per-token NLL of the very forward pass that is being trained, so a
naive implementation either keeps the logits alive while the weights are computed or runs the
output layer twice.

Here the logits only ever exist ``chunk_size`` positions at a time, in one reused float32
``[chunk_size, V]`` buffer (log-softmax and softmax are computed in place in it), and positions
whose label is ``ignore_index`` never reach the vocabulary projection. Two entry points:

- :func:`chunked_nll` returns the per-token NLL ``[b, n]`` (float32) *with* gradient support, for
  weights that depend on it: compute the weights from ``nll.detach()`` (the long-context NLL of the
  token-weighting method, at no extra cost), then :func:`weighted_nll_loss` forms
  ``sum(w * nll) / count`` with ordinary autograd. Its backward receives ``grad_nll = w / count``
  and recomputes each chunk's logits (one extra product of the head's size: 4 instead of 3).
- :func:`weighted_lm_loss` takes weights known up front (or None: plain cross-entropy); then
  ``d loss / d nll`` is known in the forward, and the gradients are computed from the same chunk of
  logits as the loss: 3 products, like the naive loss, and no recomputation.

Precision: the matrix product runs in the compute dtype (the inputs' dtype, or autocast's, exactly
as the model's own ``lm_head`` would run it, so NLLs here equal the model's ``logits.float()``
losses), and everything after it (log-softmax, softmax, gradient of the logits, the bias gradient,
the accumulation of the weight gradient over chunks) is float32. ``matmul_dtype=torch.float32``
upcasts the product itself, for exact NLLs from a bf16 model at the cost of a float32 copy of the
weight during each pass. Gradients come back in the inputs' dtypes.

Models that change their logits after the output layer (Gemma-2's soft-capping, Granite's and
Cohere's logit scales) pass ``postprocessing=tokenweight.logits.logit_postprocessing(config)``:
each chunk's logits are post-processed exactly as the model does it before the log-softmax, and
the gradient goes through the same operations (for a soft-cap ``c·tanh(z/c)``: times
``1 - (out/c)^2``, kept in a second chunk buffer), so NLL and gradients are the model's own.

Two-phase use (what the trainer does; ``num_items`` = scored tokens of the whole accumulated,
multi-device batch)::

    nll = chunked_nll(hidden, model.lm_head, labels)        # one pass over the vocabulary
    weights = scheme(nll.detach(), short_nll, labels != -100)
    loss = weighted_nll_loss(nll, labels != -100, weights, num_items=num_items)
"""

from __future__ import annotations

from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from tokenweight.choices import DEFAULT_CHUNK_SIZE
from tokenweight.logits import LogitPostprocessing

__all__ = ["DEFAULT_CHUNK_SIZE", "chunked_nll", "weighted_nll_loss", "weighted_lm_loss"]

_REDUCTIONS = ("mean", "sum")


def _head_params(lm_head: nn.Module | Tensor) -> tuple[Tensor, Tensor | None]:
    """``(weight [V, d], bias [V] or None)`` of an ``nn.Linear`` or a bare weight tensor."""
    if isinstance(lm_head, nn.Linear):
        return lm_head.weight, lm_head.bias
    if isinstance(lm_head, Tensor):
        return lm_head, None
    raise ValueError(f"lm_head must be an nn.Linear or a weight tensor of shape [V, d], got {type(lm_head).__name__}")


def _compute_dtype(hidden: Tensor, weight: Tensor, matmul_dtype: torch.dtype | None) -> torch.dtype:
    """The dtype of the output-layer product: explicit, else autocast's, else the promoted inputs'."""
    if matmul_dtype is not None:
        return matmul_dtype
    device_type = hidden.device.type
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _rows(x: Tensor, rows: Tensor | None, start: int, end: int) -> Tensor:
    """Rows ``start:end`` of the kept positions: a view when every position is kept."""
    return x[start:end] if rows is None else x.index_select(0, rows[start:end])


def _chunk_logits(h: Tensor, w: Tensor, b: Tensor | None, out32: Tensor, post: LogitPostprocessing | None) -> Tensor:
    """float32 logits ``[c, V]`` of hidden rows ``h [c, d]`` written into the reused buffer ``out32``,
    post-processed by ``post`` as the model does it (in the product's dtype unless the family
    upcasts first), so they equal the model's own ``logits.float()``.

    Reusing one buffer keeps the peak at one chunk and, on CPU, avoids mapping fresh pages for
    every chunk (large allocations go straight to mmap/munmap there).
    """
    if h.dtype == torch.float32:
        if b is None:
            out = torch.mm(h, w.t(), out=out32)
        else:
            out = torch.addmm(b, h, w.t(), out=out32)
    else:
        z = F.linear(h, w, b)
        if post is not None and not post.float32:
            post.apply_(z)
            post = None
        out = out32.copy_(z)
    return out if post is None else post.apply_(out)


class _Plan:
    """What both passes share: kept rows, their targets, the compute-dtype weight, the buffer.

    ``rows [M]`` are the positions whose label is not ``ignore_index`` (``None`` when all are kept,
    so that chunks are plain slices); ``targets [M]``; ``w``/``b`` the head in the compute dtype
    (the same tensors when no cast is needed); ``post`` the logit post-processing (None: none).
    """

    def __init__(self, hidden, weight, bias, rows, targets, chunk_size, compute_dtype, post=None):
        self.hidden, self.rows, self.targets = hidden, rows, targets
        self.chunk_size, self.cd = chunk_size, compute_dtype
        self.post = post if post else None
        self.n_kept = targets.numel()
        self.w = weight.to(compute_dtype)
        self.b = None if bias is None else bias.to(compute_dtype)
        rows_per_chunk = min(chunk_size, self.n_kept)
        self.buf = torch.empty(rows_per_chunk, weight.shape[0], dtype=torch.float32, device=hidden.device)
        self.dbuf = None  # d softcap / dz of a chunk: a second buffer, for soft-capped models only

    def chunks(self):
        """Yield ``(start, end, h [c, d] in compute dtype, logits [c, V] float32)`` chunk by chunk."""
        for start in range(0, self.n_kept, self.chunk_size):
            end = min(start + self.chunk_size, self.n_kept)
            h = _rows(self.hidden, self.rows, start, end).to(self.cd)
            yield start, end, h, _chunk_logits(h, self.w, self.b, self.buf[: end - start], self.post)

    def softcap_grad(self, logits: Tensor) -> Tensor | None:
        """``d softcap / dz [c, V]`` of a chunk's post-processed ``logits`` (before they are
        overwritten), None when the model does not soft-cap."""
        if self.post is None or self.post.softcap is None:
            return None
        if self.dbuf is None:
            self.dbuf = torch.empty_like(self.buf)
        return self.post.softcap_grad(logits, self.dbuf[: logits.shape[0]])

    def chain(self, g: Tensor, dsoftcap: Tensor | None) -> Tensor:
        """d loss / d post-processed logits -> d loss / d the head's output, in place."""
        return g if self.post is None else self.post.backward_(g, dsoftcap)


_FLOAT32_OUT_ADDMM: dict[str, bool] = {}  # device type -> whether addmm(out_dtype=float32) runs there


def _addmm_into_float32(acc: Tensor, a: Tensor, b: Tensor) -> None:
    """``acc [V, d] float32 += a @ b`` for low-precision ``a``, ``b``.

    Where the backend has it (CUDA), one GEMM accumulates into ``acc`` in float32 (no rounding of
    each chunk's product to bf16, no ``[V, d]`` temporary, hence also faster than the fallback:
    benchmarks/RESULTS.md); elsewhere the product is formed in the low dtype and added.
    """
    kind = acc.device.type
    if _FLOAT32_OUT_ADDMM.get(kind, True):
        try:
            torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
            _FLOAT32_OUT_ADDMM[kind] = True
            return
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, TypeError):  # NotImplementedError is a RuntimeError
            _FLOAT32_OUT_ADDMM[kind] = False
    acc.add_(torch.mm(a, b))


class _GradAccumulator:
    """Gradients of hidden ``[N, d]``, weight ``[V, d]``, bias ``[V]`` summed over chunks.

    Weight and bias gradients accumulate in float32 (summing many bf16 chunk products in bf16
    would lose precision); the hidden gradient of each row is written once, in hidden's dtype.
    """

    def __init__(self, hidden, weight, bias, need, every_row_kept):
        need_h, need_w, need_b = need
        dev, f32 = hidden.device, torch.float32
        self.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        self.h = None if not need_h else torch.empty_like(hidden) if every_row_kept else torch.zeros_like(hidden)
        self.w = torch.zeros(weight.shape, dtype=f32, device=dev) if need_w else None
        self.b = torch.zeros(bias.shape, dtype=f32, device=dev) if need_b and bias is not None else None

    def add(self, plan: _Plan, start: int, end: int, h: Tensor, g: Tensor) -> None:
        """Add chunk ``start:end``'s contribution: ``g [c, V]`` float32 = d loss / d logits."""
        if self.b is not None:
            self.b.add_(g.sum(dim=0))
        g_cd = g if plan.cd == torch.float32 else g.to(plan.cd)
        if self.h is not None:
            if plan.rows is None and self.h.dtype == plan.cd:
                torch.mm(g_cd, plan.w, out=self.h[start:end])  # [c, d], straight into place
            elif plan.rows is None:
                self.h[start:end] = torch.mm(g_cd, plan.w)
            else:
                self.h.index_copy_(0, plan.rows[start:end], torch.mm(g_cd, plan.w).to(self.h.dtype))
        if self.w is not None:
            if plan.cd == torch.float32:
                self.w.addmm_(g_cd.t(), h)  # in place: no [V, d] temporary
            else:
                _addmm_into_float32(self.w, g_cd.t(), h)

    def finish(self, scale: Tensor | None = None) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """The three gradients in the inputs' dtypes, optionally times a scalar ``scale``."""
        out = []
        for acc, dtype in zip((self.h, self.w, self.b), self.dtypes):
            if acc is not None and scale is not None:  # scaled in float32: scale may be 1/count
                acc = acc.mul_(scale) if acc.dtype == torch.float32 else acc.float().mul_(scale)
            out.append(None if acc is None else acc.to(dtype))
        return tuple(out)


def _prepare(hidden, weight, labels, ignore_index):
    """Kept rows ``[M]`` (None when all are kept) and their targets ``[M]``; checks label range."""
    vocab = weight.shape[0]
    rows = (labels != ignore_index).nonzero().squeeze(1)  # ignored positions get no vocabulary work
    if rows.numel() == labels.numel():
        rows, targets = None, labels
    else:
        targets = labels.index_select(0, rows)
    out_of_range = (targets < 0) | (targets >= vocab)
    if targets.numel() and bool(out_of_range.any()):
        bad = targets[out_of_range][0].item()
        raise ValueError(f"labels must lie in [0, {vocab}) or equal ignore_index={ignore_index}, got {bad}")
    return rows, targets


def _nll_pass(plan: _Plan, n_rows: int, grads: _GradAccumulator | None = None, coef: Tensor | None = None) -> Tensor:
    """One chunked pass: per-token NLL ``[N]`` float32 (0 at ignored rows).

    With ``grads`` (and ``coef [M]``, the kept rows' d loss / d nll) it also accumulates the
    gradients of ``sum(coef * nll)`` from the same logits, so no second pass is needed.
    The NLL is ``-log_softmax(logits)[target]``, computed exactly as ``F.cross_entropy`` does.
    """
    nll_kept = torch.empty(plan.n_kept, dtype=torch.float32, device=plan.hidden.device)
    for start, end, h, logits in plan.chunks():
        targets = plan.targets[start:end, None]
        dsoftcap = plan.softcap_grad(logits) if grads is not None else None
        # In place (the kernels finish a row's max and sum before writing it): never a second
        # [c, V] buffer (but for a soft-cap's derivative), and one fused kernel instead of separate
        # max/exp/sum/log passes.
        logp = torch.log_softmax(logits, dim=1, out=logits)
        nll_kept[start:end] = logp.gather(1, targets).squeeze(1).neg_()
        if grads is not None:
            g = _softmax_to_grad(logp.exp_(), targets, coef[start:end])
            grads.add(plan, start, end, h, plan.chain(g, dsoftcap))
    if plan.rows is None:
        return nll_kept
    nll = torch.zeros(n_rows, dtype=torch.float32, device=plan.hidden.device)
    return nll.index_copy_(0, plan.rows, nll_kept)


def _softmax_to_grad(p: Tensor, targets: Tensor, coef: Tensor) -> Tensor:
    """In place: ``p [c, V]`` softmax -> ``(p - onehot(targets [c, 1])) * coef[:, None]`` = d loss / d logits."""
    p.scatter_add_(1, targets, p.new_full(targets.shape, -1.0))
    return p.mul_(coef[:, None])


class _ChunkedNLL(torch.autograd.Function):
    """Per-token NLL of ``softmax(hidden @ weight.T + bias)`` without materialising all logits.

    forward(hidden [N, d], weight [V, d], bias [V] | None, labels [N] long, chunk_size, ignore_index,
    compute_dtype, post) -> nll [N] float32 (0 where ``labels == ignore_index``).
    Saves only the inputs; backward recomputes the logits chunk by chunk, because ``grad_nll``
    (e.g. the token weights) is not known in the forward.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_size, ignore_index, compute_dtype, post):
        with torch.autocast(hidden.device.type, enabled=False):
            rows, targets = _prepare(hidden, weight, labels, ignore_index)
            plan = _Plan(hidden, weight, bias, rows, targets, chunk_size, compute_dtype, post)
            nll = _nll_pass(plan, hidden.shape[0])
        ctx.save_for_backward(hidden, weight, bias, rows, targets)
        ctx.chunk_size, ctx.compute_dtype, ctx.post = chunk_size, compute_dtype, post
        return nll

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_nll):
        hidden, weight, bias, rows, targets = ctx.saved_tensors
        need = ctx.needs_input_grad[:3]
        if not any(need):
            return (None,) * 8
        with torch.autocast(hidden.device.type, enabled=False):
            grads = _GradAccumulator(hidden, weight, bias, need, rows is None)
            coef = (grad_nll if rows is None else grad_nll.index_select(0, rows)).to(torch.float32)
            plan = _Plan(hidden, weight, bias, rows, targets, ctx.chunk_size, ctx.compute_dtype, ctx.post)
            for start, end, h, logits in plan.chunks():
                dsoftcap = plan.softcap_grad(logits)
                p = torch.softmax(logits, dim=1, out=logits)  # in place, as in _nll_pass
                g = _softmax_to_grad(p, targets[start:end, None], coef[start:end])
                grads.add(plan, start, end, h, plan.chain(g, dsoftcap))
            return (*grads.finish(), None, None, None, None, None)


class _FusedWeightedCE(torch.autograd.Function):
    """``sum(coef * nll)`` with its gradients computed in the forward, from the same logits.

    forward(hidden [N, d], weight [V, d], bias [V] | None, labels [N] long, coef [N] float32 (constant),
    chunk_size, ignore_index, compute_dtype, want_grad, post) -> (total scalar float32, nll [N] float32).
    When the weights are known before the forward (one-call :func:`weighted_lm_loss`), d loss / d nll
    is known too, so the gradient needs no recomputation of the logits: 3 matrix products instead of
    4, as many as the naive loss. The gradients (held until backward) are scaled by the incoming
    scalar gradient. ``nll`` is returned as a constant.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, coef, chunk_size, ignore_index, compute_dtype, want_grad, post):
        with torch.autocast(hidden.device.type, enabled=False):
            rows, targets = _prepare(hidden, weight, labels, ignore_index)
            plan = _Plan(hidden, weight, bias, rows, targets, chunk_size, compute_dtype, post)
            need = tuple(want_grad and n for n in ctx.needs_input_grad[:3])
            grads = _GradAccumulator(hidden, weight, bias, need, rows is None) if any(need) else None
            coef_kept = coef if rows is None else coef.index_select(0, rows)
            nll = _nll_pass(plan, hidden.shape[0], grads, coef_kept)
            total = (nll * coef).sum()
        ctx.grads, ctx.grads_used = grads, False
        ctx.mark_non_differentiable(nll)
        return total, nll

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_total, _grad_nll):
        if ctx.grads_used:
            raise RuntimeError(
                "backward through weighted_lm_loss twice is not supported (its gradients are computed "
                "in the forward and consumed once): use chunked_nll + weighted_nll_loss instead"
            )
        grads, ctx.grads, ctx.grads_used = ctx.grads, None, True  # the buffers are scaled in place
        if grads is None:
            return (None,) * 10
        return (*grads.finish(grad_total), None, None, None, None, None, None, None)


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _describe(x) -> str:
    if isinstance(x, Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"


def _check_inputs(hidden, lm_head, labels, chunk_size, matmul_dtype):
    """Validate the shared arguments; -> ``(flat hidden [N, d], weight, bias, flat labels [N], compute dtype)``."""
    weight, bias = _head_params(lm_head)
    if not isinstance(hidden, Tensor) or not hidden.is_floating_point() or hidden.dim() < 1:
        raise ValueError(f"hidden must be a floating-point tensor [..., d], got {_describe(hidden)}")
    if not isinstance(labels, Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {_describe(labels)}")
    if tuple(labels.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(
            f"labels must have shape hidden.shape[:-1] = {tuple(hidden.shape[:-1])}, got {tuple(labels.shape)}"
        )
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1] or not weight.is_floating_point():
        raise ValueError(
            f"lm_head weight must be a floating-point [V, {hidden.shape[-1]}] tensor, got {_describe(weight)}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"lm_head bias must have shape [{weight.shape[0]}], got {tuple(bias.shape)}")
    for name, t in (("labels", labels), ("lm_head weight", weight)):
        if t.device != hidden.device:
            raise ValueError(f"{name} is on {t.device} but hidden is on {hidden.device}: move them to one device")
    _check_int("chunk_size", chunk_size, 1)
    if matmul_dtype is not None and not (isinstance(matmul_dtype, torch.dtype) and matmul_dtype.is_floating_point):
        raise ValueError(f"matmul_dtype must be None or a floating-point torch.dtype, got {matmul_dtype!r}")
    cd = _compute_dtype(hidden, weight, matmul_dtype)
    return hidden.reshape(-1, hidden.shape[-1]), weight, bias, labels.reshape(-1).long(), cd


def _check_post(postprocessing) -> LogitPostprocessing | None:
    """``postprocessing`` (None or a :class:`~tokenweight.logits.LogitPostprocessing`; empty -> None)."""
    if postprocessing is not None and not isinstance(postprocessing, LogitPostprocessing):
        raise ValueError(
            "postprocessing must be None or a tokenweight.logits.LogitPostprocessing "
            f"(tokenweight.logits.logit_postprocessing(model.config)), got {_describe(postprocessing)}"
        )
    return postprocessing or None


def _check_reduction(reduction: str, num_items) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if num_items is None or isinstance(num_items, Tensor):
        if reduction == "sum" and num_items is not None:
            raise ValueError("num_items is only used with reduction='mean'; got reduction='sum'")
        return
    if reduction == "sum":
        raise ValueError("num_items is only used with reduction='mean'; got reduction='sum'")
    if isinstance(num_items, bool) or not isinstance(num_items, Real) or not num_items >= 0:
        raise ValueError(f"num_items must be None, a number >= 0 or a tensor, got {num_items!r}")


def _loss_weights(mask: Tensor, weights: Tensor | None) -> Tensor:
    """float32 constants of ``mask.shape``: the weights inside ``mask`` (1 when None), 0 outside.

    Zeroing outside the mask *before* any product keeps NaN/inf there out of loss and gradient.
    """
    if weights is None:
        return mask.to(torch.float32)
    if not isinstance(weights, Tensor) or weights.shape != mask.shape or not weights.is_floating_point():
        raise ValueError(
            f"weights must be None or a floating-point tensor of shape {tuple(mask.shape)}, got {_describe(weights)}"
        )
    return torch.where(mask, weights.detach().to(device=mask.device, dtype=torch.float32), 0.0)


def _normalize(total: Tensor, mask: Tensor, reduction: str, num_items) -> Tensor:
    """``total`` for 'sum'; else ``total / (num_items or mask.sum())``, a zero denominator read as 1."""
    if reduction == "sum":
        return total
    if num_items is None:
        denom = mask.sum().to(total.dtype)
    elif isinstance(num_items, Tensor):
        denom = num_items.detach().to(device=total.device, dtype=total.dtype)
    else:
        denom = torch.tensor(float(num_items), dtype=total.dtype, device=total.device)
    return total / torch.where(denom == 0, torch.ones_like(denom), denom)


def chunked_nll(
    hidden: Tensor,
    lm_head: nn.Module | Tensor,
    labels: Tensor,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    ignore_index: int = -100,
    matmul_dtype: torch.dtype | None = None,
    postprocessing: LogitPostprocessing | None = None,
) -> Tensor:
    """Per-token NLL ``[...]`` (float32, differentiable) of ``labels`` under ``post(lm_head(hidden))``.

    The first phase of a weighted loss whose weights depend on this NLL (see the module docstring);
    the backward recomputes each chunk's logits (4 products of the head's size in all, against 3
    for a loss whose weights are known up front, :func:`weighted_lm_loss`).

    Args:
        hidden: ``[..., d]`` (usually ``[b, n, d]``), already aligned: ``hidden[..., t, :]``
            predicts ``labels[..., t]`` (shift before calling). The logits are
            ``lm_head(hidden)`` post-processed by ``postprocessing``.
        lm_head: ``nn.Linear(d, V)`` (with or without bias) or its weight ``[V, d]``. A weight
            tied to the input embedding simply receives this gradient on top of the embedding's.
            Its ``forward`` is not called, so hooks do not run: under parameter sharding (ZeRO-3,
            FSDP) gather its parameters around the call (a sharded weight fails the shape check).
        labels: ``[...]`` integer targets in ``[0, V)``, or ``ignore_index``.
        chunk_size: positions per chunk; peak extra memory is about ``chunk_size * V * 4`` bytes.
        ignore_index: label value of positions that are neither scored nor counted.
        matmul_dtype: dtype of the output-layer product; default: as the model computes it (the
            inputs' promoted dtype, or autocast's). ``torch.float32`` gives exact NLLs for bf16
            inputs at the cost of a float32 copy of the weight during each pass.
        postprocessing: what the model does to its logits after the output layer
            (``tokenweight.logits.logit_postprocessing(model.config)``: Gemma-2's soft-capping
            ``c·tanh(z/c)``, Granite's ``z / s``, Cohere's ``z · s``, ...), applied to each chunk
            with the model's operations, in the product's dtype (float32 when the family upcasts
            first), so the NLL is the model's own; its derivative enters the gradient. A soft-cap
            needs a second ``[chunk_size, V]`` float32 buffer while gradients are computed.

    Returns:
        ``nll`` of ``labels.shape``, float32, 0 at ignored positions. Gradients flow to ``hidden``,
        the weight and the bias (in their dtypes).
    """
    flat_h, weight, bias, flat_y, cd = _check_inputs(hidden, lm_head, labels, chunk_size, matmul_dtype)
    post = _check_post(postprocessing)
    nll = _ChunkedNLL.apply(flat_h, weight, bias, flat_y, chunk_size, int(ignore_index), cd, post)
    return nll.view(labels.shape)


def weighted_nll_loss(
    nll: Tensor,
    mask: Tensor,
    weights: Tensor | None = None,
    *,
    reduction: str = "mean",
    num_items: int | float | Tensor | None = None,
) -> Tensor:
    """Reduce per-token NLL ``[...]`` to ``sum(weights * nll over mask) / count`` (float32 scalar).

    Args:
        nll: per-token NLL (e.g. from :func:`chunked_nll`), any shape.
        mask: bool of ``nll.shape``: the scored positions (``labels != ignore_index``).
        weights: ``nll.shape`` or None (plain cross-entropy); treated as constants (detached),
            ignored (not even NaN-checked) outside ``mask``.
        reduction: ``'mean'`` divides by the number of masked positions, so uniform weights give
            exactly the plain mean cross-entropy, and an all-ignored batch gives 0 (not NaN), still
            differentiable. ``'sum'`` returns the unnormalised weighted sum: under gradient
            accumulation or several devices the correct loss is ``sum over all micro-batches /
            total count``, which a mean per micro-batch cannot give when counts differ.
        num_items: with ``'mean'``, the denominator instead of the local count (as HF's
            ``num_items_in_batch``: the count over the whole accumulated, multi-device batch).
            0 is treated as 1 (an empty batch then gives 0).
    """
    _check_reduction(reduction, num_items)
    if not isinstance(mask, Tensor) or mask.shape != nll.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape {tuple(nll.shape)}, got {_describe(mask)}")
    coef = _loss_weights(mask, weights)
    total = (torch.where(mask, nll, 0.0) * coef).sum()
    return _normalize(total, mask, reduction, num_items)


def weighted_lm_loss(
    hidden: Tensor,
    lm_head: nn.Module | Tensor,
    labels: Tensor,
    weights: Tensor | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items: int | float | Tensor | None = None,
    matmul_dtype: torch.dtype | None = None,
    postprocessing: LogitPostprocessing | None = None,
) -> tuple[Tensor, Tensor]:
    """Token-weighted cross-entropy without the full ``[b, n, V]`` logits, in one pass.

    ``loss = sum_t weights[t] * nll[t] / count`` over non-ignored positions (see
    :func:`weighted_nll_loss` for ``reduction`` and ``num_items``; shapes and the other arguments
    as in :func:`chunked_nll`). With ``weights=None`` this is the plain mean cross-entropy.

    The weights are known before the forward, so the gradients are computed from the same chunk
    of logits as the loss (no recomputation in backward) when grad mode is on and an input requires
    grad, and held until ``backward``: run evaluation under ``torch.no_grad()``.

    Returns:
        ``(loss, nll)``: the float32 scalar loss and the detached per-token NLL ``[b, n]`` float32
        (0 at ignored positions) of the same forward pass.
    """
    flat_h, weight, bias, flat_y, cd = _check_inputs(hidden, lm_head, labels, chunk_size, matmul_dtype)
    post = _check_post(postprocessing)
    _check_reduction(reduction, num_items)
    mask = labels != ignore_index
    if weights is not None and isinstance(weights, Tensor) and weights.shape != labels.shape:
        raise ValueError(f"weights must have the shape of labels {tuple(labels.shape)}, got {tuple(weights.shape)}")
    coef = _loss_weights(mask, weights)
    want_grad = torch.is_grad_enabled()
    total, nll = _FusedWeightedCE.apply(
        flat_h, weight, bias, flat_y, coef.reshape(-1), chunk_size, int(ignore_index), cd, want_grad, post
    )
    return _normalize(total, mask, reduction, num_items), nll.view(labels.shape)
