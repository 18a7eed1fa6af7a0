"""Length fitting and haystack pieces/slots against brute force and hand-computed strings."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tokenweight.evaluate.tasks.fit import TooShort, fit_length
from tokenweight.evaluate.tasks.haystack import Haystack, Stream


def _brute_largest(f, target, lo, hi):
    best = None
    for m in range(lo, hi + 1):
        if f(m) <= target:
            best = m
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("with_estimate", [True, False])
def test_fit_length_monotone_equals_brute_force(seed, with_estimate):
    rng = random.Random(seed)
    sizes = [rng.randint(1, 6) for _ in range(400)]
    cum = np.concatenate([[0], np.cumsum(sizes)])
    base = 37
    # exact count = base + units + a boundary effect of one token every 3rd unit (still monotone)
    f = lambda m: int(base + cum[m] + (m // 3))  # noqa: E731
    est = cum if with_estimate else None
    for target in [base, base + 1, 200, 513, 900, int(base + cum[-1] + 400 // 3), int(base + cum[-1] + 1000)]:
        m, n = fit_length(f, target, 0, 400, estimate=est)
        assert m == _brute_largest(f, target, 0, 400)
        assert n == f(m)


@pytest.mark.parametrize("seed", range(6))
def test_fit_length_non_monotone_keeps_its_guarantee(seed):
    rng = random.Random(100 + seed)
    sizes = [rng.randint(0, 5) for _ in range(300)]
    cum = np.concatenate([[0], np.cumsum(sizes)])
    wobble = [rng.choice([-2, -1, 0, 1, 2]) for _ in range(301)]
    f = lambda m: int(10 + cum[m] + wobble[m] + 2)  # noqa: E731  (>= 10 > 0 everywhere)
    for target in [12, 100, 333, 600]:
        if f(0) > target:
            with pytest.raises(TooShort):
                fit_length(f, target, 0, 300, estimate=cum)
            continue
        m, n = fit_length(f, target, 0, 300, estimate=cum)
        assert n == f(m) <= target
        assert m == 300 or f(m + 1) > target


def test_fit_length_needs_few_measurements_with_a_good_estimate():
    cum = np.arange(0, 100001) * 3
    calls = []

    def f(m):
        calls.append(m)
        return 50 + 3 * m + (1 if m % 7 == 0 else 0)

    m, n = fit_length(f, 60000, 0, 100000, estimate=cum)
    assert n <= 60000 < f(m + 1)
    assert len(set(calls)) <= 4


def test_fit_length_too_short_and_bad_arguments():
    with pytest.raises(TooShort) as e:
        fit_length(lambda m: 100 + m, 99, 0, 10)
    assert e.value.minimum == 100
    with pytest.raises(ValueError, match="lo=5"):
        fit_length(lambda m: m, 10, 5, 4)
    with pytest.raises(ValueError, match="estimate has shape"):
        fit_length(lambda m: m, 10, 0, 4, estimate=[0, 1])


TEXT = "The sky is blue. The sun is hot.\nHere we go."


def test_stream_pieces_slots_and_render(tokenizer):
    s = Stream.from_text(TEXT, tokenizer)
    assert s.pieces == ["The", " sky", " is", " blue.", " The", " sun", " is", " hot.", "\nHere", " we", " go."]
    assert "".join(s.pieces) == TEXT
    assert s.slots.tolist() == [0, 4, 8, 11]  # start, after "blue.", before "\nHere", end
    per_piece = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in s.pieces]
    assert s.cum.tolist() == np.concatenate([[0], np.cumsum(per_piece)]).tolist()
    out = s.render(11, [(4, "X."), (8, "Y."), (0, "Z."), (4, "W.")])
    assert out == "Z.\nThe sky is blue. X. W. The sun is hot.\nY.\nHere we go."
    assert s.render(6, [(6, "E.")]) == "The sky is blue. The sun\nE."
    assert s.render(0, [(0, "N.")]) == "N."
    with pytest.raises(ValueError, match="slot=7"):
        s.render(6, [(7, "E.")])


def test_stream_slot_for_is_the_nearest_slot_in_tokens(tokenizer):
    text = "\n".join(f"Line {i} says hello to everyone here." for i in range(40))
    s = Stream.from_text(text, tokenizer)
    for m in [len(s), len(s) // 2, 57]:
        allowed = [j for j in s.slots.tolist() if j < m] + [m]
        for d in np.linspace(0, 1, 23):
            want = d * s.cum[m]
            best = min(abs(s.cum[j] - want) for j in allowed)
            j = s.slot_for(m, float(d))
            assert j in allowed and abs(s.cum[j] - want) == best
        assert s.slot_for(m, 0.0) == 0 and s.slot_for(m, 1.0) == m
        assert s.depth_of(m, m) == 1.0 and s.depth_of(m, 0) == 0.0


def test_haystack_streams(tokenizer):
    noise = Haystack.noise().stream(tokenizer, random.Random(0), 300)
    assert noise.cum[-1] >= 300 and "".join(noise.pieces).startswith("The grass is green. The sky is blue.")
    docs = ["def f(x):\n    return x + 1", "class A:\n    pass", "import os\nprint(os.sep)"]
    h = Haystack.from_texts(docs + ["   ", ""])
    assert len(h.texts) == 3
    s = h.stream(tokenizer, random.Random(3), 200)
    text = "".join(s.pieces)
    assert s.cum[-1] >= 200 and s.meta["haystack"] == "corpus"
    first = s.meta["first_document"]
    assert text.startswith(docs[first]) and (docs[(first + 1) % 3] in text)
    with pytest.raises(ValueError, match="no non-empty document"):
        Haystack.from_texts([" ", "\n"])
    with pytest.raises(ValueError, match="not one string"):
        Haystack.from_texts("a document")
