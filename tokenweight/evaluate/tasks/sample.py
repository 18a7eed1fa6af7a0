"""The records every task produces, and the checks that keep them valid.

A :class:`Sample` is one prompt with its gold answers, in the shape RULER writes to JSONL
(``input``, ``outputs``, ``length``) plus what our likelihood scoring needs (``candidates``) and
what plots need (``depth``). Generators check their own output with :func:`require`: a sample
whose answer is not in its input exactly as designed is a bug in the generator, never something
to score quietly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sample:
    """One task prompt and its gold answers.

    Attributes:
        task: task name (a key of ``TASKS``).
        input: the full prompt, question included, ending where the answer starts (RULER's answer
            prefix, e.g. ``"... mentioned in the provided text is"``); never ends with whitespace,
            so every answer continuation starts with a space.
        outputs: the gold answers; a prediction must contain each of them (``string_match_all``).
        length: number of tokens of ``input`` in the model tokenizer, special tokens included
            (``len(tokenizer(input)["input_ids"])``: what the model reads).
        depth: needle depth in [0, 1] (share of the haystack's tokens before the needle), or None
            for tasks without a needle.
        candidates: the gold outputs followed by distractor values of the same kind (for the rank
            metric), or None.
        meta: generator details (haystack kind, seed, keys, depths of every needle, ...), JSON-able.
    """

    task: str
    input: str
    outputs: list[str]
    length: int
    depth: float | None = None
    candidates: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: its RULER definition and how to score it.

    Attributes:
        name: RULER's task name (``niah_single_1``, ``vt``, ``cwe``, ...).
        family: ``niah``, ``vt``, ``cwe`` or ``fwe`` (which generator builds it).
        description: one line for ``tokenweight tasks list``.
        metric: RULER's metric for generations: ``string_match_all`` or ``string_match_part``.
        tokens_to_generate: RULER's generation budget for the task family.
        has_depth: samples carry a needle depth and honour ``depths``.
        haystack: ``"corpus"`` (the ``Haystack`` passed in, noise when none), ``"noise"`` (RULER's
            repeated sentences, always), ``"needles"`` (distractor needles) or ``None`` (no filler).
        params: family-specific settings from RULER's ``synthetic.yaml``.
    """

    name: str
    family: str
    description: str
    metric: str
    tokens_to_generate: int
    has_depth: bool
    haystack: str | None
    params: dict[str, Any]


class LengthTooShortError(ValueError):
    """The requested length cannot hold the task's smallest prompt (the message gives the minimum)."""

    def __init__(self, task: str, length: int, minimum: int):
        self.task, self.length, self.minimum = task, length, minimum
        super().__init__(
            f"length={length} is too short for task {task!r}: its shortest prompt has {minimum} tokens "
            f"in this tokenizer; ask for length >= {minimum}"
        )


class GenerationBug(RuntimeError):
    """A generated sample broke its own design (e.g. the needle is missing from the input)."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`GenerationBug` when a generator's invariant fails (kept under ``python -O``)."""
    if not condition:
        raise GenerationBug(f"internal error in task generation: {message}")


def count_tokens(tokenizer, text: str) -> int:
    """Tokens of ``text`` as the model reads it (special tokens included, no truncation)."""
    return len(tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])


def piece_token_counts(tokenizer, pieces: list[str]) -> list[int]:
    """Tokens of each string of ``pieces`` on its own (no special tokens), in one batched call.

    Haystack pieces repeat a lot (noise: ~20 distinct pieces; code: indentation, keywords), so
    only distinct pieces are tokenized, with the Rust tokenizer directly when there is one (the
    Python wrapper's per-item conversion costs more than the tokenization itself).
    """
    if not pieces:
        return []
    uniq = list(dict.fromkeys(pieces))
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        sizes = [len(e.ids) for e in backend.encode_batch(uniq, add_special_tokens=False)]
    else:
        sizes = [len(x) for x in tokenizer(uniq, add_special_tokens=False, verbose=False)["input_ids"]]
    size = dict(zip(uniq, sizes))
    return [size[p] for p in pieces]
