"""The task registry (RULER's ``synthetic.yaml`` and ``constants.py``) and :func:`generate_samples`.

Lengths are RULER's (``scripts/data/synthetic/*.py``): a sample of length ``L`` has a prompt (input
and answer prefix, counted by ``tokenizer.tokenize``, so no special tokens) of at most
``L - tokens_to_generate - template_tokens`` tokens, and its ``length`` is the prompt's tokens plus
``tokens_to_generate`` (RULER's ``length``; ``length_w_model_temp`` adds ``template_tokens``). RULER
grows the filler by fixed increments and binary-searches the count on one sample; here every
sample is fitted on its own (:mod:`tokenweight.evaluate.tasks.fit`), so it is short of the budget
by less than one filler unit. The answer prefix is split off the prompt as RULER does: at the last
occurrence of the prefix template's first 10 characters.

Seeding: sample ``k`` of a task draws everything from ``random.Random("tokenweight-tasks/<task>/
<seed>/<k>")`` (seeded through SHA-512 of the string: identical on every machine and Python
process). The seed string leaves out the length and the depth on purpose: the same ``k`` has the
same keys, values and chains at every length and depth, so differences between lengths or depths
are not sampling noise.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from tqdm import tqdm

from tokenweight.evaluate.tasks import niah, qa, variable_tracking, words
from tokenweight.evaluate.tasks.haystack import Haystack, default_essay
from tokenweight.evaluate.tasks.niah import generate_niah
from tokenweight.evaluate.tasks.qa import QADataset, generate_qa
from tokenweight.evaluate.tasks.sample import LengthTooShortError, Sample, TaskSpec, count_tokens
from tokenweight.evaluate.tasks.variable_tracking import generate_vt
from tokenweight.evaluate.tasks.words import generate_cwe, generate_fwe

_GENERATORS = {"niah": generate_niah, "vt": generate_vt, "cwe": generate_cwe, "fwe": generate_fwe, "qa": generate_qa}


def _niah(name: str, haystack: str, k: str, v: str, nk: int = 1, nv: int = 1, nq: int = 1, what: str = "") -> TaskSpec:
    return TaskSpec(
        name=name,
        family="niah",
        description=what,
        metric="string_match_all",
        tokens_to_generate=128,
        has_depth=True,
        haystack=haystack,
        params={"type_needle_k": k, "type_needle_v": v, "num_needle_k": nk, "num_needle_v": nv, "num_needle_q": nq},
        answer_prefix=niah.ANSWER_PREFIX,
    )


#: RULER's 13 tasks, in RULER's order (``config_tasks.sh``)
TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        _niah(
            "niah_single_1", "noise", "words", "numbers", what="one needle (word key, 7-digit value) in repeated noise"
        ),
        _niah("niah_single_2", "essay", "words", "numbers", what="one needle (word key, 7-digit value) in an essay"),
        _niah("niah_single_3", "essay", "words", "uuids", what="one needle (word key, UUID value) in an essay"),
        _niah("niah_multikey_1", "essay", "words", "numbers", nk=4, what="one of 4 needles with different keys, essay"),
        _niah("niah_multikey_2", "needle", "words", "numbers", what="one needle in a haystack of distractor needles"),
        _niah("niah_multikey_3", "needle", "uuids", "uuids", what="UUID key and value among distractor needles"),
        _niah("niah_multivalue", "essay", "words", "numbers", nv=4, what="all 4 values of one key, essay"),
        _niah("niah_multiquery", "essay", "words", "numbers", nq=4, what="the values of 4 keys asked at once, essay"),
        TaskSpec(
            "vt",
            "vt",
            "variable tracking: all names of a 4-hop assignment chain in noise",
            "string_match_all",
            30,
            False,
            "noise",
            {"num_chains": 1, "num_hops": 4},
            variable_tracking.ANSWER_PREFIX,
        ),
        TaskSpec(
            "cwe",
            "cwe",
            "common words extraction: the 10 most common words of a numbered list",
            "string_match_all",
            120,
            False,
            None,
            {"freq_cw": 30, "freq_ucw": 3, "num_cw": 10},
            words.CWE_ANSWER_PREFIX,
        ),
        TaskSpec(
            "fwe",
            "fwe",
            "frequent words extraction: the 3 most frequent coded words (Zipf, alpha 2)",
            "string_match_all",
            50,
            False,
            None,
            {"alpha": 2.0, "coded_wordlen": 6},
            words.FWE_ANSWER_PREFIX,
        ),
        TaskSpec(
            "qa_1",
            "qa",
            "question answering over SQuAD paragraphs (needs --squad FILE)",
            "string_match_part",
            32,
            False,
            "documents",
            {"dataset": "squad"},
            qa.ANSWER_PREFIX,
        ),
        TaskSpec(
            "qa_2",
            "qa",
            "multi-hop question answering over HotpotQA paragraphs (needs --hotpotqa FILE)",
            "string_match_part",
            32,
            False,
            "documents",
            {"dataset": "hotpotqa"},
            qa.ANSWER_PREFIX,
        ),
    ]
}


def _int_arg(name: str, value, low: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r} must be {'None or ' if optional else ''}an integer >= {low}")


def generate_samples(
    task: str,
    tokenizer,
    length: int,
    num_samples: int,
    seed: int,
    haystack: Haystack | None = None,
    depths: Sequence[float] | None = None,
    *,
    tokens_to_generate: int | None = None,
    answer_prefix: bool = True,
    template_tokens: int = 0,
    qa: QADataset | None = None,
) -> list[Sample]:
    """Generate ``num_samples`` samples of ``task``, each fitted to RULER's ``length``.

    Args:
        task: a key of :data:`TASKS`.
        tokenizer: the model's HF tokenizer; lengths count ``tokenizer.tokenize`` tokens (RULER's).
        length: RULER's ``max_seq_length``: every sample's prompt plus ``tokens_to_generate`` plus
            ``template_tokens`` is at most ``length`` tokens, short of it by less than one haystack
            piece, list item or document.
        num_samples: samples per depth (``>= 0``).
        seed: any integer; the same seed gives identical samples.
        haystack: filler of the essay tasks (``TaskSpec.haystack == "essay"``); None: the shipped
            essay (:func:`tokenweight.evaluate.tasks.haystack.default_essay`); ``Haystack.noise()``
            puts them on RULER's noise. Tasks defined on noise, needles, word lists or documents
            ignore it.
        depths: needle depths in [0, 1]. For tasks with a needle (``TaskSpec.has_depth``):
            ``num_samples`` samples at each depth, depth-major (``len = num_samples * len(depths)``),
            sample ``k`` identical across depths except for the needle's position; None: RULER's
            random depths. Tasks without a needle ignore ``depths``.
        tokens_to_generate: generation budget reserved inside ``length``; None: RULER's for the
            task (``TaskSpec.tokens_to_generate``).
        answer_prefix: False: no answer prefix; its text ends ``input`` instead (RULER's pipeline
            for reasoning models, NeMo-Skills ``ruler-remove-prefix``), ``answer_prefix`` is ``""``.
        template_tokens: tokens a chat template will add around the input (RULER's
            ``model_template_token``): reserved inside ``length``, recorded in ``meta``.
        qa: the dataset of a QA task (:func:`tokenweight.evaluate.tasks.qa.read_qa`); required for
            ``qa_1`` (SQuAD) and ``qa_2`` (HotpotQA), ignored otherwise.

    Raises:
        ValueError: bad arguments; :class:`LengthTooShortError` (a ValueError) when ``length``
            cannot hold the task's smallest prompt (its ``minimum`` counts the reserved tokens).
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r} is unknown: valid tasks are {', '.join(TASKS)}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length={length!r} must be a positive integer (tokens)")
    _int_arg("num_samples", num_samples, 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} must be an integer")
    _int_arg("tokens_to_generate", tokens_to_generate, 0, optional=True)
    _int_arg("template_tokens", template_tokens, 0)
    if haystack is not None and not isinstance(haystack, Haystack):
        raise ValueError(f"haystack must be a Haystack or None, got {type(haystack).__name__}")
    spec = TASKS[task]
    if spec.family == "qa" and (not isinstance(qa, QADataset) or qa.kind != spec.params["dataset"]):
        raise ValueError(f"qa must be a QADataset of kind {spec.params['dataset']!r} for task {task!r}")
    if depths is not None:
        depths = [float(d) for d in depths]
        bad = [d for d in depths if not (0.0 <= d <= 1.0) or math.isnan(d)]
        if bad or not depths:
            raise ValueError(f"depths={depths!r} must be a non-empty list of numbers in [0, 1]")
    if spec.haystack == "essay" and haystack is None:
        haystack = default_essay()
    reserve = spec.tokens_to_generate if tokens_to_generate is None else tokens_to_generate
    budget = length - reserve - template_tokens
    sweep: list[float | None] = list(depths) if (depths is not None and spec.has_depth) else [None]
    generate = _GENERATORS[spec.family]
    jobs = [(depth, k) for depth in sweep for k in range(num_samples)]
    out = []
    for depth, k in tqdm(jobs, desc=f"{task} @ {length}", disable=None, leave=False):
        rng = random.Random(f"tokenweight-tasks/{task}/{seed}/{k}")
        try:
            if budget < 1:
                raise LengthTooShortError(task, budget, 1)
            s = generate(spec, tokenizer, budget, rng, haystack, depth, requested=length, index=k, qa=qa)
        except LengthTooShortError as e:
            reserved = reserve + template_tokens
            raise LengthTooShortError(task, length, max(e.minimum, 1) + reserved, reserved) from None
        out.append(_finish(s, spec, tokenizer, reserve, answer_prefix, template_tokens))
        s.meta.update({"sample": k, "seed": seed, "target_length": length})
    return out


def _finish(s: Sample, spec: TaskSpec, tokenizer, reserve: int, answer_prefix: bool, template_tokens: int) -> Sample:
    """RULER's record of a generated prompt: the answer prefix split off, ``length`` with the
    generation budget, and for NIAH the token position of the first answer."""
    cut = s.input.rfind(spec.answer_prefix[:10])
    if answer_prefix and cut >= 0:
        s.input, s.answer_prefix = s.input[:cut], s.input[cut:]
    s.length += reserve
    s.tokens_to_generate = reserve
    if template_tokens:
        s.meta["template_tokens"] = template_tokens
    if spec.family == "niah":  # RULER's token_position_answer: tokens before the first answer
        s.meta["token_position_answer"] = count_tokens(tokenizer, s.input[: s.input.find(s.outputs[0])])
    return s
