"""``prepare`` end to end on tiny corpora, against brute-force references."""

import json
import re
from pathlib import Path

import pytest

from tokenweight.data import load_prepared
from tokenweight.data.corpus import open_corpus
from tokenweight.data.pipeline import prepare, val_mask
from tokenweight.errors import UsageError
from tokenweight.identity import load_tokenizer, tokenizer_digest
from tokenweight.stages.prepare import PrepareConfig


def _run(out, **kw):
    return prepare(out, PrepareConfig(**kw))


def _rows(ds):
    return [(r["doc_id"], r["input_ids"], r["episodes"]) for r in ds]


def _reference(tok, text, n, min_tail=None):
    """Brute force: BOS + n-1 tokens per sequence, EOS closing the document, tails by the rule."""
    doc = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    seqs = [[tok.bos_token_id] + doc[i : i + n - 1] for i in range(0, len(doc), n - 1)]
    return [s for s in seqs if len(s) == n or (min_tail is not None and len(s) >= min_tail)]


@pytest.mark.parametrize("min_tail", [None, 8])
def test_sequences_match_brute_force(tmp_path, text_dir, tiny_tokenizer, min_tail):
    out = tmp_path / "out"
    manifest, wrote = _run(
        out, inputs=[str(text_dir)], tokenizer=str(tiny_tokenizer), n=32, val_fraction=0.25, min_tail=min_tail
    )
    assert wrote and sorted(p.name for p in out.iterdir()) == ["manifest.json", "tokenizer", "train", "validation"]
    dsd, m = load_prepared(out)
    assert m == manifest == json.loads((out / "manifest.json").read_text())
    tok = load_tokenizer(str(out / "tokenizer"))
    corpus = open_corpus([str(text_dir)])
    order = corpus.selection_order()
    val_docs = {int(d) for d, v in zip(order, val_mask(len(order), 0.25)) if v}
    assert len(val_docs) == 3
    for split in ("train", "validation"):
        rows = _rows(dsd[split])
        docs = sorted({d for d, _, _ in rows})
        expect = []
        for d in [int(x) for x in order if (int(x) in val_docs) == (split == "validation")]:
            ref = _reference(tok, corpus.read([d])[0], 32, min_tail)
            expect += [(d, s, []) for s in ref]
        assert rows == expect  # documents in selection order, never mixed, BOS first, exact tokens
        c = m["counts"][split]
        assert c["sequences"] == len(rows) and c["tokens"] == sum(len(s) for _, s, _ in rows)
        assert c["documents"] == len(docs)
        assert c["padding_share"] == round(1 - c["tokens"] / (len(rows) * 32), 6) and "pieces" not in c
    assert set(m["counts"]["train"]) >= {"documents", "sequences", "tokens", "dropped_tail_tokens"}
    assert {d for d, _, _ in _rows(dsd["train"])}.isdisjoint(val_docs)
    assert m["counts"]["skipped_files"] == 2 and m["n"] == 32 and m["tokenizer"] == "tokenizer"
    assert m["episodes"]["enabled"] is False  # off by default for user corpora
    lengths = {len(s) for _, s, _ in _rows(dsd["train"])}
    if min_tail is None:
        assert lengths == {32} and m["counts"]["train"]["dropped_tail_tokens"] > 0
    else:
        assert min(lengths) >= 8 and max(lengths) == 32 and len(lengths) > 1


def test_episodes_exact_in_the_prepared_data(tmp_path, text_dir, tiny_tokenizer):
    out = tmp_path / "out"
    m, _ = _run(
        out,
        inputs=[str(text_dir)],
        tokenizer=str(tiny_tokenizer),
        n=128,
        val_fraction=0.2,
        episodes_per_1k=6,
        episode_distance="20:90",
        episode_digits=5,
    )
    dsd, _ = load_prepared(out)
    tok = load_tokenizer(str(out / "tokenizer"))
    found = {}
    for split in ("train", "validation"):
        eps = 0
        for r in dsd[split]:
            ids = r["input_ids"]
            for d0, d1, u0, u1 in r["episodes"]:
                assert ids[d0:d1] == ids[u0:u1]
                value = tok.decode(ids[d0:d1])
                assert value.isdigit() and len(value) == 5 and d1 - d0 == 5
                assert 20 <= u0 - d0 <= 90 and 0 < d0 and u1 <= len(ids)
                before_use = tok.decode(ids[:u0])
                # the use line ends in "NAME =" (restate), "assert NAME ==" or "print(NAME,"
                name = re.search(r"([A-Z]{3,5}_[A-Z]{3,5})\s*(?:==|=|,)$", before_use.rstrip()).group(1)
                assert tok.decode(ids[:d1]).endswith(f"{name} = {value}")  # the cue is in the sequence
                eps += 1
        found[split] = eps
    assert found == m["episodes"]["recorded"] and found["train"] >= 10
    assert m["episodes"]["distance"]["min"] >= 20 and m["episodes"]["distance"]["max"] <= 90
    assert m["episodes"]["injected"] <= m["episodes"]["planned"]


def test_deterministic_and_seeded(tmp_path, text_dir, tiny_tokenizer):
    kw = dict(inputs=[str(text_dir)], tokenizer=str(tiny_tokenizer), n=64, episodes_per_1k=5)
    a, _ = _run(tmp_path / "a", **kw)
    b, _ = _run(tmp_path / "b", **kw)
    c, _ = _run(tmp_path / "c", **kw, seed=1)
    assert a == b and a["fingerprint"] != c["fingerprint"]
    for split in ("train", "validation"):
        fa = (tmp_path / "a" / split / "data-00000-of-00001.arrow").read_bytes()
        assert fa == (tmp_path / "b" / split / "data-00000-of-00001.arrow").read_bytes()
    assert _rows(load_prepared(tmp_path / "a")[0]["train"]) != _rows(load_prepared(tmp_path / "c")[0]["train"])


def test_rerun_is_a_no_op_and_force_redoes(tmp_path, text_dir):
    out = tmp_path / "out"
    kw = dict(inputs=[str(text_dir)], n=32, vocab_size=300)  # the default: a trained tokenizer
    m1, wrote = _run(out, **kw)
    assert wrote and m1["tokenizer_info"]["vocab_size"] <= 300
    stamp = (out / "train").stat().st_mtime_ns, (out / "manifest.json").stat().st_mtime_ns
    m2, wrote = _run(out, **kw)
    assert not wrote and m2 == m1
    assert ((out / "train").stat().st_mtime_ns, (out / "manifest.json").stat().st_mtime_ns) == stamp
    m3, wrote = prepare(out, PrepareConfig(**kw), force=True)
    assert wrote and m3 == m1
    with pytest.raises(UsageError, match=r"was prepared with val_fraction = 0.05, this command has val_fraction = 0.5"):
        _run(out, **kw, val_fraction=0.5)  # another option: refused, the folder untouched
    assert ((out / "train").stat().st_mtime_ns, (out / "manifest.json").stat().st_mtime_ns) != stamp  # (m3)
    assert load_prepared(out)[1] == m1
    m4, wrote = prepare(out, PrepareConfig(**kw, val_fraction=0.5), force=True)  # forced: recomputed
    assert wrote and m4["fingerprint"] != m1["fingerprint"]
    (text_dir / "a" / "doc00.txt").write_text("changed " * 50 + "\n")  # another input: refused, then forced
    with pytest.raises(UsageError, match=r"was prepared with inputs = '.*', this command has inputs = "):
        _run(out, **kw, val_fraction=0.5)
    m5, wrote = prepare(out, PrepareConfig(**kw, val_fraction=0.5), force=True)
    assert wrote and m5["fingerprint"] != m4["fingerprint"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries left


def test_record_inputs(tmp_path, docs_factory, tiny_tokenizer):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = docs_factory(6, seed=21)
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"content": t}) + "\n" for t in texts))
    pq.write_table(pa.table({"content": texts}), tmp_path / "d.parquet")
    datasets.Dataset.from_dict({"content": texts}).save_to_disk(str(tmp_path / "saved"))
    results = []
    for name in ("d.jsonl", "d.parquet", "saved"):
        _run(
            tmp_path / f"out-{name}",
            inputs=[str(tmp_path / name)],
            text_field="content",
            tokenizer=str(tiny_tokenizer),
            n=64,
            val_fraction=0.2,
        )
        dsd, m = load_prepared(tmp_path / f"out-{name}")
        results.append((_rows(dsd["train"]), _rows(dsd["validation"])))
        assert m["inputs"]["documents"] == 6
    assert results[0] == results[1] == results[2]  # same records, same sequences


def test_slices_are_disjoint_and_capped(tmp_path, text_dir, tiny_tokenizer):
    kw = dict(inputs=[str(text_dir)], tokenizer=str(tiny_tokenizer), n=32, val_fraction=0.2)
    first, _ = _run(tmp_path / "first", **kw, max_tokens=400)
    assert 400 - 32 < first["counts"]["train"]["tokens"] <= 400
    second, _ = _run(tmp_path / "second", **kw, after=str(tmp_path / "first"), max_documents=4)
    third, _ = _run(tmp_path / "third", **kw, skip_documents=first["selection"]["end"], max_documents=4)
    assert second["selection"]["skip"] == first["selection"]["end"] == third["selection"]["skip"]
    assert second["counts"]["selected_documents"] == 4

    def docs(name):
        dsd, _ = load_prepared(tmp_path / name)
        return {r["doc_id"] for s in ("train", "validation") for r in dsd[s]}

    assert docs("first").isdisjoint(docs("second")) and docs("second") == docs("third")
    order = open_corpus([str(text_dir)]).selection_order().tolist()
    assert docs("second") <= set(order[first["selection"]["end"] : first["selection"]["end"] + 4])


def test_given_tokenizer_is_copied(tmp_path, text_dir, tiny_tokenizer):
    m, _ = _run(tmp_path / "out", inputs=[str(text_dir)], tokenizer=str(tiny_tokenizer), n=32)
    a, b = load_tokenizer(str(tiny_tokenizer)), load_tokenizer(str(tmp_path / "out" / "tokenizer"))
    assert tokenizer_digest(a) == tokenizer_digest(b) == m["tokenizer_info"]["fingerprint"]
    # the same tokenizer from another path (the copy in the output) leaves the output up to date
    again, wrote = _run(tmp_path / "out", inputs=[str(text_dir)], tokenizer=str(tmp_path / "out" / "tokenizer"), n=32)
    assert not wrote and again["fingerprint"] == m["fingerprint"]


def test_stdlib_corpus_with_default_episodes(tmp_path):
    m, _ = _run(tmp_path / "out", max_documents=12, n=128, vocab_size=400, val_fraction=0.2)
    assert m["inputs"]["description"] == "stdlib" and m["counts"]["selected_documents"] == 12
    assert m["episodes"]["enabled"] and m["episodes"]["per_1k"] == 2.0
    assert m["episodes"]["recorded"]["train"] > 0


def _no_leftovers(parent: Path, name: str):
    return not (parent / name).exists() and not [p for p in parent.iterdir() if p.name.startswith(f".{name}.")]


@pytest.mark.parametrize(
    "case,match",
    [
        ("empty", "no training sequences"),
        ("short", "no training sequences"),
        ("nothing", "no usable documents"),
        ("n", "n must be an integer in [2, 1048576], got 1"),
        ("distance", "episode_distance '500:': with n=64 an episode fits only up to"),
        ("spec", "episode options: "),
    ],
)
def test_bad_input_raises_usage_error_and_leaves_nothing(tmp_path, tiny_tokenizer, case, match):
    src = tmp_path / "src"
    src.mkdir()
    kw = dict(inputs=[str(src)], tokenizer=str(tiny_tokenizer), n=64)
    if case == "empty":
        (src / "a.txt").write_text("")
        (src / "b.txt").write_bytes(b"\xff\xfe not utf-8")
    elif case == "short":
        (src / "a.txt").write_text("just a few words\n")
        kw["val_fraction"] = 0.0
    elif case == "nothing":
        (src / "only.bin").write_bytes(b"\x00\x00")
    elif case == "n":
        kw["n"] = 1
    elif case == "distance":
        kw.update(episodes_per_1k=1, episode_distance="500:")
    elif case == "spec":
        kw.update(episodes_per_1k=1, episode_distance="far")
    # bad data is a UsageError, a bad option value a ValueError (the CLI turns both into one line)
    with pytest.raises(ValueError if case in ("n", "distance", "spec") else UsageError, match=re.escape(match)):
        _run(tmp_path / "out", **kw)
    assert _no_leftovers(tmp_path, "out")


def test_refuses_to_overwrite_a_foreign_folder(tmp_path, text_dir):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match="is not a prepared folder"):
        _run(out, inputs=[str(text_dir)], n=32)
    assert (out / "notes.txt").read_text() == "keep me"


def test_empty_validation_split_loads(tmp_path, text_dir, tiny_tokenizer):
    m, _ = _run(tmp_path / "out", inputs=[str(text_dir)], tokenizer=str(tiny_tokenizer), n=32, val_fraction=0.0)
    dsd, _ = load_prepared(tmp_path / "out")
    assert len(dsd["validation"]) == 0 == m["counts"]["validation"]["sequences"]
    assert m["counts"]["validation"]["padding_share"] == 0.0 == m["counts"]["train"]["padding_share"]  # all n long
    assert dsd["validation"].column_names == ["input_ids", "doc_id", "episodes"]
    assert len(dsd["train"]) == m["counts"]["train"]["sequences"] > 0


def test_load_prepared_errors(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_prepared(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "manifest.json").write_text("{}")
    with pytest.raises(UsageError, match="not a complete prepared folder"):
        load_prepared(tmp_path / "half")


def test_workers_give_identical_output(tmp_path, text_dir, tiny_tokenizer):
    kw = dict(inputs=[str(text_dir)], tokenizer=str(tiny_tokenizer), n=64, episodes_per_1k=5)
    a, _ = _run(tmp_path / "a", **kw, workers=1)
    b, _ = _run(tmp_path / "b", **kw, workers=2)
    assert a["fingerprint"] == b["fingerprint"]
    for s in ("train", "validation"):
        assert _rows(load_prepared(tmp_path / "a")[0][s]) == _rows(load_prepared(tmp_path / "b")[0][s])
