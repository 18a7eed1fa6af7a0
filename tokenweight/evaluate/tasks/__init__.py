"""RULER's long-context tasks: generation, length fitting, export, string-match metrics.

Contract (other modules code against this; keep it stable)::

    @dataclass Sample:            # RULER's record (scripts/data/synthetic/*.py) plus ours
        task: str                 # a key of TASKS
        input: str                # RULER's input: the prompt WITHOUT the answer prefix
        outputs: list[str]        # gold answers
        length: int               # RULER's length: tokenize(input + answer_prefix) + tokens_to_generate
        depth: float | None       # needle depth in [0, 1] (None: task without a needle)
        candidates: list[str] | None   # gold outputs + distractor values (rank metric)
        meta: dict                # haystack kind, seed, sample index, needle depths, token_position_answer, ...
        answer_prefix: str        # RULER's answer prefix ("" when asked for none)
        tokens_to_generate: int   # the generation budget counted in length
        prompt -> str             # input + answer_prefix: what the model reads (RULER's call_api.py)

    TASKS: dict[str, TaskSpec]    # RULER's 13: niah_single_1/2/3, niah_multikey_1/2/3, niah_multivalue,
                                  # niah_multiquery, vt, cwe, fwe, qa_1 (SQuAD), qa_2 (HotpotQA)

    generate_samples(task, tokenizer, length, num_samples, seed, haystack=None, depths=None, *,
                     tokens_to_generate=None, answer_prefix=True, template_tokens=0, qa=None)
        -> list[Sample]           # num_samples per depth for needle tasks (depth-major);
                                  # haystack=None: the shipped essay for the essay tasks
    Haystack.noise(); Haystack.essay(text=None); Haystack.from_texts(texts)
    read_qa(path, "squad" | "hotpotqa") -> QADataset      # qa_1 / qa_2 need one

    score_generation(predictions, samples) -> dict
        # RULER metric per task: {"metric", "score" (0-100), "string_match_all", "string_match_part",
        #  "num_samples", "by_task": {...}, "per_sample": [{"task", "score", ...} in [0, 1]]}
    score_likelihood(model, tokenizer, samples, batch_size=8) -> list[dict]
        # per sample: {"token_accuracy", "mean_logprob", "rank" (1 = best; None without
        #  candidates), "num_candidates", "answer_tokens", "outputs": [per gold output]}
    generate_predictions(model, tokenizer, samples, max_new_tokens=None, batch_size=8) -> list[str]
        # batched greedy generation of sample.prompt, left padding; max_new_tokens None: each
        # sample's tokens_to_generate
    export_jsonl(samples, path); read_jsonl(path) -> list[Sample]
        # RULER's JSONL: index, input, outputs, length, length_w_model_temp, answer_prefix
        # (+ token_position_answer for NIAH), then our extras

Errors: bad arguments raise ``ValueError`` (``LengthTooShortError``, a ValueError, when the length
cannot hold the task's smallest prompt: its ``minimum`` says what would); a bad user file (QA,
essay JSON, haystack) raises ``UsageError``; a generated sample that breaks its own design (needle
missing, answer ambiguous) raises ``GenerationBug``.

Modules: ``sample`` (records, checks), ``vocab`` (word lists, random values), ``essay`` (the
shipped essay), ``haystack`` (noise, essay and corpus haystacks, needle placement), ``sources``
(``--haystack`` and QA files by name), ``fit`` (length fitting), ``niah``, ``variable_tracking``,
``words`` (cwe, fwe), ``qa`` (qa_1, qa_2), ``registry`` (TASKS, generate_samples),
``string_match`` (RULER's string-match metrics), ``likelihood`` (teacher-forced answer scores),
``generation`` (greedy decoding), ``export`` (JSONL). Torch-based names load lazily: generating or
exporting samples never imports torch.
"""

from __future__ import annotations

from tokenweight._lazy import lazy_exports
from tokenweight.evaluate.tasks.export import export_jsonl, read_jsonl
from tokenweight.evaluate.tasks.haystack import Haystack
from tokenweight.evaluate.tasks.qa import QADataset, read_qa
from tokenweight.evaluate.tasks.registry import TASKS, generate_samples
from tokenweight.evaluate.tasks.sample import GenerationBug, LengthTooShortError, Sample, TaskSpec
from tokenweight.evaluate.tasks.string_match import score_generation, string_match_all, string_match_part

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
        "QADataset",
        "read_qa",
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
