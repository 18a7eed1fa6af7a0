"""Fixtures for the task tests: a tiny byte-level BPE tokenizer (digits split one per token, BOS
added, like the demo's code tokenizer) trained here in milliseconds, and a tiny random Llama."""

from __future__ import annotations

import inspect
import textwrap

import pytest

from tokenweight.evaluate.tasks import haystack, niah, qa, variable_tracking, words


def _training_text() -> list[str]:
    english = [
        niah.TEMPLATE,
        niah.ANSWER_PREFIX,
        niah.NEEDLE,
        variable_tracking.TEMPLATE,
        variable_tracking.ANSWER_PREFIX,
        words.CWE_TEMPLATE,
        words.FWE_TEMPLATE,
        qa.TEMPLATE,
        haystack.NOISE,
    ]
    return english * 20 + [inspect.getsource(textwrap)]


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    from tests.tiny_models import tiny_bpe

    fast = tiny_bpe(_training_text(), 700, split_digits=True, add_bos=True)
    path = tmp_path_factory.mktemp("tok")
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    import torch

    from tests.tiny_models import tiny_llama

    model = tiny_llama(
        len(tokenizer),
        0,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # a random model has nearly flat logits; larger weights make argmax and ranks well separated
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(10.0)
    return model.eval()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models run fastest on one thread; on a shared 2-core machine two OpenMP threads
    spin against other processes and measured 40-100x slower. Restored after each module."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


#: a tiny SQuAD 2.0 file: two articles, one unanswerable question (RULER skips it)
SQUAD = {
    "version": "v2.0",
    "data": [
        {
            "title": "Rivers",
            "paragraphs": [
                {
                    "context": "The Amazon is the largest river by discharge. It flows through Brazil and Peru.",
                    "qas": [
                        {"question": "Which river has the largest discharge?", "answers": [{"text": "The Amazon"}],
                         "is_impossible": False},
                        {"question": "Which river is the coldest?", "answers": [], "is_impossible": True},
                    ],
                },
                {
                    "context": "The Nile is long. Many consider it the longest river in the world.",
                    "qas": [{"question": "What do many consider the Nile?", "answers": [
                        {"text": "the longest river in the world"}, {"text": "the longest river"}],
                        "is_impossible": False}],
                },
            ],
        },
        {
            "title": "Cities",
            "paragraphs": [
                {
                    "context": "Paris is the capital of France. It lies on the Seine.",
                    "qas": [{"question": "Which river does Paris lie on?", "answers": [{"text": "the Seine"}],
                             "is_impossible": False}],
                },
                {
                    "context": "Lisbon is the capital of Portugal, on the Atlantic coast.",
                    "qas": [{"question": "What is the capital of Portugal?", "answers": [{"text": "Lisbon"}],
                             "is_impossible": False}],
                },
            ],
        },
    ],
}  # fmt: skip

#: a tiny HotpotQA (distractor setting) file
HOTPOTQA = [
    {
        "question": "Which city is the capital of the country where the Douro ends?",
        "answer": "Lisbon",
        "context": [
            ["Douro", ["The Douro flows through Spain ", "and ends in Portugal at Porto."]],
            ["Portugal", ["Portugal's capital is Lisbon."]],
            ["Seine", ["The Seine flows through Paris."]],
        ],
    },
    {
        "question": "Is the Seine longer than the Douro?",
        "answer": "no",
        "context": [
            ["Seine", ["The Seine flows through Paris."]],
            ["Douro", ["The Douro flows through Spain ", "and ends in Portugal at Porto."]],
            ["Lengths", ["The Seine is 777 km long and the Douro 897 km."]],
        ],
    },
    {
        "question": "Which river flows through Paris?",
        "answer": "the Seine",
        "context": [["Seine", ["The Seine flows through Paris."]], ["Paris", ["Paris is the capital of France."]]],
    },
]


@pytest.fixture(scope="session")
def qa_files(tmp_path_factory):
    """``{"squad": path, "hotpotqa": path}`` of the tiny files above."""
    import json

    d = tmp_path_factory.mktemp("qa")
    (d / "squad.json").write_text(json.dumps(SQUAD), encoding="utf-8")
    (d / "hotpotqa.json").write_text(json.dumps(HOTPOTQA), encoding="utf-8")
    return {"squad": d / "squad.json", "hotpotqa": d / "hotpotqa.json"}


@pytest.fixture(scope="session")
def qa_data(qa_files):
    from tokenweight.evaluate.tasks import read_qa

    return {kind: read_qa(path, kind) for kind, path in qa_files.items()}
