"""Word lists, random values and the cwe/fwe building blocks against exact references."""

from __future__ import annotations

import math
import random
import re

import numpy as np
import pytest

from tokenweight.evaluate.tasks import vocab
from tokenweight.evaluate.tasks.words import fwe_counts, fwe_item_order, lift_answers, order_keys, zeta


def test_zeta_exact_values():
    assert zeta(2.0) == pytest.approx(math.pi**2 / 6, abs=1e-12)
    assert zeta(4.0) == pytest.approx(math.pi**4 / 90, abs=1e-12)
    assert zeta(3.0) == pytest.approx(1.2020569031595942, abs=1e-12)
    with pytest.raises(ValueError, match="s=1"):
        zeta(1)


def test_fwe_counts_are_rulers_floors():
    z = math.pi**2 / 6
    for n in [0, 1, 17, 250, 1001]:
        assert fwe_counts(n, 9, 2.0).tolist() == [math.floor(n * k**-2 / z) for k in range(1, 10)]


def test_fwe_item_order_prefixes_are_rulers_counts():
    order = fwe_item_order(600, 12, 2.0)
    assert len(order) == int(fwe_counts(600, 12, 2.0).sum())
    for n in range(0, 601, 7):
        c = fwe_counts(n, 12, 2.0)
        assert np.bincount(order[: int(c.sum())], minlength=12).tolist() == c.tolist()


def test_lift_answers_breaks_ties_only_when_needed():
    assert lift_answers(np.array([30, 7, 3, 1, 1, 0])).tolist() == [30, 7, 3, 2, 1, 0]
    assert lift_answers(np.array([30, 7, 3, 2, 1, 0])).tolist() == [30, 7, 3, 2, 1, 0]
    assert lift_answers(np.array([0, 0, 0, 0, 0])).tolist() == [0, 1, 1, 1, 0]


def test_order_keys_deterministic_and_distinct():
    a = np.repeat(np.arange(50), 20)
    b = np.tile(np.arange(20), 50)
    k1, k2 = order_keys(5, a, b), order_keys(5, a, b)
    assert k1.dtype == np.uint64 and (k1 == k2).all() and len(set(k1.tolist())) == 1000
    assert (order_keys(6, a, b) != k1).mean() > 0.99


def test_random_values_have_rulers_shapes():
    rng = random.Random(0)
    assert re.fullmatch(r"[1-9]\d{6}", vocab.random_value("numbers", rng))
    w = vocab.random_value("words", rng)
    adj, noun = w.split("-")
    assert adj in vocab.ADJECTIVES and noun in vocab.NOUNS
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", vocab.random_value("uuids", rng)
    )
    with pytest.raises(ValueError, match="kind='dates'"):
        vocab.random_value("dates", rng)
    vals = vocab.distinct_values("numbers", rng, 50, exclude={"1000000"})
    assert len(set(vals)) == 50 and "1000000" not in vals
    names = vocab.variable_names(rng, 30, 5)
    assert len(set(names)) == 30 and all(re.fullmatch(r"[A-Z]{5}", n) for n in names)
    coded = vocab.coded_words(rng, 40)
    assert len(set(coded)) == 40 and all(re.fullmatch(r"[a-z]{6}", c) for c in coded)


def test_word_pool_real_words_first_then_pseudo_words():
    assert len(vocab.WORDS) > 900 and len(vocab.ADJECTIVES) * len(vocab.NOUNS) > 60000
    small = vocab.word_pool(random.Random(1), 100)
    assert len(set(small)) == 100 and set(small) <= set(vocab.WORDS)
    big = vocab.word_pool(random.Random(1), len(vocab.WORDS) + 500)
    assert len(set(big)) == len(big) and set(big[: len(vocab.WORDS)]) == set(vocab.WORDS)
    assert all(re.fullmatch(r"([bdfgklmnprstvz][aeiou]){3}", w) for w in big[len(vocab.WORDS) :])
    assert vocab.word_pool(random.Random(1), 100) == small
