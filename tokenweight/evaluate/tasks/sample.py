"""The records every task produces, and the checks that keep them valid.

A :class:`Sample` is one prompt with its gold answers in RULER's shape (``input`` without the
answer prefix, ``answer_prefix``, ``outputs``, ``length`` counted as RULER counts it) plus what our
likelihood scoring needs (``candidates``) and what plots need (``depth``). Generators check their
own output with :func:`require`: a sample whose answer is not in its input exactly as designed is a
bug in the generator, never something to score quietly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sample:
    """One task prompt and its gold answers.

    Attributes:
        task: task name (a key of ``TASKS``).
        input: RULER's ``input``: the prompt, question included, *without* the answer prefix
            (RULER's ``call_api.py`` sends ``input + answer_prefix``).
        outputs: the gold answers (``string_match_all``: every one is wanted; ``string_match_part``:
            alternatives, one is enough).
        length: RULER's ``length``: tokens of ``input + answer_prefix`` as RULER counts them
            (``len(tokenizer.tokenize(text))``: no special tokens) plus ``tokens_to_generate``;
            the sample was fitted so that ``length <= `` the requested length.
        depth: needle depth in [0, 1] (share of the haystack's tokens before the needle), or None
            for tasks without a needle.
        candidates: the gold outputs followed by distractor values of the same kind (for the rank
            metric), or None.
        meta: generator details (haystack kind, seed, keys, depths of every needle, ...), JSON-able.
        answer_prefix: RULER's ``answer_prefix`` (``" The special magic number for ... is"``), the
            start of the answer the model is given; ``""`` when the export asked for none (then the
            prefix's text ends ``input``, as RULER's own reasoning-model pipeline does).
        tokens_to_generate: the generation budget counted in ``length`` (RULER's per task unless
            asked otherwise).
    """

    task: str
    input: str
    outputs: list[str]
    length: int
    depth: float | None = None
    candidates: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    answer_prefix: str = ""
    tokens_to_generate: int = 0

    @property
    def prompt(self) -> str:
        """What the model reads: ``input + answer_prefix`` (RULER's ``call_api.py``)."""
        return self.input + self.answer_prefix


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: its RULER definition and how to score it.

    Attributes:
        name: RULER's task name (``niah_single_1``, ``vt``, ``cwe``, ``qa_1``, ...).
        family: ``niah``, ``vt``, ``cwe``, ``fwe`` or ``qa`` (which generator builds it).
        description: one line for ``tokenweight tasks list``.
        metric: RULER's metric for generations: ``string_match_all`` or ``string_match_part``.
        tokens_to_generate: RULER's generation budget for the task family (``constants.py``).
        has_depth: samples carry a needle depth and honour ``depths``.
        haystack: RULER's ``type_haystack``: ``"essay"`` (the ``Haystack`` passed in, by default
            the prose of :mod:`tokenweight.evaluate.tasks.essay`), ``"noise"`` (RULER's repeated
            sentences, always), ``"needle"`` (distractor needles), ``"documents"`` (QA: the
            dataset's paragraphs) or ``None`` (no filler).
        params: family-specific settings from RULER's ``synthetic.yaml``.
        answer_prefix: RULER's answer prefix template (``constants.py``); the prompt ends with it
            and :func:`~tokenweight.evaluate.tasks.registry.generate_samples` splits it off the way
            RULER does (the last occurrence of its first 10 characters).
    """

    name: str
    family: str
    description: str
    metric: str
    tokens_to_generate: int
    has_depth: bool
    haystack: str | None
    params: dict[str, Any]
    answer_prefix: str = ""


class LengthTooShortError(ValueError):
    """The requested length cannot hold the task's smallest prompt (the message gives the minimum)."""

    def __init__(self, task: str, length: int, minimum: int, reserved: int = 0):
        self.task, self.length, self.minimum, self.reserved = task, length, minimum, reserved
        what = f"its shortest prompt has {minimum - reserved} tokens in this tokenizer"
        if reserved:
            what += f", {reserved} more are reserved for the answer (generation budget, template)"
        super().__init__(f"length={length} is too short for task {task!r}: {what}; ask for length >= {minimum}")


class GenerationBug(RuntimeError):
    """A generated sample broke its own design (e.g. the needle is missing from the input)."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`GenerationBug` when a generator's invariant fails (kept under ``python -O``)."""
    if not condition:
        raise GenerationBug(f"internal error in task generation: {message}")


def count_tokens(tokenizer, text: str) -> int:
    """Tokens of ``text`` as RULER counts them: ``len(tokenizer.tokenize(text))`` (RULER's
    ``HFTokenizer.text_to_tokens``), so no special tokens; the model also reads its BOS."""
    return len(tokenizer.tokenize(text))


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
