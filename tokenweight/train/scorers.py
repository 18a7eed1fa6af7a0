"""Short-context NLL for the weights of a training batch: the two scorers of docs/METHOD.md.

A scorer turns a batch (and the long NLL of its forward pass) into ``L_short [b, n-1]``, aligned
like ``token_nll`` (entry ``j`` is token ``j+1``):

- :class:`SelfScorer` (the paper's "unfrozen" variant): the model being trained, without gradient,
  on strided windows of ``w`` tokens, recomputed at every step. Window 0 of a sequence *is* the long
  pass (same tokens, same causal context), so it is skipped (``skip_first_window=True``) and its
  entries ``0 … w-2`` are copied from the long NLL of the training forward itself.
- :class:`LongCEScorer`: the live model too, on LongCE's windows instead (``short_context="longce"``,
  docs/SCORING.md).
- :class:`FrozenScorer`: a separate, fixed short-context model whose NLL was computed once by
  ``tokenweight score`` (``tokenweight.scorecache.ScoreCache``) and is read by dataset index.

Both return float32 tensors on the batch's device and never carry gradient (weights are constants).
Packed batches (``doc_lengths=``, one list of document lengths per row, :mod:`tokenweight.documents`)
are scored per document: the self-scorers' windows restart at every document (window 0 of each is
the document-masked long pass), and a frozen cache of packed data was computed that way already.
The keyword is passed only for packed batches, so a scorer of unpacked data may ignore it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SelfScorer:
    """Short-context NLL from the live model (no gradient), every step.

    Args:
        window: ``w``, the most tokens a short context holds.
        stride: ``s``, distance of window starts (``1 <= s < w``); see ``short_context_nll``.
        bos_token_id: windows after the first start with this token when the sequence does.
        batch_size: windows per forward pass (None: ``short_context_nll``'s default, ~16k tokens).
    """

    def __init__(self, window: int, stride: int, bos_token_id: int | None = None, batch_size: int | None = None):
        from tokenweight.scoring import window_starts

        window_starts(window + 1, window, stride)  # validates window and stride (ValueError)
        self.window, self.stride, self.bos_token_id, self.batch_size = window, stride, bos_token_id, batch_size

    def __call__(
        self,
        model: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        index: Tensor,
        long_nll: Tensor,
        doc_lengths: list[list[int]] | None = None,
    ) -> Tensor:
        """input_ids, attention_mask: [b, n]; index: [b]; long_nll: [b, n-1] -> [b, n-1] float32."""
        from tokenweight.scoring import self_scored_short_nll

        return self_scored_short_nll(
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
        from tokenweight.scoring import truncated_windows

        truncated_windows(0, trunc_len, sliding_window)  # validates them (ValueError)
        self.trunc_len, self.sliding_window, self.batch_size = trunc_len, sliding_window, batch_size

    def __call__(
        self,
        model: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        index: Tensor,
        long_nll: Tensor,
        doc_lengths: list[list[int]] | None = None,
    ) -> Tensor:
        """input_ids, attention_mask: [b, n]; index: [b]; long_nll: [b, n-1] -> [b, n-1] float32."""
        from tokenweight.scoring import truncated_context_nll

        return truncated_context_nll(
            model,
            input_ids,
            self.trunc_len,
            self.sliding_window,
            attention_mask=attention_mask,
            long_nll=long_nll,
            batch_size=self.batch_size,
            doc_lengths=doc_lengths,
        )

    def __repr__(self) -> str:
        return f"LongCEScorer(trunc_len={self.trunc_len}, sliding_window={self.sliding_window})"


class FrozenScorer:
    """Short-context NLL read from a frozen score cache by dataset index.

    ``cache.read(indices) -> [len, n_cache-1]``; a batch of (cropped or padded) length ``n``
    uses the first ``n-1`` entries. Positions past a sequence's end are masked by the caller. A
    cache of packed data holds per-document scores (``tokenweight score`` windows every document
    on its own), so ``doc_lengths`` needs nothing here; the caller masks documents' first tokens.
    """

    def __init__(self, cache):
        self.cache = cache

    def __call__(
        self,
        model: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        index: Tensor,
        long_nll: Tensor,
        doc_lengths: list[list[int]] | None = None,
    ) -> Tensor:
        t = long_nll.shape[1]
        short = self.cache.read(index.detach().cpu())
        if short.shape[1] < t:
            raise ValueError(f"score cache holds {short.shape[1] + 1}-token sequences but the batch has {t + 1} tokens")
        return short[:, :t].to(device=long_nll.device, dtype=torch.float32)

    def __repr__(self) -> str:
        return f"FrozenScorer({str(getattr(self.cache, 'path', '?'))!r})"
