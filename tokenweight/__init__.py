"""tokenweight: token-weighted training for long-context language models.

The core is three pure, tensor-in/tensor-out steps (docs/METHOD.md):

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
    "token_nll": "tokenweight.scoring",
    "short_context_nll": "tokenweight.scoring",
    "window_starts": "tokenweight.scoring",
    "WeightingScheme": "tokenweight.weighting",
    "weighted_lm_loss": "tokenweight.loss",
    "chunked_nll": "tokenweight.loss",
    "weighted_nll_loss": "tokenweight.loss",
    "UsageError": "tokenweight.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
