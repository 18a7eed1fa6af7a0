"""LongPPL (Fang et al., ICLR 2025): perplexity over the tokens that need long context.

Plain perplexity on long documents barely moves when a model gets better at long context, because
few tokens depend on far context. LongPPL restricts the average to *key tokens*: tokens that an
evaluator model predicts much better with the full context than with a truncated one, and predicts
well. With the evaluator's per-token NLLs ``L_long`` and ``L_short`` (docs/METHOD.md):

- ``LSD = log p(x|long) - log p(x|short) = L_short - L_long > alpha`` (default alpha = 2), and
- ``LCL = log p(x|long) = -L_long > beta`` (default beta = -2);
- tokens of the first window (positions ``1 ... w-1``) are never key tokens (their short context
  *is* their full context).

``LongPPL = exp(mean NLL of the evaluated model over the key tokens)``. Key tokens are fixed by the
evaluator, so every evaluated model is judged on the same tokens; we pool over all key tokens of
the validation set (a token-weighted average, as for ordinary perplexity).

The key-token selection is a pure function on NLL tensors (:func:`key_token_mask`); the model
forward passes live in :func:`evaluator_nll` so that the runner computes them once per run and
shares them across models.
"""

from __future__ import annotations

import math

import torch


def key_token_mask(
    long_nll: torch.Tensor,
    short_nll: torch.Tensor,
    *,
    window: int,
    alpha: float = 2.0,
    beta: float = -2.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Key tokens of LongPPL from the evaluator's NLLs.

    Args:
        long_nll: ``[b, n-1]`` evaluator NLL with full context (entry ``j`` scores position ``j+1``).
        short_nll: ``[b, n-1]`` evaluator NLL with short context (same alignment). Entries of the
            first window may hold anything (e.g. zeros from ``skip_first_window=True``).
        window: the evaluator's short window ``w`` (>= 1); entries ``j < w-1`` are never key tokens.
        alpha: LSD threshold (strict ``>``).
        beta: LCL threshold (strict ``>``).
        mask: ``[b, n-1]`` bool, True where the target is a real token; None means all.

    Returns:
        ``[b, n-1]`` bool.
    """
    if long_nll.shape != short_nll.shape or long_nll.ndim != 2:
        raise ValueError(
            f"long_nll and short_nll must be 2-D of equal shape, got {tuple(long_nll.shape)} "
            f"and {tuple(short_nll.shape)}"
        )
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    lsd = short_nll.double() - long_nll.double()
    lcl = -long_nll.double()
    key = (lsd > alpha) & (lcl > beta)
    key[:, : max(window - 1, 0)] = False
    if mask is not None:
        if mask.shape != long_nll.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} must equal nll shape {tuple(long_nll.shape)}")
        key &= mask.bool()
    return key


def eligible_mask(mask: torch.Tensor, window: int) -> torch.Tensor:
    """``[b, n-1]`` bool: real tokens beyond the first window, the candidates for key tokens."""
    out = mask.bool().clone()
    out[:, : max(window - 1, 0)] = False
    return out


class LongPPL:
    """Accumulates the evaluated model's NLL over key tokens across batches.

    ``result()`` gives ``{"longppl", "nll", "key_tokens", "eligible_tokens", "key_share"}`` where
    ``key_share = key_tokens / eligible_tokens`` (eligible: real tokens beyond the first window).
    ``longppl`` is None (JSON null) when there are no key tokens.
    """

    def __init__(self):
        self._sum = 0.0
        self._keys = 0
        self._eligible = 0

    def update(self, nll: torch.Tensor, key_mask: torch.Tensor, eligible: torch.Tensor) -> None:
        """Add a batch: ``nll`` ``[b, n-1]`` of the evaluated model, ``key_mask`` and ``eligible`` bool."""
        if nll.shape != key_mask.shape or nll.shape != eligible.shape:
            raise ValueError(
                f"nll {tuple(nll.shape)}, key_mask {tuple(key_mask.shape)} and eligible "
                f"{tuple(eligible.shape)} must have equal shapes"
            )
        self._sum += float(nll.double()[key_mask].sum())
        self._keys += int(key_mask.sum())
        self._eligible += int(eligible.sum())

    def result(self) -> dict:
        k = self._keys
        mean = self._sum / k if k else None
        return {
            "longppl": (math.exp(mean) if mean < 700 else math.inf) if k else None,
            "nll": mean,
            "key_tokens": k,
            "eligible_tokens": self._eligible,
            "key_share": (k / self._eligible) if self._eligible else None,
        }


def evaluator_nll(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    window: int,
    stride: int,
    bos_token_id: int | None,
    batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluator's ``(long_nll, short_nll)``, both ``[b, n-1]`` float32.

    The short pass skips the first window (its tokens are never key tokens) and uses the strided
    windows of :func:`tokenweight.short_context_nll` (every token gets at least ``w - s`` tokens of
    context; Fang et al. use w = 4096 scored 1024 at a time, i.e. ``s = w/4``).
    """
    from tokenweight.scoring import short_context_nll, token_nll

    long_nll = token_nll(model, input_ids, attention_mask)
    short_nll = short_context_nll(
        model,
        input_ids,
        window,
        stride,
        attention_mask=attention_mask,
        bos_token_id=bos_token_id,
        skip_first_window=True,
        batch_size=batch_size,
    )
    return long_nll, short_nll


class KeyTokens:
    """The evaluator's key tokens over the held-out batches, judged on first use only.

    One evaluator judges for every model of a run (the same key tokens for all). ``load`` returns
    the evaluator model; it is called only when :meth:`batches` is first needed, so a rerun whose
    models all come from a cache never runs the evaluator.

    Args:
        load: zero-argument callable returning the evaluator model.
        name: the evaluator's display name (a model name of the run, a path, or ``<in-memory>``).
        batches: held-out batches, each with ``input_ids`` and ``attention_mask`` ``[b, n]``.
        window, stride: the evaluator's short windows (see :func:`evaluator_nll`).
        alpha, beta: key-token thresholds (:func:`key_token_mask`).
        bos_token_id: BOS id of the tokenizer (windows restart with it), or None.
    """

    def __init__(
        self,
        load,
        name: str,
        batches: list[dict],
        *,
        window: int,
        stride: int,
        alpha: float,
        beta: float,
        bos_token_id: int | None,
    ):
        self.load, self.name, self.data = load, name, batches
        self.window, self.stride, self.alpha, self.beta, self.bos = window, stride, alpha, beta, bos_token_id
        self._per_batch = None

    def batches(self) -> list[dict]:
        """Per batch: ``key`` and ``eligible`` ``[b, n-1]`` bool, and the evaluator's ``long_nll``
        (reused as the NLL of the evaluator when it is also one of the evaluated models)."""
        if self._per_batch is None:
            from tqdm.auto import tqdm

            model, out = self.load(), []
            for b in tqdm(self.data, desc="LongPPL evaluator", disable=None):
                long_nll, short_nll = evaluator_nll(
                    model,
                    b["input_ids"],
                    b["attention_mask"],
                    window=self.window,
                    stride=self.stride,
                    bos_token_id=self.bos,
                )
                target = b["attention_mask"][:, 1:].bool()
                key = key_token_mask(
                    long_nll, short_nll, window=self.window, alpha=self.alpha, beta=self.beta, mask=target
                )
                out.append({"key": key, "eligible": eligible_mask(target, self.window), "long_nll": long_nll})
            self._per_batch = out
        return self._per_batch

    def info(self) -> dict:
        """``{"name", "window", "stride", "alpha", "beta", "key_tokens", "eligible_tokens", "key_share"}``."""
        k = sum(int(x["key"].sum()) for x in self.batches())
        e = sum(int(x["eligible"].sum()) for x in self.batches())
        return {
            "name": self.name,
            "window": self.window,
            "stride": self.stride,
            "alpha": self.alpha,
            "beta": self.beta,
            "key_tokens": k,
            "eligible_tokens": e,
            "key_share": k / e if e else None,
        }
