"""Variable tracking (RULER ``vt``): follow chains of assignments hidden in noise.

A chain starts from a value, ``VAR QPWXZ = 40213``, and hops through ``num_hops`` copies,
``VAR HJKLM = VAR QPWXZ``, ...; the statements sit at random, ordered positions of RULER's noise
haystack. The question asks for every variable that holds the value of the first chain: the
answer is all ``num_hops + 1`` names (``string_match_all``). RULER's defaults: one chain, 4 hops,
5-letter names, 5-digit values, ``tokens_to_generate`` 30.

As in RULER, a one-shot example (3-letter names, the same template, its answer written out)
precedes the prompt; RULER fits it to 500 tokens, we give it two noise lines so that short lengths
work. When even that does not fit the requested length, the sample is built without the example
(``meta["example"]`` says which).
"""

from __future__ import annotations

import random

from tokenweight.evaluate.tasks.haystack import NOISE, Haystack, Stream, fit_haystack
from tokenweight.evaluate.tasks.sample import LengthTooShortError, Sample, TaskSpec, require
from tokenweight.evaluate.tasks.vocab import variable_names

TEMPLATE = (
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
    "Question: Find all variables that are assigned the value {query} in the text above."
)
# RULER's prefix, trailing space included (the answer starts right after it)
ANSWER_PREFIX = (
    " Answer: According to the chain(s) of variable assignment in the text above, "
    "{num_v} variables are assigned the value {query}, they are: "
)
NUM_DISTRACTORS = 9
EXAMPLE_NOISE_LINES = 2


def _chains(rng: random.Random, num_chains: int, num_hops: int, num_letters: int, exclude=frozenset()):
    """Names ``[num_chains][num_hops + 1]``, values ``[num_chains]``, statements per chain."""
    names = variable_names(rng, num_chains * (num_hops + 1), num_letters, exclude)
    names = [names[c * (num_hops + 1) : (c + 1) * (num_hops + 1)] for c in range(num_chains)]
    values: list[str] = []
    while len(values) < num_chains:
        v = str(rng.randint(10000, 99998))  # RULER: np.random.randint(10000, 99999)
        if v not in values:
            values.append(v)
    statements = [
        [f"VAR {ns[0]} = {v}"] + [f"VAR {ns[j + 1]} = VAR {ns[j]} " for j in range(num_hops)]  # RULER's trailing space
        for ns, v in zip(names, values)
    ]
    return names, values, statements


def _inserts(stream: Stream, m: int, statements: list[list[str]], depths: list[list[float]]) -> list[tuple[int, str]]:
    return [(stream.slot_for(m, d), s) for chain, ds in zip(statements, depths) for s, d in zip(chain, ds)]


def _prompt(context: str, value: str, num_v: int) -> str:
    return (TEMPLATE + ANSWER_PREFIX).format(context=context, query=value, num_v=num_v)


def generate_vt(
    spec: TaskSpec, tokenizer, length: int, rng: random.Random, haystack: Haystack | None, depth: float | None, **_
) -> Sample:
    """One variable-tracking sample whose prompt has at most ``length`` tokens (``haystack``/``depth``
    unused: RULER's ``vt`` is defined on noise)."""
    num_chains, num_hops = spec.params["num_chains"], spec.params["num_hops"]
    names, values, statements = _chains(rng, num_chains, num_hops, 5)
    depths = [sorted(rng.random() for _ in chain) for chain in statements]
    ex_hops = min(10, num_hops)
    ex_names, ex_values, ex_statements = _chains(rng, 1, ex_hops, 3)
    while ex_values[0] in values:
        ex_values[0] = str(rng.randint(10000, 99998))
        ex_statements[0][0] = f"VAR {ex_names[0][0]} = {ex_values[0]}"
    ex_depths = [sorted(rng.random() for _ in ex_statements[0])]
    cand_seed = rng.getrandbits(64)

    ex_stream = Stream.from_text("\n".join([NOISE] * EXAMPLE_NOISE_LINES), tokenizer)
    ex_m = len(ex_stream)
    ex_context = ex_stream.render(ex_m, _inserts(ex_stream, ex_m, ex_statements, ex_depths))
    example = _prompt(ex_context, ex_values[0], ex_hops + 1) + " " + " ".join(ex_names[0]) + "\n\n"

    def build_with(prefix: str):
        def build(stream: Stream, m: int) -> str:
            context = stream.render(m, _inserts(stream, m, statements, depths))
            return prefix + _prompt(context, values[0], num_hops + 1)

        return build

    def make_stream(min_tokens: int) -> Stream:
        return Haystack.noise().stream(tokenizer, random.Random(0), min_tokens)

    try:
        stream, m, prompt, n_tokens = fit_haystack(make_stream, build_with(example), tokenizer, length, spec.name)
        used_example = True
    except LengthTooShortError:
        stream, m, prompt, n_tokens = fit_haystack(make_stream, build_with(""), tokenizer, length, spec.name)
        used_example = False

    main = prompt[len(example) :] if used_example else prompt
    for chain in statements:
        for s in chain:
            require(main.count(s) == 1, f"vt: statement {s!r} occurs {main.count(s)} times in the input")
    for v in values:
        require(main.count(f"= {v}") == 1, f"vt: value {v} assigned {main.count(f'= {v}')} times")
    outputs = list(names[0])

    crng = random.Random(cand_seed)
    hard = [n for ns in names[1:] for n in ns] + (list(ex_names[0]) if used_example else [])
    hard = hard[:NUM_DISTRACTORS]
    fresh = variable_names(crng, NUM_DISTRACTORS - len(hard), 5, exclude=set(outputs) | set(hard))
    fresh = [f for f in fresh if f not in prompt]
    while len(hard) + len(fresh) < NUM_DISTRACTORS:
        f = variable_names(crng, 1, 5, exclude=set(outputs) | set(hard) | set(fresh))[0]
        if f not in prompt:
            fresh.append(f)

    return Sample(
        task=spec.name,
        input=prompt,
        outputs=outputs,
        length=n_tokens,
        depth=None,
        candidates=outputs + hard + fresh,
        meta={
            "haystack": "noise",
            "haystack_pieces": m,
            "value": values[0],
            "example": used_example,
            "statement_depths": [stream.depth_of(m, stream.slot_for(m, d)) for d in depths[0]],
        },
    )
