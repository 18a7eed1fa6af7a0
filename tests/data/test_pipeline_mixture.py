"""``prepare --mix``: several inputs mixed by their share of the train tokens, each keeping its own
documents, against a brute-force reference; the mixture is part of the folder's identity."""

from __future__ import annotations

import pytest

from tests.data.conftest import make_docs
from tokenweight.data import load_prepared
from tokenweight.data.corpus import open_corpus
from tokenweight.data.pipeline import prepare
from tokenweight.errors import ConfigError
from tokenweight.identity import load_tokenizer
from tokenweight.stages.prepare import PrepareConfig


@pytest.fixture
def two_inputs(tmp_path):
    roots = []
    for k, (count, lines) in enumerate([(30, (60, 140)), (40, (5, 30))]):  # long files, short files
        root = tmp_path / f"in{k}"
        root.mkdir()
        for i, text in enumerate(make_docs(count, seed=10 + k, lines=lines)):
            (root / f"d{i:02d}.txt").write_text(text, encoding="utf-8")
        roots.append(root)
    return roots


def reference(roots, tokenizer, n, budgets, val_fraction):
    """Brute force: documents in the corpus' fixed order; a train document of input i adds its n-token
    sequences while input i stays within its budget (its first sequence past it closes input i)."""
    from tokenweight.data.pipeline import val_mask

    tok = load_tokenizer(tokenizer)
    corpus = open_corpus([str(r) for r in roots])
    order, source = corpus.selection_order(), corpus.input_of()
    is_val = val_mask(len(order), val_fraction)
    used, closed, rows = [0] * len(roots), [False] * len(roots), []
    for pos, doc in enumerate(order):
        if is_val[pos] or closed[source[doc]]:
            continue
        i = source[doc]
        ids = tok(corpus.read([doc])[0], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        for a in range(0, len(ids), n - 1):
            seq = [tok.bos_token_id] + ids[a : a + n - 1]
            if len(seq) < n:
                break
            if used[i] + n > budgets[i]:
                closed[i] = True
                break
            used[i] += n
            rows.append((int(doc), seq))
        if all(closed):
            break
    return rows, used


def test_mixture_gives_each_input_its_share(tmp_path, two_inputs, tiny_tokenizer):
    cfg = PrepareConfig(
        inputs=[str(r) for r in two_inputs],
        tokenizer=str(tiny_tokenizer),
        n=32,
        val_fraction=0.1,
        max_tokens=1600,
        mix=[3, 1],
    )
    manifest, wrote = prepare(tmp_path / "mixed", cfg)
    budgets = [1200, 400]
    want, used = reference(two_inputs, tiny_tokenizer, 32, budgets, 0.1)
    dsd, _ = load_prepared(tmp_path / "mixed")
    assert [(r["doc_id"], r["input_ids"]) for r in dsd["train"]] == want
    mixture = manifest["mixture"]
    assert [m["ratio"] for m in mixture] == [0.75, 0.25] and [m["budget"] for m in mixture] == budgets
    assert [m["tokens"] for m in mixture] == used
    assert all(budgets[i] - 32 < used[i] <= budgets[i] for i in range(2))  # both inputs reached their share
    source = open_corpus([str(r) for r in two_inputs]).input_of()
    assert {int(source[d]) for d, _ in want} == {0, 1}


def test_the_mixture_is_part_of_the_identity(tmp_path, two_inputs, tiny_tokenizer):
    kw = dict(inputs=[str(r) for r in two_inputs], tokenizer=str(tiny_tokenizer), n=32, max_tokens=800)
    a, _ = prepare(tmp_path / "a", PrepareConfig(**kw, mix=[1, 1]))
    b, wrote = prepare(tmp_path / "a", PrepareConfig(**kw, mix=[0.5, 0.5]))  # the same ratios, normalised
    assert not wrote and b["fingerprint"] == a["fingerprint"]
    c, _ = prepare(tmp_path / "c", PrepareConfig(**kw, mix=[1, 3]))
    plain, _ = prepare(tmp_path / "plain", PrepareConfig(**kw))
    assert len({a["fingerprint"], c["fingerprint"], plain["fingerprint"]}) == 3
    assert "mix" not in plain["settings"] and "mixture" not in plain  # unmixed folders keep their identity


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(mix=[1.0]), "one ratio per INPUT and at least two inputs"),
        (dict(mix=[1.0, 0.0]), "mix ratios must be positive"),
        (dict(mix=[1.0, 1.0], max_tokens=None), "pass --max-tokens T as well"),
        (dict(mix=[1.0, 1.0], pack=True), "mixtures of packed rows are not supported"),
    ],
)
def test_bad_mixtures_are_refused(tmp_path, two_inputs, kw, needle):
    base = dict(inputs=[str(r) for r in two_inputs], n=32, max_tokens=800, out=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match=needle):
        PrepareConfig(**{**base, **kw}).check()
