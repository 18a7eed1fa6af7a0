"""RULER's QA tasks over user files: RULER's reading of SQuAD and HotpotQA, the prompt, the
documents, and files of the wrong shape refused with one line. Module cost: ~1 s."""

from __future__ import annotations

import json
import re

import pytest

from tests.evaluate.tasks.conftest import HOTPOTQA, SQUAD
from tokenweight.errors import UsageError
from tokenweight.evaluate.tasks import TASKS, generate_samples, read_qa, score_generation
from tokenweight.evaluate.tasks.qa import ANSWER_PREFIX, TEMPLATE


def test_read_squad_as_ruler(qa_data):
    qa = qa_data["squad"]
    contexts = [p["context"] for a in SQUAD["data"] for p in a["paragraphs"]]
    assert qa.docs == sorted(set(contexts))
    # every answerable question in file order; gold = its paragraph; more = the article's others
    assert [q["query"] for q in qa.questions] == [
        "Which river has the largest discharge?",
        "What do many consider the Nile?",
        "Which river does Paris lie on?",
        "What is the capital of Portugal?",
    ]
    q = qa.questions[1]
    assert q["outputs"] == ["the longest river in the world", "the longest river"]
    assert [qa.docs[i] for i in q["context"]] == [contexts[1]] and [qa.docs[i] for i in q["more_context"]] == [
        contexts[0]
    ]


def test_read_hotpotqa_as_ruler(qa_data):
    qa = qa_data["hotpotqa"]
    docs = {f"{t}\n{''.join(p)}" for d in HOTPOTQA for t, p in d["context"]}
    assert qa.docs == sorted(docs) and len(qa.docs) == 5
    assert [q["outputs"] for q in qa.questions] == [["Lisbon"], ["no"], ["the Seine"]]
    assert [qa.docs[i] for i in qa.questions[0]["context"]] == [
        "Douro\nThe Douro flows through Spain and ends in Portugal at Porto.",
        "Portugal\nPortugal's capital is Lisbon.",
        "Seine\nThe Seine flows through Paris.",
    ]


@pytest.mark.parametrize("task", ["qa_1", "qa_2"])
def test_qa_samples(tokenizer, qa_data, task):
    qa = qa_data[TASKS[task].params["dataset"]]
    ss = generate_samples(task, tokenizer, 600, 3, 0, qa=qa)
    for k, s in enumerate(ss):
        q = qa.questions[k]
        assert s.meta["question"] == k and s.outputs == q["outputs"]  # sample k asks question k
        assert s.answer_prefix == ANSWER_PREFIX and s.tokens_to_generate == 32
        head, rest = TEMPLATE.split("{context}")
        assert s.input.startswith(head) and s.input.endswith(rest.format(query=q["query"]))
        shown = re.findall(r"Document (\d+):\n", s.input)
        assert shown == [str(i + 1) for i in range(s.meta["documents"])]
        for i in q["context"]:
            assert f":\n{qa.docs[i]}" in s.input  # every gold document is shown
        assert s.length == len(tokenizer.tokenize(s.prompt)) + 32 <= 600
    # the metric is RULER's string_match_part: any gold answer counts
    assert TASKS[task].metric == "string_match_part"
    scored = score_generation([f"I think {ss[0].outputs[-1]}."] + ["?"] * 2, ss)
    assert scored["per_sample"][0]["score"] == 1.0 and scored["by_task"][task]["score"] == pytest.approx(100 / 3)


def test_more_documents_fill_longer_lengths(tokenizer, qa_data):
    short = generate_samples("qa_1", tokenizer, 300, 1, 0, qa=qa_data["squad"])[0]
    long = generate_samples("qa_1", tokenizer, 2000, 1, 0, qa=qa_data["squad"])[0]
    assert short.meta["documents"] < long.meta["documents"]
    assert long.meta["documents"] > len(qa_data["squad"].docs)  # all four, then repeated as RULER does
    assert long.length > 2000 - 60


BAD = [
    ("squad", [], 'no "data" list at the top'),
    ("squad", {"data": [{"title": "x"}]}, 'data[0] has no "paragraphs" list'),
    ("squad", {"data": [{"paragraphs": [{"context": "c"}]}]}, 'lacks "context" or "qas"'),
    ("squad", {"data": [{"paragraphs": [{"context": "c", "qas": [{"question": "q"}]}]}]}, 'lacks "question" or'),
    ("squad", {"data": [{"paragraphs": [{"context": "c", "qas": []}]}]}, "no answerable question"),
    ("hotpotqa", {"data": []}, "the top level is not a list"),
    ("hotpotqa", [{"question": "q", "answer": "a"}], 'entry 0 lacks "question", "answer" or a "context" list'),
    ("hotpotqa", [{"question": "q", "answer": "a", "context": [["t"]]}], "is not [[title, [sentence, ...]], ...]"),
    ("hotpotqa", SQUAD, "the top level is not a list"),  # the other dataset's file
    ("squad", HOTPOTQA, 'no "data" list at the top'),
]


@pytest.mark.parametrize("kind,data,message", BAD)
def test_wrong_shapes_are_refused_with_one_line(tmp_path, kind, data, message):
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(UsageError) as e:
        read_qa(path, kind)
    text = str(e.value)
    assert "\n" not in text and message in text and f"--{kind} " in text and "expected" in text


def test_missing_and_non_json_files(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        read_qa(tmp_path / "none.json", "squad")
    (tmp_path / "x.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(UsageError, match="not JSON"):
        read_qa(tmp_path / "x.json", "hotpotqa")
    with pytest.raises(ValueError, match="kind='trivia'"):
        read_qa(tmp_path / "x.json", "trivia")


def test_squad_1_1_has_no_is_impossible(tmp_path):
    data = {"data": [{"paragraphs": [{"context": "Rome is in Italy.", "qas": [
        {"question": "Where is Rome?", "answers": [{"text": "Italy"}]}]}]}]}  # fmt: skip
    (tmp_path / "v1.json").write_text(json.dumps(data), encoding="utf-8")
    assert read_qa(tmp_path / "v1.json", "squad").questions[0]["outputs"] == ["Italy"]
