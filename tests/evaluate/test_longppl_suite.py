"""LongPPL in `tokenweight eval` is compute_longppl's, pooled as PKU-ML/LongPPL's perplexity.py
pools it: the runner's entries equal the drop-in called text by text, with the evaluator sharing the
models' tokenizer and with an evaluator of another tokenizer. About 8 s."""

import json
import math

import datasets
import numpy as np
import pytest

from tests.evaluate.longppl_helpers import bpe_tokenizer, corpus, tiny_llama
from tokenweight.evaluate import compute_longppl
from tokenweight.evaluate.runner import evaluate_models
from tokenweight.stages.evaluate import EvalConfig

SETTINGS = dict(longppl_trunc_len=16, longppl_sliding_window=8, longppl_alpha=2.0, longppl_beta=-8.0)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("longppl_suite")
    tok, ev_tok = bpe_tokenizer(600), bpe_tokenizer(300)
    rows = [tok(corpus(w, seed=100 + i))["input_ids"] for i, w in enumerate((70, 55, 80, 10))]  # one too short
    ds = datasets.Dataset.from_dict({"input_ids": rows, "doc_id": list(range(len(rows))), "episodes": [[]] * 4})
    ds.save_to_disk(str(tmp / "data" / "validation"))
    ds.save_to_disk(str(tmp / "data" / "train"))
    tok.save_pretrained(tmp / "data" / "tokenizer")
    (tmp / "data" / "manifest.json").write_text(json.dumps({"n": max(map(len, rows)), "fingerprint": "x"}))
    models = {}
    for name, t, seed in (("a", tok, 1), ("b", tok, 2), ("ev", ev_tok, 0)):
        models[name] = tiny_llama(len(t), seed=seed)
        models[name].save_pretrained(tmp / name)
    ev_tok.save_pretrained(tmp / "ev")  # the evaluator's folder holds its own tokenizer
    return tmp, tok, ev_tok, rows, models


def pooled(model, evaluator, tok, ev_tok, rows):
    """perplexity.py's aggregation of compute_longppl over the texts (n_key- and n_token-weighted)."""
    outs = [
        compute_longppl(
            tok.decode(r, skip_special_tokens=True),
            model,
            evaluator,
            tok,
            ev_tok,
            trunc_len=16,
            sliding_window=8,
            alpha=2.0,
            beta=-8.0,
        )
        for r in rows
    ]
    keyed = [o for o in outs if o["longppl"] is not None]
    nk = np.array([o["n_key_token"] for o in keyed], dtype=np.float64)
    nt = np.array([o["n_token"] for o in outs], dtype=np.float64)
    longppl = math.exp((np.log([float(o["longppl"]) for o in keyed]) * nk).sum() / nk.sum())
    ppl = math.exp((np.log([float(o["ppl"]) for o in outs]) * nt).sum() / nt.sum())
    return longppl, int(nk.sum()), ppl, int(nt.sum())


@pytest.mark.parametrize("evaluator", ["a", "ev"])
def test_eval_longppl_is_compute_longppl_pooled(tree, evaluator):
    tmp, tok, ev_tok, rows, models = tree
    sources = {"a": str(tmp / "a"), "b": str(tmp / "b")}
    ev_source = "a" if evaluator == "a" else str(tmp / "ev")
    cfg = EvalConfig(tasks=[], window=16, batch_size=3, evaluator=ev_source, **SETTINGS)
    res = evaluate_models(sources, data_dir=tmp / "data", config=cfg)
    info = res["evaluator"]
    judge_tok = tok if evaluator == "a" else ev_tok
    assert info["tokenizer"] == ("<the data's tokenizer>" if evaluator == "a" else str(tmp / "ev"))
    assert (info["trunc_len"], info["sliding_window"], info["alpha"], info["beta"]) == (16, 8, 2.0, -8.0)
    assert 0 < info["key_tokens"] < info["eligible_tokens"]
    for m in res["models"]:
        want, keys, ppl, tokens = pooled(models[m["name"]], models[evaluator], tok, judge_tok, rows)
        lp = m["longppl"]
        assert lp["key_tokens"] == keys > 0
        assert lp["longppl"] == pytest.approx(want, rel=1e-5)
        assert lp["nll"] == pytest.approx(math.log(want), rel=1e-5)
        assert lp["ppl"] == pytest.approx(ppl, rel=1e-5) and lp["tokens"] == tokens
        assert 0 < lp["key_share"] < 1


def test_evaluator_tokenizer_option_and_skip(tree):
    tmp, tok, ev_tok, rows, models = tree
    sources = {"a": str(tmp / "a")}
    ev_tok.save_pretrained(tmp / "ev_tok")
    cfg = EvalConfig(tasks=[], window=16, evaluator=models["ev"], evaluator_tokenizer=str(tmp / "ev_tok"), **SETTINGS)
    res = evaluate_models(sources, data_dir=tmp / "data", config=cfg)
    want, keys, _, _ = pooled(models["a"], models["ev"], tok, ev_tok, rows)
    assert res["evaluator"]["tokenizer"] == str(tmp / "ev_tok") and res["evaluator"]["name"] == "<in-memory>"
    assert res["models"][0]["longppl"]["longppl"] == pytest.approx(want, rel=1e-5)
    with pytest.warns(UserWarning, match="LongPPL skipped"):  # Fang's 4096 on 80-token texts
        res = evaluate_models(sources, data_dir=tmp / "data", config=EvalConfig(tasks=[], window=16))
    assert res["evaluator"] is None and res["models"][0]["longppl"] is None
