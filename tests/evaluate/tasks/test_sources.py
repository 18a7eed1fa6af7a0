"""The shipped essay (prose of pydoc_data.topics) and ``--haystack`` by name. Module cost: < 1 s."""

from __future__ import annotations

import json

import pytest

from tokenweight.errors import UsageError
from tokenweight.evaluate.tasks.essay import essay_source, essay_text, prose, read_essay_json
from tokenweight.evaluate.tasks.haystack import default_essay
from tokenweight.evaluate.tasks.sources import load_haystack

TOPIC = """The "demo" statement
********************

A demo statement shows things.  It is shown
over two lines.

   demo_stmt ::= "demo" expression

The simple form is equivalent to:

   if x:
       show(x)

* A bullet item that runs
  on to a second line.

* A bullet that introduces a block:

>>> demo(1)
| a | table |

-[ Footnotes ]-

[1] A footnote sentence.
Changed in version 3.9: Demos may nest.
"""


def test_prose_keeps_whole_sentences_only():
    assert prose(TOPIC) == [
        "A demo statement shows things.  It is shown over two lines.",
        "A bullet item that runs on to a second line.",
        "[1] A footnote sentence. Changed in version 3.9: Demos may nest.",
    ]


def test_the_default_essay_is_this_pythons_reference_prose():
    from pydoc_data.topics import topics

    text = essay_text()
    assert text == "\n\n".join(p for t in topics.values() for p in prose(t))
    assert len(text) > 100_000 and "    " not in text and ">>>" not in text
    info = essay_source()
    assert info["source"].startswith("pydoc_data.topics") and len(info["sha256"]) == 64
    h = default_essay()
    assert h.kind == "essay" and h is default_essay() and "  " not in h.texts[0]  # whitespace collapsed


def test_load_haystack_by_name(tmp_path):
    assert load_haystack("essay") is default_essay()
    assert load_haystack("noise").kind == "noise"
    held = load_haystack("data", held_out=lambda: ["def f():\n    return 1\n"])
    assert held.kind == "corpus" and held.texts == ("def f():\n    return 1",)
    with pytest.raises(UsageError, match="--haystack data needs --data"):
        load_haystack("data")
    (tmp_path / "e.json").write_text(json.dumps({"text": "Some  words.\nMore words."}), encoding="utf-8")
    e = load_haystack(str(tmp_path / "e.json"))
    assert e.kind == "essay" and e.texts == ("Some words. More words.",) and e.source.startswith("essay: ")
    (tmp_path / "doc.txt").write_text("one\n  two\n", encoding="utf-8")
    assert load_haystack(str(tmp_path / "doc.txt")).texts == ("one\n  two",)  # a corpus keeps whitespace
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.py").write_text("x = 1\n", encoding="utf-8")
    (tmp_path / "d" / "b.bin").write_text("skipped", encoding="utf-8")
    assert load_haystack(str(tmp_path / "d")).texts == ("x = 1",)
    with pytest.raises(UsageError, match="neither essay, noise, data"):
        load_haystack(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no text"):
        load_haystack(str(tmp_path / "empty"))
    (tmp_path / "bad.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(UsageError, match='expected a JSON object {"text"'):
        read_essay_json(tmp_path / "bad.json")
