"""tokenweight: token-weighted training for long-context language models.

One component does a token-weighted training step in any loop or Trainer (docs/INTEGRATION.md):
:class:`TokenWeighting` (``tokenweight.token_weighting``), with the short-context NLL from
:class:`SelfScorer`, :class:`FrozenScorer`, :class:`LongCEScorer` or a ``short_nll`` column, and
:class:`TokenWeightingMixin` to put it into any ``transformers.Trainer`` (TRL's included).

It is built from three pure, tensor-in/tensor-out steps (docs/METHOD.md):

1. :func:`token_nll` / :func:`short_context_nll` (``tokenweight.scoring``): per-token NLL with full
   and with short context;
2. :class:`WeightingScheme` (``tokenweight.weighting``): scores -> loss weights, every scheme of the
   paper composed from transforms, truncation, sparsification, normalisation and interpolation;
3. :func:`weighted_lm_loss` (``tokenweight.loss``): chunked weighted cross-entropy that never holds
   the full ``[b, n, V]`` logits.

Names are loaded lazily so that ``import tokenweight`` (and the CLI's ``--help``) does not pay for
importing torch and transformers.
"""

from __future__ import annotations

from tokenweight._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "TokenWeighting": "tokenweight.token_weighting",
    "WeightedLoss": "tokenweight.token_weighting",
    "NonFiniteLossError": "tokenweight.token_weighting",
    "scored_tokens": "tokenweight.token_weighting",
    "SelfScorer": "tokenweight.short_nll",
    "FrozenScorer": "tokenweight.short_nll",
    "LongCEScorer": "tokenweight.short_nll",
    "TokenWeightingMixin": "tokenweight.train.trainer",
    "token_weighted": "tokenweight.train.trainer",
    "PadCollator": "tokenweight.train.collate",
    "logit_postprocessing": "tokenweight.logits",
    "token_nll": "tokenweight.scoring",
    "short_context_nll": "tokenweight.scoring",
    "window_starts": "tokenweight.windows",
    "WeightingScheme": "tokenweight.weighting",
    "weighted_lm_loss": "tokenweight.loss",
    "chunked_nll": "tokenweight.loss",
    "weighted_nll_loss": "tokenweight.loss",
    "UsageError": "tokenweight.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
