"""Batches bounded by rows and by tokens: how every evaluation pass groups its inputs.

A forward pass over ``b`` rows padded to ``L`` tokens costs memory in proportion to ``b · L``
(activations, and the KV cache of the task passes), so a fixed number of rows per pass either
wastes a large accelerator at short lengths or runs out of memory at long ones. Every evaluation
pass therefore groups its rows with :func:`token_groups`: at most ``batch_size`` rows and at most
``batch_tokens`` tokens (rows × the longest row's cost) per pass, a row that alone costs more
running by itself (a sequence is never split: that would change what the model sees).

Groups are consecutive in the given order (callers sort by length first where padding matters), so
the results do not depend on the grouping beyond float rounding: rows never interact in a pass
(right padding with an attention mask for teacher forcing, left padding with position ids for
prompts).
"""

from __future__ import annotations

from collections.abc import Sequence


def token_groups(costs: Sequence[int], batch_size: int, batch_tokens: int | None = None) -> list[list[int]]:
    """Consecutive groups of indices into ``costs``, each a forward pass.

    Args:
        costs: per row, the tokens it occupies in a pass (its length, plus e.g. new tokens to generate).
        batch_size: the most rows per group (>= 1).
        batch_tokens: the most ``len(group) · max(costs of the group)`` per group (>= 1); None: no
            token bound (groups of ``batch_size`` rows).

    Returns:
        Lists of indices ``0 … len(costs)-1`` in order, every index once.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if batch_tokens is not None and (
        isinstance(batch_tokens, bool) or not isinstance(batch_tokens, int) or batch_tokens < 1
    ):
        raise ValueError(f"batch_tokens must be an integer >= 1 or None, got {batch_tokens!r}")
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i, cost in enumerate(costs):
        grown = max(longest, int(cost))
        full = len(current) >= batch_size or (
            batch_tokens is not None and current and (len(current) + 1) * grown > batch_tokens
        )
        if full:
            groups.append(current)
            current, grown = [], int(cost)
        current.append(i)
        longest = grown
    if current:
        groups.append(current)
    return groups
