"""The task registry (RULER's ``synthetic.yaml`` and ``constants.py``) and :func:`generate_samples`.

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

from tokenweight.evaluate.tasks.haystack import Haystack
from tokenweight.evaluate.tasks.niah import generate_niah
from tokenweight.evaluate.tasks.sample import Sample, TaskSpec
from tokenweight.evaluate.tasks.variable_tracking import generate_vt
from tokenweight.evaluate.tasks.words import generate_cwe, generate_fwe

_GENERATORS = {"niah": generate_niah, "vt": generate_vt, "cwe": generate_cwe, "fwe": generate_fwe}


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
    )


#: RULER's synthetic tasks, in RULER's order
TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        _niah(
            "niah_single_1", "noise", "words", "numbers", what="one needle (word key, 7-digit value) in repeated noise"
        ),
        _niah(
            "niah_single_2", "corpus", "words", "numbers", what="one needle (word key, 7-digit value) in corpus text"
        ),
        _niah("niah_single_3", "corpus", "words", "uuids", what="one needle (word key, UUID value) in corpus text"),
        _niah(
            "niah_multikey_1",
            "corpus",
            "words",
            "numbers",
            nk=4,
            what="one of 4 needles with different keys, corpus text",
        ),
        _niah("niah_multikey_2", "needles", "words", "numbers", what="one needle in a haystack of distractor needles"),
        _niah("niah_multikey_3", "needles", "uuids", "uuids", what="UUID key and value among distractor needles"),
        _niah("niah_multivalue", "corpus", "words", "numbers", nv=4, what="all 4 values of one key, corpus text"),
        _niah(
            "niah_multiquery",
            "corpus",
            "words",
            "numbers",
            nq=4,
            what="the values of 4 keys asked at once, corpus text",
        ),
        TaskSpec(
            "vt",
            "vt",
            "variable tracking: all names of a 4-hop assignment chain in noise",
            "string_match_all",
            30,
            False,
            "noise",
            {"num_chains": 1, "num_hops": 4},
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
        ),
    ]
}


def generate_samples(
    task: str,
    tokenizer,
    length: int,
    num_samples: int,
    seed: int,
    haystack: Haystack | None = None,
    depths: Sequence[float] | None = None,
) -> list[Sample]:
    """Generate ``num_samples`` samples of ``task``, each fitted to ``length`` tokens.

    Args:
        task: a key of :data:`TASKS`.
        tokenizer: the model's HF tokenizer; lengths count its tokens, special tokens included.
        length: target prompt length; every sample has at most ``length`` tokens and is short of
            it by less than one haystack piece or list item (a few tokens).
        num_samples: samples per depth (``>= 0``).
        seed: any integer; the same seed gives identical samples.
        haystack: filler for the tasks whose RULER haystack is an essay corpus
            (``TaskSpec.haystack == "corpus"``); None means RULER's noise. Tasks defined on noise,
            distractor needles or word lists ignore it.
        depths: needle depths in [0, 1]. For tasks with a needle (``TaskSpec.has_depth``):
            ``num_samples`` samples at each depth, depth-major (``len = num_samples * len(depths)``),
            sample ``k`` identical across depths except for the needle's position; None: RULER's
            random depths. Tasks without a needle ignore ``depths``.

    Raises:
        ValueError: bad arguments; :class:`LengthTooShortError` (a ValueError) when ``length``
            cannot hold the task's smallest prompt.
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r} is unknown: valid tasks are {', '.join(TASKS)}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length={length!r} must be a positive integer (tokens)")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"num_samples={num_samples!r} must be an integer >= 0")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} must be an integer")
    if haystack is not None and not isinstance(haystack, Haystack):
        raise ValueError(f"haystack must be a Haystack or None, got {type(haystack).__name__}")
    spec = TASKS[task]
    if depths is not None:
        depths = [float(d) for d in depths]
        bad = [d for d in depths if not (0.0 <= d <= 1.0) or math.isnan(d)]
        if bad or not depths:
            raise ValueError(f"depths={depths!r} must be a non-empty list of numbers in [0, 1]")
    sweep: list[float | None] = list(depths) if (depths is not None and spec.has_depth) else [None]
    generate = _GENERATORS[spec.family]
    jobs = [(depth, k) for depth in sweep for k in range(num_samples)]
    out = []
    for depth, k in tqdm(jobs, desc=f"{task} @ {length}", disable=None, leave=False):
        rng = random.Random(f"tokenweight-tasks/{task}/{seed}/{k}")
        s = generate(spec, tokenizer, length, rng, haystack, depth)
        s.meta.update({"sample": k, "seed": seed, "target_length": length})
        out.append(s)
    return out
