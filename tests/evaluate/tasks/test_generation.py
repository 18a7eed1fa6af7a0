"""Every task: RULER's length and prompt split, answers in the input as designed, seeds, depths,
haystacks, the QA files, argument errors. Module cost: ~10 s (2 CPU threads), the sample fixture
~6 s of it."""

from __future__ import annotations

import inspect
import re
import textwrap
from collections import Counter

import pytest

from tokenweight.evaluate.tasks import (
    TASKS,
    GenerationBug,
    Haystack,
    LengthTooShortError,
    generate_samples,
)
from tokenweight.evaluate.tasks.essay import essay_text
from tokenweight.evaluate.tasks.haystack import default_essay
from tokenweight.evaluate.tasks.sample import count_tokens, require

CORPUS = Haystack.from_texts([inspect.getsource(textwrap), inspect.getsource(re)])
LENGTHS = (450, 830)


def _qa(task, qa_data):
    return qa_data.get(TASKS[task].params.get("dataset"))


@pytest.fixture(scope="module")
def samples(tokenizer, qa_data):
    """{(task, length): samples} with the corpus haystack, built once for the module."""
    return {
        (t, n): generate_samples(t, tokenizer, n, 2, 7, haystack=CORPUS, qa=_qa(t, qa_data))
        for t in TASKS
        for n in LENGTHS
    }


@pytest.mark.parametrize("task", list(TASKS))
def test_lengths_are_rulers_and_answers_present(samples, tokenizer, qa_data, task):
    """RULER's record: input without the prefix, length = tokenize(input + prefix) + budget <= n."""
    spec = TASKS[task]
    tol = 12  # short of the target by less than one piece or list item, or (QA) one document
    if spec.family == "qa":
        tol = max(len(tokenizer.tokenize(f"\n\nDocument 9:\n{d}")) for d in _qa(task, qa_data).docs)
    for n in LENGTHS:
        for s in samples[(task, n)]:
            assert s.task == task and s.tokens_to_generate == spec.tokens_to_generate
            assert s.prompt == s.input + s.answer_prefix
            assert s.length == len(tokenizer.tokenize(s.prompt)) + spec.tokens_to_generate
            assert s.length == count_tokens(tokenizer, s.prompt) + s.tokens_to_generate
            assert n - tol <= s.length <= n
            # RULER's split: the last occurrence of the prefix template's first 10 characters
            assert s.answer_prefix.startswith(spec.answer_prefix[:10])
            assert s.input.rfind(spec.answer_prefix[:10]) == -1 or spec.family in ("vt", "cwe")  # one-shot examples
            assert not s.input.endswith(s.answer_prefix)
            if spec.family == "qa":
                assert any(o for o in s.outputs)  # answers need not be in the text (HotpotQA's yes/no)
            else:
                assert s.outputs and all(o in s.input for o in s.outputs)
            k = len(dict.fromkeys(s.outputs))
            assert s.candidates[:k] == list(dict.fromkeys(s.outputs)) and len(set(s.candidates)) == len(s.candidates)
            assert 1 <= len(s.candidates) - k <= 9
            assert (s.depth is not None) == spec.has_depth
            assert s.meta["target_length"] == n and s.meta["seed"] == 7
            if spec.family == "niah":  # RULER's token_position_answer
                pos = s.meta["token_position_answer"]
                assert pos == len(tokenizer.tokenize(s.input[: s.input.find(s.outputs[0])]))


def test_budget_template_and_answer_prefix_options(tokenizer):
    base = generate_samples("niah_single_1", tokenizer, 500, 1, 0)[0]
    none = generate_samples("niah_single_1", tokenizer, 500, 1, 0, tokens_to_generate=0)[0]
    assert base.tokens_to_generate == 128 and none.tokens_to_generate == 0
    assert count_tokens(tokenizer, base.prompt) <= 500 - 128 < count_tokens(tokenizer, none.prompt) <= 500
    t = generate_samples("niah_single_1", tokenizer, 500, 1, 0, template_tokens=40)[0]
    assert t.meta["template_tokens"] == 40 and t.length + 40 <= 500 and t.length > 500 - 40 - 10
    # reasoning models: no answer prefix, its text ends the input (RULER's NeMo-Skills pipeline)
    plain = generate_samples("niah_single_1", tokenizer, 500, 1, 0, answer_prefix=False)[0]
    assert plain.answer_prefix == "" and plain.input == base.prompt and plain.length == base.length
    for task in ("vt", "cwe", "fwe"):
        a = generate_samples(task, tokenizer, 600, 1, 0)[0]
        b = generate_samples(task, tokenizer, 600, 1, 0, answer_prefix=False)[0]
        assert b.input == a.prompt and b.answer_prefix == ""


def test_essay_haystack_is_the_default_and_rulers_treatment(tokenizer):
    first = " ".join(re.sub(r"\s+", " ", essay_text()).split(" ")[:12])
    for task in ("niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multivalue", "niah_multiquery"):
        (s,) = generate_samples(task, tokenizer, 700, 1, 0, depths=[1.0])
        assert s.meta["haystack"] == "essay" and "grass is green" not in s.input
        context = s.input.split("afterwards.\n", 1)[1]
        assert context.startswith(first)  # every sample starts at the essay's first word, as RULER's
        assert "\n" not in context.split("\nWhat ")[0]  # whitespace collapsed: one line
    # the essay's cached streams never change a sample: a fresh haystack, asked in another order
    fresh = Haystack.essay(essay_text(), source=default_essay().source)
    late = generate_samples("niah_single_2", tokenizer, 420, 2, 1, haystack=fresh)
    assert generate_samples("niah_single_2", tokenizer, 420, 2, 1) == late
    (noise,) = generate_samples("niah_single_2", tokenizer, 700, 1, 0, haystack=Haystack.noise())
    assert noise.meta["haystack"] == "noise" and "The grass is green." in noise.input
    (own,) = generate_samples("niah_single_2", tokenizer, 700, 1, 0, haystack=Haystack.essay("One. Two.  Three!"))
    assert "One. Two. Three! One. Two." in own.input  # repeated when the length needs more words


def test_seeds_reproduce_and_differ(tokenizer):
    for task in ["niah_multikey_2", "vt", "cwe", "fwe", "niah_single_2"]:
        a = generate_samples(task, tokenizer, 400, 3, 11, haystack=CORPUS)
        b = generate_samples(task, tokenizer, 400, 3, 11, haystack=CORPUS)
        c = generate_samples(task, tokenizer, 400, 3, 12, haystack=CORPUS)
        assert a == b
        assert [s.input for s in a] != [s.input for s in c]
        assert len({s.input for s in a}) == 3  # samples within a set differ too


def _needle_fraction(tokenizer, s, needle: str, head: str, tail: str) -> float:
    """Share of the context's tokens (needle removed) that precede the needle."""
    ctx = s.input[s.input.index(head) + len(head) : s.input.index(tail)]
    i = ctx.index(needle)
    before = ctx[:i]
    rest = (before + ctx[i + len(needle) :]).strip()
    count = lambda t: len(tokenizer(t, add_special_tokens=False)["input_ids"])  # noqa: E731
    return count(before.strip()) / count(rest)


@pytest.mark.parametrize(
    "task,haystack,tol", [("niah_single_1", None, 0.02), ("niah_single_2", CORPUS, 0.05), ("niah_single_2", None, 0.15)]
)
def test_depths_are_honoured_in_tokens(tokenizer, task, haystack, tol):
    depths = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
    ss = generate_samples(task, tokenizer, 1152, 2, 3, haystack=haystack, depths=depths)
    assert len(ss) == 2 * len(depths)
    assert [s.depth for s in ss] == [d for d in depths for _ in range(2)]  # depth-major
    for s in ss:
        value = s.outputs[0]
        needle = next(
            line for line in re.findall(r"One of the special magic numbers for \S+ is: \d+\.", s.input) if value in line
        )
        frac = _needle_fraction(tokenizer, s, needle, "afterwards.\n", "\nWhat is the special")
        assert abs(frac - s.depth) <= tol, (s.depth, frac)  # the essay: needles between sentences only
        assert abs(s.meta["needle_depths"][0] - frac) <= 0.02  # the depth recorded is the one measured
    # paired: sample k has the same key and value at every depth
    for k in range(2):
        assert len({(s.meta["keys"][0], s.outputs[0]) for s in ss[k::2]}) == 1


def test_tasks_without_a_needle_ignore_depths(tokenizer):
    ss = generate_samples("vt", tokenizer, 300, 2, 0, depths=[0.1, 0.9])
    assert len(ss) == 2 and all(s.depth is None for s in ss)


def test_niah_templates_and_variants(samples, tokenizer):
    s1 = samples[("niah_single_1", 830)][0]
    assert s1.input.startswith("A special magic number is hidden within the following text.")
    key = s1.meta["keys"][0]
    assert s1.input.endswith(f"What is the special magic number for {key} mentioned in the provided text?")
    assert s1.answer_prefix == f" The special magic number for {key} mentioned in the provided text is"
    assert s1.meta["haystack"] == "noise" and "The grass is green. The sky is blue." in s1.input
    assert re.fullmatch(r"\d{7}", s1.outputs[0])
    assert s1.input.count(f"for {s1.meta['keys'][0]} is: {s1.outputs[0]}.") == 1

    s2 = samples[("niah_single_2", 830)][0]
    assert s2.meta["haystack"] == "corpus" and "grass is green" not in s2.input
    s3 = samples[("niah_single_3", 830)][0]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", s3.outputs[0])

    mk = samples[("niah_multikey_1", 830)][0]
    assert mk.input.count("One of the special magic numbers for ") == 4
    assert mk.input.count(f"for {mk.meta['keys'][0]} is: ") == 1
    others = re.findall(r"One of the special magic numbers for \S+ is: (\d+)\.", mk.input)
    assert set(others) - set(mk.outputs) <= set(mk.candidates[1:4]) and len(set(others)) == 4

    for task in ["niah_multikey_2", "niah_multikey_3"]:
        s = samples[(task, 830)][0]
        assert s.meta["haystack"] == "needle"
        assert s.input.count("One of the special magic ") >= 5  # a haystack of look-alike needles
        assert s.input.count(f"for {s.meta['keys'][0]} is: ") == 1

    mv = samples[("niah_multivalue", 830)][0]
    assert mv.input.startswith("Some special magic numbers are hidden") and mv.answer_prefix.endswith("text are")
    assert len(mv.outputs) == 4 and mv.input.count(f"for {mv.meta['keys'][0]} is: ") == 4

    mq = samples[("niah_multiquery", 830)][0]
    k = mq.meta["keys"]
    assert len(k) == 4 and len(mq.outputs) == 4
    assert f"for {k[0]}, {k[1]}, {k[2]}, and {k[3]} mentioned" in mq.input
    assert f"for {k[0]}, {k[1]}, {k[2]}, and {k[3]} mentioned" in mq.answer_prefix


def test_variable_tracking_chain(samples):
    for s in samples[("vt", 830)]:
        names, value = s.outputs, s.meta["value"]
        assert len(names) == 5 and all(re.fullmatch(r"[A-Z]{5}", n) for n in names)
        main = s.input.split("\n\n", 2)[-1] if s.meta["example"] else s.input
        pos = [main.index(f"VAR {names[0]} = {value}")] + [
            main.index(f"VAR {b} = VAR {a}") for a, b in zip(names, names[1:])
        ]
        assert pos == sorted(pos)
        assert s.input.endswith("in the text above.")
        assert s.answer_prefix.endswith(f"5 variables are assigned the value {value}, they are: ")  # RULER's space


def test_common_words_counts(samples):
    for n in LENGTHS:
        for s in samples[("cwe", n)]:
            main = s.input.split("\nBelow is a numbered list")[-1] if s.meta["example"] else s.input
            items = re.findall(r"(?:^|\s)\d+\. (\S+)", main.split("\nQuestion:")[0])
            counts = Counter(items)
            assert len(items) == s.meta["list_items"]
            assert [int(x) for x in re.findall(r"(?:^|\s)(\d+)\. \S+", main.split("\nQuestion:")[0])] == list(
                range(1, len(items) + 1)
            )
            assert all(counts[w] == s.meta["freq_cw"] for w in s.outputs) and len(s.outputs) == 10
            assert max(c for w, c in counts.items() if w not in s.outputs) <= s.meta["freq_ucw"] < s.meta["freq_cw"]


def test_frequent_words_counts(samples):
    for n in LENGTHS:
        for s in samples[("fwe", n)]:
            body = s.input.split("coded words. ", 1)[1].split("\nQuestion:")[0]
            counts = Counter(body.split())
            assert counts["..."] == max(counts.values())
            top = [w for w, _ in counts.most_common() if w != "..."]
            assert set(top[:3]) == set(s.outputs)
            assert min(counts[w] for w in s.outputs) > max([counts[w] for w in top[3:]], default=0)


def test_argument_errors(tokenizer):
    with pytest.raises(ValueError, match="task='nope' is unknown"):
        generate_samples("nope", tokenizer, 300, 1, 0)
    for bad in [0, -5, 3.5, "300", True]:
        with pytest.raises(ValueError, match="length="):
            generate_samples("vt", tokenizer, bad, 1, 0)
    with pytest.raises(ValueError, match="num_samples=-1"):
        generate_samples("vt", tokenizer, 300, -1, 0)
    for bad in [[1.5], [-0.1], [], [float("nan")]]:
        with pytest.raises(ValueError, match="depths="):
            generate_samples("niah_single_1", tokenizer, 300, 1, 0, depths=bad)
    with pytest.raises(ValueError, match="haystack must be a Haystack"):
        generate_samples("niah_single_2", tokenizer, 300, 1, 0, haystack=["text"])
    for bad in [-1, 2.5, True]:
        with pytest.raises(ValueError, match="tokens_to_generate="):
            generate_samples("vt", tokenizer, 300, 1, 0, tokens_to_generate=bad)
        with pytest.raises(ValueError, match="template_tokens="):
            generate_samples("vt", tokenizer, 300, 1, 0, template_tokens=bad)
    with pytest.raises(ValueError, match="qa must be a QADataset of kind 'squad'"):
        generate_samples("qa_1", tokenizer, 300, 1, 0)
    assert generate_samples("vt", tokenizer, 300, 0, 0) == []


def test_too_short_length_reports_the_minimum(tokenizer, qa_data):
    for task in TASKS:
        for n in (20, TASKS[task].tokens_to_generate + 30):  # below the budget itself; room for 30 prompt tokens
            with pytest.raises(LengthTooShortError) as e:
                generate_samples(task, tokenizer, n, 1, 5, qa=_qa(task, qa_data))
            assert (
                isinstance(e.value, ValueError)
                and e.value.minimum > n
                and f"length >= {e.value.minimum}" in str(e.value)
            )
            assert e.value.length == n
        if TASKS[task].family in ("niah", "qa"):  # the minimum is exactly the needles-only prompt: it fits
            (s,) = generate_samples(task, tokenizer, e.value.minimum, 1, 5, qa=_qa(task, qa_data))
            assert s.length == e.value.minimum


def test_require_raises_generation_bug():
    require(True, "fine")
    with pytest.raises(GenerationBug, match="internal error in task generation: needle lost"):
        require(False, "needle lost")
