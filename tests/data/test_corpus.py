"""Corpus listing: every input kind, skipped files, fingerprints, the fixed selection order."""

import json
from fractions import Fraction
from math import ceil

import numpy as np
import pytest

from tokenweight.data.corpus import open_corpus, stdlib_root
from tokenweight.data.pipeline import val_mask
from tokenweight.errors import UsageError


def test_text_folder_sorted_with_skips(text_dir):
    c = open_corpus([str(text_dir)])
    rels = sorted(p.relative_to(text_dir).as_posix() for p in text_dir.rglob("doc*"))
    assert c.keys == rels and len(c) == 12
    assert sorted(c.skipped) == [("blob.bin", "binary"), ("latin1.txt", "not UTF-8")]
    assert c.summary()["skipped_reasons"] == {"binary": 1, "not UTF-8": 1}
    assert c.files == 14  # hidden files and __pycache__ are not even listed
    texts = c.read([3, 0, 3])
    assert texts[0] == texts[2] == (text_dir / rels[3]).read_text(encoding="utf-8")
    assert texts[1] == (text_dir / rels[0]).read_text(encoding="utf-8")


def test_bom_is_stripped(tmp_path):
    (tmp_path / "a.txt").write_bytes("\ufeffhello\n".encode("utf-8"))
    assert open_corpus([str(tmp_path)]).read([0]) == ["hello\n"]


def test_fingerprint_follows_contents_and_names(text_dir):
    fp = open_corpus([str(text_dir)]).fingerprint
    assert open_corpus([str(text_dir)]).fingerprint == fp
    f = text_dir / "a" / "doc00.txt"
    original = f.read_text()
    f.write_text(original[:-2] + ("x" if original[-2] != "x" else "y") + "\n")  # same size, new bytes
    assert open_corpus([str(text_dir)]).fingerprint != fp
    f.write_text(original)
    assert open_corpus([str(text_dir)]).fingerprint == fp
    f.rename(text_dir / "a" / "doc00b.txt")
    assert open_corpus([str(text_dir)]).fingerprint != fp


def test_jsonl_records(tmp_path):
    p = tmp_path / "d.jsonl"
    rows = [{"body": "first\n"}, {"body": None}, {"other": 1}, {"body": "last"}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    c = open_corpus([str(p)], text_field="body")
    assert len(c) == 4 and c.keys == ["0", "1", "2", "3"]
    assert c.read([0, 1, 2, 3]) == ["first\n", "", "", "last"]
    with pytest.raises(UsageError, match="no record has a field 'text'"):
        open_corpus([str(p)])
    p.write_text('{"text": "ok"}\n{"text": broken\n')
    with pytest.raises(UsageError, match=r"d.jsonl:2: not valid JSON"):
        open_corpus([str(p)])
    p.write_text('{"text": ["a", "list"]}\n')
    with pytest.raises(UsageError, match="is a list, not a string"):
        open_corpus([str(p)])


def test_parquet_records(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["a\n", "b\n", None], "n": [1, 2, 3]}), p)
    c = open_corpus([str(p)])
    assert c.read([2, 0, 1]) == ["", "a\n", "b\n"]
    with pytest.raises(UsageError, match=r"no column 'body' \(columns: text, n\)"):
        open_corpus([str(p)], text_field="body")
    with pytest.raises(UsageError, match="not text"):
        open_corpus([str(p)], text_field="n")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    assert open_corpus([str(tmp_path / "bad.parquet"), str(p)]).skipped == [
        (str(tmp_path / "bad.parquet"), "unreadable")
    ]


def test_saved_datasets(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"text": ["x\n", "y\n", "z\n"], "id": [1, 2, 3]})
    ds.save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"train": ds, "test": ds.select([2])}).save_to_disk(str(tmp_path / "dict"))
    assert open_corpus([str(tmp_path / "one")]).read([1, 2]) == ["y\n", "z\n"]
    c = open_corpus([str(tmp_path / "dict")], split="test")
    assert len(c) == 1 and c.read([0]) == ["z\n"]
    with pytest.raises(UsageError, match="no split 'validation'"):
        open_corpus([str(tmp_path / "dict")], split="validation")
    with pytest.raises(UsageError, match="no column 'body'"):
        open_corpus([str(tmp_path / "one")], text_field="body")


def test_several_inputs_are_concatenated(text_dir, tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a"}\n{"text": "b"}\n')
    c = open_corpus([str(p), str(text_dir)])
    assert len(c) == 14 and c.keys[:2] == ["0:0", "0:1"] and c.keys[2].startswith("1:")
    assert c.read([1, 2]) == ["b", open_corpus([str(text_dir)]).read([0])[0]]


def test_bad_inputs(tmp_path, text_dir):
    with pytest.raises(UsageError, match="does not exist"):
        open_corpus([str(tmp_path / "missing")])
    with pytest.raises(UsageError, match="both input paths and --corpus"):
        open_corpus([str(text_dir)], "stdlib")
    with pytest.raises(UsageError, match="unknown corpus"):
        open_corpus([], "books")


def test_selection_order_is_a_stable_permutation(text_dir):
    c = open_corpus([str(text_dir)])
    order = c.selection_order()
    assert sorted(order.tolist()) == list(range(len(c)))
    assert order.tolist() != list(range(len(c)))  # hashed, not alphabetical
    assert np.array_equal(order, open_corpus([str(text_dir)]).selection_order())
    before = [c.keys[i] for i in order]
    (text_dir / "new.txt").write_text("one more document\n")
    c2 = open_corpus([str(text_dir)])
    after = [c2.keys[i] for i in c2.selection_order() if c2.keys[i] != "new.txt"]
    assert after == before  # adding a file does not reshuffle the others


def test_stdlib_listing_is_deterministic():
    a, b = open_corpus([], None), open_corpus([], "stdlib")
    assert a.keys == b.keys and a.fingerprint == b.fingerprint
    assert a.keys == sorted(a.keys) and all(k.endswith(".py") for k in a.keys)
    assert not any("site-packages" in k or "__pycache__" in k for k in a.keys)
    has_tests = (stdlib_root() / "test").is_dir()  # some distributions ship the stdlib without its tests
    assert any(k.startswith("test/") for k in a.keys) == has_tests
    no_tests = open_corpus([], "stdlib-no-tests")
    assert not any(set(k.split("/")) & {"test", "tests", "idle_test"} for k in no_tests.keys)
    assert 0 < len(no_tests) <= len(a) and (len(no_tests) < len(a)) == has_tests
    assert a.read([a.keys.index("os.py")])[0] == (stdlib_root() / "os.py").read_text(encoding="utf-8")


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.1, 0.3, 1 / 3, 0.5, 0.99])
def test_val_mask_exact_on_every_prefix(fraction):
    mask = val_mask(200, fraction)
    f = Fraction(str(fraction))
    for k in range(201):
        assert int(mask[:k].sum()) == ceil(k * f)
