"""Aggregation tasks: common-words extraction (RULER ``cwe``) and frequent-words extraction (``fwe``).

**cwe**: a numbered list ``"1. tiger 2. polish 3. tiger ..."`` in which ``num_cw`` = 10 common
words appear ``freq_cw`` times each and every other word ``freq_ucw`` times; the answer is the 10
common words. RULER uses (30, 3) from a requested length of 4096 tokens on and (6, 1) below, after a one-shot example
(40 words at (10, 3), or 20 at (3, 1)). Lengths too short for RULER's short setting (the example
alone is a few hundred tokens) fall back to (3, 1), then (2, 1), without an example, so the task
exists from ~200 tokens on; ``meta`` records the setting used. The list grows one item at a time (the
last uncommon word may appear fewer than ``freq_ucw`` times), so lengths fit to a few tokens.

**fwe**: a text of random 6-letter "coded words" whose counts follow a Zipf law: the word of rank
``k`` appears ``floor(n * k^-alpha / zeta(alpha))`` times (alpha = 2); rank 1 is the noise word
``...``, and the answer is the words of ranks 2-4. The vocabulary has ``max(5, budget // 50)``
words (the budget: the prompt's share of the length, after the generation budget), as in RULER.
RULER's floors can tie rank 4 with rank 5 at short lengths, which would make the answer
ambiguous; we then lift the three answer words to one more than the best other word.

Item order is a seeded hash of (word, repetition), not a fresh shuffle per size, so the list for a
larger size contains the list for a smaller one in the same order: the token count grows almost
monotonically while the length is fitted.
"""

from __future__ import annotations

import random
import re
from collections import Counter

import numpy as np

from tokenweight.evaluate.tasks.fit import TooShort, fit_length
from tokenweight.evaluate.tasks.sample import LengthTooShortError, Sample, TaskSpec, count_tokens, require
from tokenweight.evaluate.tasks.vocab import coded_words, word_pool

CWE_TEMPLATE = (
    "Below is a numbered list of words. In these words, some appear more often than others. "
    "Memorize the ones that appear most often.\n{context}\nQuestion: What are the {num_cw} most common words "
    "in the above list?"
)
CWE_ANSWER_PREFIX = " Answer: The top {num_cw} words that appear most often in the list are:"
FWE_TEMPLATE = (
    "Read the following coded text and track the frequency of each coded word. Find the three most frequently "
    "appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. "
    "What are the three most frequently appeared words in the above coded text?"
)
FWE_ANSWER_PREFIX = " Answer: According to the coded text above, the three most frequently appeared words are:"
NUM_DISTRACTORS = 9
_M64 = (1 << 64) - 1


def order_keys(seed: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A pseudo-random uint64 per pair ``(a[i], b[i])`` (splitmix64 of seed, a, b): a stable order."""
    with np.errstate(over="ignore"):
        z = (
            np.uint64(seed & _M64)
            + a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
            + b.astype(np.uint64) * np.uint64(0xD1B54A32D192ED03)
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def zeta(s: float, terms: int = 1000) -> float:
    """Riemann zeta for ``s > 1`` (Euler-Maclaurin; error below 1e-12 for s >= 1.1)."""
    if s <= 1:
        raise ValueError(f"s={s} must be > 1")
    k = np.arange(1, terms, dtype=np.float64)
    n = float(terms)
    head = float(np.sum(k**-s))
    return (
        head
        + n ** (1 - s) / (s - 1)
        + 0.5 * n**-s
        + s * n ** (-s - 1) / 12
        - s * (s + 1) * (s + 2) * n ** (-s - 3) / 720
    )


def _numbered(words) -> str:
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(words))


def _cwe_tiers(length: int, p: dict) -> list[tuple[int, int, tuple[int, int, int] | None]]:
    """(freq_cw, freq_ucw, example (words, freq_cw, freq_ucw) or None), RULER's first."""
    ruler = (p["freq_cw"], p["freq_ucw"], (40, 10, 3)) if length >= 4096 else (6, 1, (20, 3, 1))
    return [ruler, (3, 1, None), (2, 1, None)]


def generate_cwe(
    spec: TaskSpec, tokenizer, length: int, rng: random.Random, haystack=None, depth=None, *, requested=None, **_
) -> Sample:
    """One common-words sample whose prompt has at most ``length`` tokens (``haystack``/``depth``
    unused); ``requested``: the length asked for, which picks RULER's setting (default ``length``)."""
    num_cw = spec.params["num_cw"]
    seed = rng.getrandbits(63)
    cand_seed = rng.getrandbits(64)
    last_error = None
    for cw, ucw, example in _cwe_tiers(length if requested is None else requested, spec.params):
        hi = max(1, length)  # uncommon items: each takes at least one token
        ex_n = example[0] if example else 0
        pool = word_pool(random.Random(seed), ex_n + num_cw + -(-hi // ucw))
        ex_words, words = pool[:ex_n], pool[ex_n:]
        prefix = ""
        if example:
            n, ecw, eucw = example
            items = ex_words[:num_cw] * ecw + ex_words[num_cw:] * eucw
            random.Random(seed).shuffle(items)
            prefix = (CWE_TEMPLATE + CWE_ANSWER_PREFIX).format(context=_numbered(items), num_cw=num_cw)
            prefix += " " + _numbered(ex_words[:num_cw]) + "\n"
        common_w = np.repeat(np.arange(num_cw), cw)
        common_r = np.tile(np.arange(cw), num_cw)
        unc_w = num_cw + np.arange(hi) // ucw
        unc_r = np.arange(hi) % ucw
        all_w = np.concatenate([common_w, unc_w])
        rank = np.argsort(order_keys(seed, all_w, np.concatenate([common_r, unc_r])), kind="stable")
        texts: dict[int, str] = {}

        def build(m: int) -> str:
            keep = rank[rank < len(common_w) + m]
            context = _numbered(words[w] for w in all_w[keep])
            return prefix + (CWE_TEMPLATE + CWE_ANSWER_PREFIX).format(context=context, num_cw=num_cw)

        def measure(m: int) -> int:
            texts[m] = build(m)
            return count_tokens(tokenizer, texts[m])

        try:
            m, n_tokens = fit_length(measure, length, 0, hi)
            break
        except TooShort as e:
            last_error = LengthTooShortError(spec.name, length, e.minimum)
    else:
        raise last_error
    prompt = texts[m]
    main = prompt[len(prefix) :]
    counts = Counter(re.findall(r"(?:^|\s)\d+\. (\S+)", main.split("\nQuestion:")[0]))
    outputs = list(words[:num_cw])
    for w in outputs:
        require(counts[w] == cw, f"cwe: common word {w!r} appears {counts[w]} times, expected {cw}")
    require(
        max((c for w, c in counts.items() if w not in outputs), default=0) < cw, "cwe: an uncommon word is as common"
    )
    present = [w for w in words[num_cw : num_cw + -(-m // ucw)]]
    crng = random.Random(cand_seed)
    hard = crng.sample(present, min(len(present), NUM_DISTRACTORS))
    fresh = [w for w in words[num_cw + -(-m // ucw) :] if w not in counts][: NUM_DISTRACTORS - len(hard)]
    return Sample(
        task=spec.name,
        input=prompt,
        outputs=outputs,
        length=n_tokens,
        depth=None,
        candidates=outputs + hard + fresh,
        meta={
            "freq_cw": cw,
            "freq_ucw": ucw,
            "example": example is not None,
            "list_items": int(len(common_w) + m),
        },
    )


def fwe_counts(n: int, vocab_size: int, alpha: float) -> np.ndarray:
    """RULER's occurrences ``[vocab_size]`` of each rank at scale ``n``: ``floor(n k^-alpha / zeta)``."""
    k = np.arange(1, vocab_size + 1, dtype=np.float64)
    return np.floor(n * k**-alpha / zeta(alpha)).astype(np.int64)


def fwe_item_order(n_max: int, vocab_size: int, alpha: float) -> np.ndarray:
    """Ranks (0-based) of the coded-word occurrences in the order they appear as the scale grows.

    The ``r``-th copy of rank ``k`` appears at the smallest scale ``n`` with
    ``floor(n p_k) >= r + 1``; sorting copies by that scale, the first ``M`` entries give RULER's
    counts exactly whenever ``M`` is the total at some scale, and one copy more or less in between,
    so the text can grow one word at a time.
    """
    p = np.arange(1, vocab_size + 1, dtype=np.float64) ** -alpha / zeta(alpha)
    caps = fwe_counts(n_max, vocab_size, alpha)
    ranks = np.repeat(np.arange(vocab_size), caps)
    copies = np.concatenate([np.arange(c) for c in caps]) + 1
    scale = np.ceil(copies / p[ranks])
    scale += np.floor(scale * p[ranks]) < copies  # guard against rounding just below an integer
    return ranks[np.lexsort((ranks, scale))]


def lift_answers(counts: np.ndarray) -> np.ndarray:
    """Counts with ranks 2-4 (the answer) raised above every rank >= 5: no tie at short lengths."""
    c = counts.copy()
    rest = int(c[4:].max()) if len(c) > 4 else 0
    c[1:4] = np.maximum(c[1:4], rest + 1)
    return c


def generate_fwe(spec: TaskSpec, tokenizer, length: int, rng: random.Random, haystack=None, depth=None, **_) -> Sample:
    """One frequent-words sample whose prompt has at most ``length`` tokens (``haystack``/``depth`` unused)."""
    alpha = float(spec.params["alpha"])
    vocab_size = max(5, length // 50)
    vocab = coded_words(rng, vocab_size, spec.params.get("coded_wordlen", 6))
    vocab[0] = "..."  # rank 1 is noise, as in RULER
    seed = rng.getrandbits(63)
    cand_seed = rng.getrandbits(64)
    words = np.array(vocab, dtype=object)

    order = fwe_item_order(2 * length + 16, vocab_size, alpha)
    texts: dict[int, str] = {}

    def build(m: int) -> str:
        c = lift_answers(np.bincount(order[:m], minlength=vocab_size))
        w = np.repeat(np.arange(vocab_size), c)
        r = np.concatenate([np.arange(x) for x in c])
        shuffled = np.argsort(order_keys(seed, w, r), kind="stable")
        return (FWE_TEMPLATE + FWE_ANSWER_PREFIX).format(context=" ".join(words[w[shuffled]]))

    def measure(m: int) -> int:
        texts[m] = build(m)
        return count_tokens(tokenizer, texts[m])

    try:
        n, n_tokens = fit_length(measure, length, 0, len(order))
    except TooShort as e:
        raise LengthTooShortError(spec.name, length, e.minimum) from None
    prompt = texts[n]
    body = prompt[prompt.index("coded words. ") + len("coded words. ") : prompt.index("\nQuestion:")]
    counts = Counter(body.split())
    outputs = vocab[1:4]
    others = [counts[w] for w in vocab[4:]]
    for w in outputs:
        require(counts[w] > max(others, default=0), f"fwe: answer {w!r} appears {counts[w]} times, not above the rest")
    crng = random.Random(cand_seed)
    distract = [w for w in vocab[4:] if counts[w] > 0]
    hard = crng.sample(distract, min(len(distract), NUM_DISTRACTORS))
    return Sample(
        task=spec.name,
        input=prompt,
        outputs=list(outputs),
        length=n_tokens,
        depth=None,
        candidates=list(outputs) + hard,
        meta={
            "alpha": alpha,
            "vocab_size": vocab_size,
            "occurrences": int(n),
            "counts": [int(counts[w]) for w in vocab],
        },
    )
