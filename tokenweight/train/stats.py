"""What a token-weighted Trainer logs: the step time and the loss and weight statistics.

:class:`WeightStats` is built per micro-batch from the component's output
(:class:`tokenweight.token_weighting.WeightedLoss`), accumulated until HF logs, reduced over
processes, and turned into the logged values (``weighted_loss``, ``plain_loss``, ``weight_mean``,
``weight_std``, ``weight_max``, ``weight_zero_share``, ``scored_tokens``, ``tokens``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
from torch import Tensor
from transformers import TrainerCallback


class StepTimer(TrainerCallback):
    """Wall time of optimizer steps (first micro-batch to optimizer step), for step time and tokens/s."""

    def __init__(self):
        self.seconds, self.steps, self._t0 = 0.0, 0, None

    @staticmethod
    def _sync():
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._t0 is not None:
            self._sync()
            self.seconds += time.perf_counter() - self._t0
            self.steps += 1
            self._t0 = None

    def take(self) -> tuple[float, int]:
        out = (self.seconds, self.steps)
        self.seconds, self.steps = 0.0, 0
        return out


@dataclass
class WeightStats:
    """Loss and weight statistics of the scored tokens since the last log (float64 scalar tensors).

    Built per micro-batch (:meth:`of_batch`), accumulated (:meth:`merge`), reduced over processes
    (:meth:`reduce`: one all-reduce of the sums, one gather of the maximum) and turned into the
    logged values (:meth:`to_logs`). Padding and ignored labels count nowhere but in ``tokens``.
    """

    count: Tensor  # scored tokens
    nll_sum: Tensor  # Σ nll
    weighted_nll_sum: Tensor  # Σ w·nll
    weight_sum: Tensor  # Σ w
    weight_sq_sum: Tensor  # Σ w²
    weight_max: Tensor  # max w, -inf when nothing is scored
    zero_weights: Tensor  # scored tokens with w == 0
    tokens: Tensor  # input tokens (non-padding)

    #: the fields that add up over micro-batches and processes (all but ``weight_max``)
    SUMS: ClassVar[tuple[str, ...]] = (
        "count",
        "nll_sum",
        "weighted_nll_sum",
        "weight_sum",
        "weight_sq_sum",
        "zero_weights",
        "tokens",
    )

    @classmethod
    def of_batch(
        cls, nll: Tensor, mask: Tensor, weights: Tensor | None, attention_mask: Tensor | None, input_ids: Tensor
    ) -> WeightStats:
        """Statistics of one micro-batch: ``nll``, ``mask`` and ``weights`` ``[b, n-1]`` (``weights``
        None: every scored token weighs 1), ``attention_mask`` (None: no padding) and ``input_ids`` ``[b, n]``."""
        m = mask.to(torch.float64)
        nll64 = torch.where(mask, nll, 0.0).to(torch.float64)
        w = m if weights is None else torch.where(mask, weights, 0.0).to(torch.float64)
        tokens = attention_mask.sum() if attention_mask is not None else torch.tensor(input_ids.numel())
        return cls(
            count=m.sum(),
            nll_sum=nll64.sum(),
            weighted_nll_sum=(w * nll64).sum(),
            weight_sum=w.sum(),
            weight_sq_sum=(w * w).sum(),
            weight_max=torch.where(mask, w, -math.inf).max(),
            zero_weights=((w == 0) & mask).sum().to(torch.float64),
            tokens=tokens.to(torch.float64),
        )

    @classmethod
    def empty(cls) -> WeightStats:
        """No tokens yet (what a log without any recorded micro-batch reports)."""
        return cls(
            **{name: torch.tensor(0.0, dtype=torch.float64) for name in cls.SUMS},
            weight_max=torch.tensor(-math.inf, dtype=torch.float64),
        )

    def merge(self, other: WeightStats) -> WeightStats:
        """The statistics of both: sums added, maxima combined."""
        sums = {name: getattr(self, name) + getattr(other, name) for name in self.SUMS}
        return WeightStats(**sums, weight_max=torch.maximum(self.weight_max, other.weight_max))

    def to(self, device) -> WeightStats:
        return WeightStats(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def reduce(self, accelerator) -> WeightStats:
        """Over all processes: one all-reduce of the sums, one gather of the maxima (every process
        must call it, with its statistics on the device of the collectives)."""
        sums = accelerator.reduce(torch.stack([getattr(self, name) for name in self.SUMS]), reduction="sum")
        wmax = accelerator.gather(self.weight_max.reshape(1)).max()
        return WeightStats(**dict(zip(self.SUMS, sums.unbind())), weight_max=wmax)

    def to_logs(self) -> dict[str, float]:
        """The logged values (every field on one device): means per scored token, counts."""
        names = [f.name for f in fields(self)]
        s = dict(zip(names, torch.stack([getattr(self, name) for name in names]).tolist()))
        count = max(s["count"], 1.0)
        mean = s["weight_sum"] / count
        return {
            "weighted_loss": s["weighted_nll_sum"] / count,
            "plain_loss": s["nll_sum"] / count,
            "weight_mean": mean,
            "weight_std": math.sqrt(max(s["weight_sq_sum"] / count - mean * mean, 0.0)),
            "weight_max": s["weight_max"] if math.isfinite(s["weight_max"]) else 0.0,
            "weight_zero_share": s["zero_weights"] / count,
            "scored_tokens": s["count"],
            "tokens": s["tokens"],
        }
