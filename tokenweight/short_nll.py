"""Where the short-context NLL of a training batch comes from: the scorers of docs/METHOD.md.

:class:`tokenweight.token_weighting.TokenWeighting` needs ``L_short [b, n-1]`` for every scheme but
``uniform``, aligned like the labels of a causal LM (entry ``j`` is token ``j+1``). It has four
sources, each exact against the functions of :mod:`tokenweight.scoring`:

- :class:`SelfScorer` (the paper's "unfrozen" variant): the model being trained, without gradient,
  on strided windows of ``w`` tokens, recomputed at every step. Window 0 of a sequence *is* the long
  pass (same tokens, same causal context), so it is not run again: its entries ``0 … w-2`` are the
  training forward's own NLL.
- :class:`LongCEScorer`: the live model too, on LongCE's windows (Fang et al., docs/SCORING.md).
- :class:`FrozenScorer`: a separate, fixed model object (the pre-extension model, or a smaller one
  with the same tokenizer) scored on the fly on the batch, no cache needed.
- a ``short_nll`` column of the batch (no scorer object: ``TokenWeighting(short=None)``): values
  computed once, by ``tokenweight score`` (our score cache, turned into the column by
  ``tokenweight.train.collate.TrainSequences``) or by ``tokenweight.scorecache.add_short_nll`` for
  any Hugging Face dataset; see :func:`column_short_nll` for its alignment.

A source is any callable ``(model, input_ids [b, n], attention_mask [b, n] | None, long_nll [b, n-1],
doc_lengths) -> [b, n-1]``; ``model`` is the model being trained (what the self-scorers run).
Packed rows (``doc_lengths``: one list of document lengths per row, :mod:`tokenweight.documents`)
are scored per document: windows restart at every document, as the documents run one by one.
Every source returns float32 on ``long_nll``'s device and never carries gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tokenweight.scoring import (
    self_scored_short_nll,
    short_context_nll,
    truncated_context_nll,
)
from tokenweight.windows import truncated_windows, window_stride

__all__ = ["SelfScorer", "LongCEScorer", "FrozenScorer", "column_short_nll", "SHORT_NLL_COLUMN"]

#: the batch column that carries precomputed short-context NLL (token-aligned, :func:`column_short_nll`)
SHORT_NLL_COLUMN = "short_nll"


def _stride(window: int, stride: int | None) -> int:
    """``stride``, or ``round(0.75·w)`` (:func:`tokenweight.windows.window_stride`: not the batch's
    length, or a sequence's scores would change with what it is padded to). Pass ``stride`` to match
    a score cache (whose default is the recommendation for the data's ``n``)."""
    return window_stride(window, stride)


class SelfScorer:
    """Short-context NLL from the live model (no gradient), every step.

    Args:
        window: ``w``, the most tokens a short context holds (>= 2).
        stride: ``s``, distance of window starts (``1 <= s < w``); None: ``3w/4`` (:func:`_stride`).
        bos_token_id: windows after the first start with this token when the sequence does.
        batch_size: windows per forward pass (None: about 16k tokens per pass).
    """

    def __init__(self, window: int, stride: int | None = None, bos_token_id: int | None = None, batch_size=None):
        self.window, self.stride = window, _stride(window, stride)  # ValueError when invalid
        self.window, self.stride, self.bos_token_id, self.batch_size = window, stride, bos_token_id, batch_size

    def __call__(self, model: nn.Module, input_ids: Tensor, attention_mask, long_nll: Tensor, doc_lengths=None):
        """input_ids, attention_mask: [b, n]; long_nll: [b, n-1] -> [b, n-1] float32."""
        short = self_scored_short_nll(
            model,
            input_ids,
            long_nll,
            self.window,
            self.stride,
            attention_mask=attention_mask,
            bos_token_id=self.bos_token_id,
            batch_size=self.batch_size,
            doc_lengths=doc_lengths,
        )
        return short.to(device=long_nll.device, dtype=torch.float32)

    def __repr__(self) -> str:
        return f"SelfScorer(window={self.window}, stride={self.stride})"


class LongCEScorer:
    """LongCE's short-context NLL from the live model (no gradient), every step (Fang et al., ICLR
    2025; ``PKU-ML/LongPPL``'s ``finetune/finetune.py``, ``loss_weight``).

    Raw windows of ``trunc_len + sliding_window`` tokens every ``sliding_window`` tokens, each scoring
    its last ``sliding_window`` (the last cut at the end of the sequence), no BOS put back:
    :func:`tokenweight.scoring.truncated_context_nll`. Tokens before ``trunc_len`` and the window at 0
    take the long NLL of the training forward (their short context is their full one), so a
    ``longce:<γ>`` weight there is ``min(1, γ)``, as LongCE's ``clamp(1, max=γ)``.
    """

    def __init__(self, trunc_len: int, sliding_window: int, batch_size: int | None = None):
        truncated_windows(0, trunc_len, sliding_window)  # validates them (ValueError)
        self.trunc_len, self.sliding_window, self.batch_size = trunc_len, sliding_window, batch_size

    def __call__(self, model: nn.Module, input_ids: Tensor, attention_mask, long_nll: Tensor, doc_lengths=None):
        """input_ids, attention_mask: [b, n]; long_nll: [b, n-1] -> [b, n-1] float32."""
        short = truncated_context_nll(
            model,
            input_ids,
            self.trunc_len,
            self.sliding_window,
            attention_mask=attention_mask,
            long_nll=long_nll,
            batch_size=self.batch_size,
            doc_lengths=doc_lengths,
        )
        return short.to(device=long_nll.device, dtype=torch.float32)

    def __repr__(self) -> str:
        return f"LongCEScorer(trunc_len={self.trunc_len}, sliding_window={self.sliding_window})"


class FrozenScorer:
    """Short-context NLL of a frozen model object, computed on the fly for every batch (no cache).

    ``scorer``: any ``transformers`` causal LM with the training data's tokenizer (the
    pre-extension model, or a much smaller one: docs/METHOD.md), on any device (the batch is moved
    to it and the result back). It is put in eval mode and never trained. The values equal
    ``tokenweight score``'s cache for the same window, stride and BOS rule (both are
    :func:`tokenweight.scoring.short_context_nll`); a window of at least the sequence's length gives
    the scorer's full-context NLL (a Rho-1 reference model).

    Args: ``window``, ``stride``, ``bos_token_id``, ``batch_size`` as :class:`SelfScorer`.
    """

    def __init__(
        self,
        scorer: nn.Module,
        window: int,
        stride: int | None = None,
        bos_token_id: int | None = None,
        batch_size: int | None = None,
    ):
        if not isinstance(scorer, nn.Module) or getattr(scorer, "config", None) is None:
            raise ValueError(
                f"scorer must be a transformers causal LM (a model object), got {type(scorer).__name__}: "
                "load it with AutoModelForCausalLM.from_pretrained(...)"
            )
        self.scorer, self.window, self.stride = scorer.eval().requires_grad_(False), window, _stride(window, stride)
        self.bos_token_id, self.batch_size = bos_token_id, batch_size

    def __call__(self, model: nn.Module, input_ids: Tensor, attention_mask, long_nll: Tensor, doc_lengths=None):
        """input_ids, attention_mask: [b, n]; long_nll: [b, n-1] (unused) -> [b, n-1] float32."""
        short = short_context_nll(
            self.scorer,
            input_ids,
            self.window,
            self.stride,
            attention_mask=attention_mask,
            bos_token_id=self.bos_token_id,
            batch_size=self.batch_size,
            doc_lengths=doc_lengths,
        )
        return short.to(device=long_nll.device, dtype=torch.float32)

    def __repr__(self) -> str:
        name = getattr(self.scorer.config, "_name_or_path", "") or type(self.scorer).__name__
        return f"FrozenScorer({name!r}, window={self.window}, stride={self.stride})"


def column_short_nll(column, input_ids: Tensor) -> Tensor:
    """The ``[b, n-1]`` short-context NLL of a batch's ``short_nll`` column (float32, target-aligned).

    The column is **token-aligned**: ``column[:, t]`` is the short-context NLL of token ``t`` (entry
    0 of a sequence is unused: the first token has no prediction), ``[b, n]`` like ``input_ids``,
    so that concatenating rows (padding-free packing) or padding them keeps it aligned with its
    tokens. Its value at padding and at documents' first tokens is never read.
    """
    if not isinstance(column, Tensor) or not column.is_floating_point():
        raise ValueError(
            f"batch['{SHORT_NLL_COLUMN}'] must be a floating-point tensor [b, n] like input_ids, got "
            f"{type(column).__name__}: collate it with tokenweight.PadCollator (it pads the column)"
        )
    if tuple(column.shape) != tuple(input_ids.shape):
        raise ValueError(
            f"batch['{SHORT_NLL_COLUMN}'] has shape {tuple(column.shape)} but input_ids has {tuple(input_ids.shape)}: "
            "the column is token-aligned (one value per token, entry 0 unused), pad it like input_ids"
        )
    return column[:, 1:].detach().to(device=input_ids.device, dtype=torch.float32)
