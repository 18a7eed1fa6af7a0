"""RULER-style synthetic long-context tasks: generation, length fitting, export, scoring.

Contract (other modules code against this; keep it stable)::

    @dataclass Sample:
        task: str                 # a key of TASKS
        input: str                # full prompt incl. question and RULER's answer prefix; ends where
                                  # the answer starts (never with whitespace)
        outputs: list[str]        # gold answers
        length: int               # tokens of `input` in the model tokenizer, special tokens included
        depth: float | None       # needle depth in [0, 1] (None: task without a needle)
        candidates: list[str] | None   # gold outputs + distractor values (rank metric)
        meta: dict                # haystack kind, seed, sample index, needle depths, ...

    TASKS: dict[str, TaskSpec]    # niah_single_1/2/3, niah_multikey_1/2/3, niah_multivalue,
                                  # niah_multiquery, vt, cwe, fwe (RULER's names and settings)

    generate_samples(task, tokenizer, length, num_samples, seed, haystack=None, depths=None)
        -> list[Sample]           # num_samples per depth for needle tasks (depth-major);
                                  # tasks without a needle ignore depths; haystack=None: noise
    Haystack.noise(); Haystack.from_texts(texts)

    score_generation(predictions, samples) -> dict
        # RULER metric per task: {"metric", "score" (0-100), "string_match_all", "string_match_part",
        #  "num_samples", "by_task": {...}, "per_sample": [{"task", "score", ...} in [0, 1]]}
    score_likelihood(model, tokenizer, samples, batch_size=8) -> list[dict]
        # per sample: {"token_accuracy", "mean_logprob", "rank" (1 = best; None without
        #  candidates), "num_candidates", "answer_tokens", "outputs": [per gold output]}
    generate_predictions(model, tokenizer, samples, max_new_tokens=None, batch_size=8) -> list[str]
        # batched greedy generation, left padding; max_new_tokens None: the task's RULER budget
    export_jsonl(samples, path); read_jsonl(path) -> list[Sample]
        # RULER's format: one JSON object per line with index, input, outputs, length (+ extras)

Errors: bad arguments raise ``ValueError`` (``LengthTooShortError``, a ValueError, when the length
cannot hold the task's smallest prompt: its ``minimum`` says what would); a generated sample that
breaks its own design (needle missing, answer ambiguous) raises ``GenerationBug``.

Modules: ``sample`` (records, checks), ``vocab`` (word lists, random values), ``haystack``
(noise and corpus haystacks, needle placement), ``fit`` (length fitting), ``niah``,
``variable_tracking``, ``words`` (cwe, fwe), ``registry`` (TASKS, generate_samples), ``scoring``
(RULER metrics), ``likelihood`` (teacher-forced answer scores), ``generation`` (greedy decoding),
``export`` (JSONL). Torch-based names load lazily: generating or exporting samples never imports
torch.
"""

from __future__ import annotations

from tokenweight._lazy import lazy_exports
from tokenweight.evaluate.tasks.export import export_jsonl, read_jsonl
from tokenweight.evaluate.tasks.haystack import Haystack
from tokenweight.evaluate.tasks.registry import TASKS, generate_samples
from tokenweight.evaluate.tasks.sample import GenerationBug, LengthTooShortError, Sample, TaskSpec
from tokenweight.evaluate.tasks.scoring import score_generation, string_match_all, string_match_part

_LAZY = {
    "score_likelihood": "tokenweight.evaluate.tasks.likelihood",
    "generate_predictions": "tokenweight.evaluate.tasks.generation",
}

__all__ = sorted(
    [
        "Sample",
        "TaskSpec",
        "TASKS",
        "Haystack",
        "generate_samples",
        "score_generation",
        "string_match_all",
        "string_match_part",
        "export_jsonl",
        "read_jsonl",
        "LengthTooShortError",
        "GenerationBug",
        *_LAZY,
    ]
)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
