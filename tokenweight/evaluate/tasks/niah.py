"""Needle-in-a-haystack tasks: RULER's eight NIAH variants.

A needle is the sentence ``"One of the special magic {numbers} for {key} is: {value}."``; the
prompt (RULER's template and answer prefix, ``tokens_to_generate`` 128) asks for the value(s) of
the queried key(s). The variants (RULER ``synthetic.yaml``) differ in

- the haystack (RULER's ``type_haystack``): repeated noise (``niah_single_1``), an essay (the
  ``Haystack`` passed in, by default the prose shipped with CPython; noise only when that is what
  is passed), or other needles with random keys and values (``niah_multikey_2``/``_3``: every line
  looks like the answer);
- key and value types: ``words`` (adjective-noun), ``numbers`` (7 digits), ``uuids``;
- needle counts: ``num_needle_k`` keys (multi-key: 3 distractor keys), ``num_needle_v`` values per
  key (multi-value: all 4 must be recalled), ``num_needle_q`` keys asked at once (multi-query).

Needle depths: without a requested depth, every needle gets a distinct depth from RULER's grid of
40 (``round(linspace(0, 100, 40))`` percent), as RULER does; with one, the needle holding
``outputs[0]`` goes to that depth and the others keep their grid depths. The random draws do not
depend on the depth or the length, so the same sample index at different depths and lengths has
the same keys and values (paired comparisons).
"""

from __future__ import annotations

import random

import numpy as np

from tokenweight.evaluate.tasks.haystack import Haystack, Stream, default_essay, fit_haystack
from tokenweight.evaluate.tasks.sample import Sample, TaskSpec, count_tokens, require
from tokenweight.evaluate.tasks.vocab import distinct_values, random_value

TEMPLATE = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
    "What are all the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
ANSWER_PREFIX = " The special magic {type_needle_v} for {query} mentioned in the provided text are"
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
#: RULER's needle depths (fractions): round(linspace(0, 100, 40)) percent
DEPTHS = tuple(float(d) / 100 for d in np.round(np.linspace(0, 100, num=40, endpoint=True)).astype(int))
NUM_DISTRACTORS = 9


def _template(type_v: str, singular: bool) -> tuple[str, str]:
    """RULER's template; for a single answer it is made singular exactly as RULER does it."""
    t = TEMPLATE + ANSWER_PREFIX
    if singular:
        t = t.replace("Some", "A").replace("are all", "is").replace("are", "is").replace("answers", "answer")
        type_v = type_v[:-1]
    return t, type_v


def _distractor_needles(rng_seed: int, type_k: str, type_v: str, count: int, keys: set, values: set):
    """``count`` needles with fresh keys and values; the first ``c`` are the same for any count."""
    rng = random.Random(rng_seed)
    out, used_k, used_v = [], set(keys), set(values)
    while len(out) < count:
        k = random_value(type_k, rng)
        while k in used_k:
            k = random_value(type_k, rng)
        v = random_value(type_v, rng)
        while v in used_v:
            v = random_value(type_v, rng)
        used_k.add(k)
        used_v.add(v)
        out.append((k, v, NEEDLE.format(type_needle_v=type_v, key=k, value=v)))
    return out


def generate_niah(
    spec: TaskSpec, tokenizer, length: int, rng: random.Random, haystack: Haystack | None, depth: float | None, **_
) -> Sample:
    """One NIAH sample whose prompt (answer prefix included) has at most ``length`` tokens, short of
    it by less than one haystack piece."""
    p = spec.params
    type_k, type_v = p["type_needle_k"], p["type_needle_v"]
    num_q = p["num_needle_q"]
    num_k, num_v = max(p["num_needle_k"], num_q), p["num_needle_v"]

    keys = distinct_values(type_k, rng, num_k)
    flat = distinct_values(type_v, rng, num_k * num_v)
    values = [flat[i * num_v : (i + 1) * num_v] for i in range(num_k)]
    needles = [(i, v) for i in range(num_k) for v in values[i]]
    rng.shuffle(needles)
    grid = rng.sample(DEPTHS, len(needles))
    queried = rng.sample(range(num_k), num_q)
    outputs = [v for i in queried for v in values[i]]
    hay_seed = rng.getrandbits(64)
    cand_seed = rng.getrandbits(64)

    gold_first = next(j for j, (i, v) in enumerate(needles) if v == outputs[0])
    depths = list(grid)
    if depth is not None:
        depths[gold_first] = float(depth)
    texts = [NEEDLE.format(type_needle_v=type_v, key=keys[i], value=v) for i, v in needles]

    query = keys[queried[0]] if num_q == 1 else ", ".join(keys[i] for i in queried[:-1]) + ", and " + keys[queried[-1]]
    template, tv = _template(type_v, num_q * num_v == 1)

    kind = spec.haystack
    if kind == "essay" and haystack is not None and haystack.kind == "noise":
        kind = "noise"  # asked for: the essay tasks on RULER's noise
    distractors: list = []

    def make_stream(min_tokens: int) -> Stream:
        nonlocal distractors
        if kind == "needle":
            per = count_tokens(tokenizer, texts[0])
            distractors = _distractor_needles(
                hay_seed, type_k, type_v, -(-min_tokens // max(per, 1)) + 2, set(keys), set(flat)
            )
            return Stream.from_text("\n".join(d[2] for d in distractors), tokenizer, meta={"haystack": "needle"})
        source = (haystack or default_essay()) if kind == "essay" else Haystack.noise()
        return source.stream(tokenizer, random.Random(hay_seed), min_tokens)

    def build(stream: Stream, m: int) -> str:
        slots = [stream.slot_for(m, d) for d in depths]
        context = stream.render(m, list(zip(slots, texts)))
        return template.format(type_needle_v=tv, context=context, query=query).rstrip()

    stream, m, prompt, n_tokens = fit_haystack(make_stream, build, tokenizer, length, spec.name)
    slots = [stream.slot_for(m, d) for d in depths]

    # validity: every needle exactly once, every answer present, no other needle for a queried key
    for t in texts:
        require(prompt.count(t) == 1, f"{spec.name}: needle {t!r} occurs {prompt.count(t)} times in the input")
    for o in outputs:
        require(o in prompt, f"{spec.name}: answer {o!r} missing from the input")
    for i in queried:
        phrase = f" for {keys[i]} is: "
        require(
            prompt.count(phrase) == num_v,
            f"{spec.name}: key {keys[i]!r} has {prompt.count(phrase)} needles, expected {num_v}",
        )

    # candidates: in-context values of other keys first (the hard distractors), then fresh values
    crng = random.Random(cand_seed)
    hard = [v for i, v in needles if i not in queried]
    if distractors:
        chars = len("".join(stream.pieces[:m]))
        end, inside = 0, []
        for _, v, t in distractors:
            end += len(t)
            if end > chars:
                break
            inside.append(v)
            end += 1  # the newline between distractor needles
        hard += crng.sample(inside, min(len(inside), NUM_DISTRACTORS))
    hard = hard[:NUM_DISTRACTORS]
    fresh = []
    taken = set(flat) | set(hard)
    while len(hard) + len(fresh) < NUM_DISTRACTORS:
        v = random_value(type_v, crng)
        if v not in taken and v not in prompt:
            taken.add(v)
            fresh.append(v)

    return Sample(
        task=spec.name,
        input=prompt,
        outputs=outputs,
        length=n_tokens,
        depth=float(depths[gold_first]),
        candidates=outputs + hard + fresh,
        meta={
            **stream.meta,  # haystack kind; for a corpus: first document and documents used; essay: source
            "haystack_pieces": m,
            "keys": [keys[i] for i in queried],
            "needle_depths": [stream.depth_of(m, s) for s in slots],
            "depth_requested": None if depth is None else float(depth),
        },
    )
