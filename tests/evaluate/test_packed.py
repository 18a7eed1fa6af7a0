"""Packed held-out data (a ``doc_lengths`` column) in ``tokenweight eval``: every metric equals the
one of its documents run one by one (brute force: each document alone through ``token_nll`` and
full logits); the cache tells packed from unpacked data."""

import pytest
import torch

from tests.evaluate.packed_helpers import documents, pack, save_prepared
from tests.evaluate.test_episodes import brute_force, tiny_model
from tests.evaluate.test_runner import make_model, make_tokenizer
from tokenweight.evaluate.episodes import score_episodes
from tokenweight.evaluate.lm_metrics import PositionPerplexity
from tokenweight.evaluate.packed import document_nll, split_documents
from tokenweight.evaluate.runner import evaluate_models
from tokenweight.scoring import token_nll
from tokenweight.stages.evaluate import EvalConfig

N, W = 48, 16
EDGES = [0, 8, 16, 32, 48]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("packed")
    tok = make_tokenizer(tmp / "tok")
    model = make_model(tmp / "a", len(tok), 0)
    docs = documents(tok)
    rows = pack(docs, N)
    assert [r["doc_lengths"] for r in rows] == [[20, 9], [30, 5], [17], [40], [12, 33, 2], [26]]
    (tmp / "packed").mkdir()
    save_prepared(tmp / "packed", tok, rows, N)
    (tmp / "docs").mkdir()
    save_prepared(tmp / "docs", tok, docs, N, fingerprint="other")
    return tmp, tok, model, docs, rows


def _config(**kw):
    base = dict(tasks=[], window=W, batch_size=3, max_sequences=None, longppl_trunc_len=6, longppl_sliding_window=4)
    return EvalConfig(**{**base, "position_edges": EDGES, "distance_edges": [0, 10, 48], **kw})


def test_document_nll_layout():
    nll = torch.arange(1.0, 12.0).reshape(1, 11)  # a row of 12 tokens: documents of 5, 4 and 3
    got, mask = document_nll(nll, [[5, 4, 3]])
    assert got.tolist() == [[1, 2, 3, 4], [6, 7, 8, 0], [10, 11, 0, 0]]
    assert mask.tolist() == [[True] * 4, [True] * 3 + [False], [True] * 2 + [False] * 2]


def test_split_documents_shifts_episodes_and_keeps_unpacked_rows():
    row = {"input_ids": list(range(12)), "episodes": [[6, 7, 8, 9], [0, 1, 2, 3]], "doc_lengths": [5, 7]}
    plain = {"input_ids": [1, 2], "episodes": []}
    got = split_documents([row, plain])
    assert [d["input_ids"] for d in got[:2]] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10, 11]]
    assert [d["episodes"] for d in got[:2]] == [[[0, 1, 2, 3]], [[1, 2, 3, 4]]]
    assert got[2] is plain
    from tokenweight.errors import UsageError

    with pytest.raises(UsageError, match="crosses the document boundary at 5"):
        split_documents([{**row, "episodes": [[1, 2, 5, 6]]}])


def test_packed_metrics_equal_documents_one_by_one(setup):
    tmp, tok, model, docs, rows = setup
    res = evaluate_models({"A": model}, data_dir=tmp / "packed", config=_config())
    m = res["models"][0]
    # brute force: every document alone, positions within it
    acc = PositionPerplexity(EDGES, W)
    for d in docs:
        acc.update(token_nll(model, torch.tensor([d["input_ids"]])))
    want = acc.result()
    got = m["perplexity"]
    assert got["overall"]["tokens"] == want["overall"]["tokens"] == sum(len(d["input_ids"]) - 1 for d in docs)
    assert got["short"]["tokens"] == want["short"]["tokens"]
    assert got["overall"]["nll"] == pytest.approx(want["overall"]["nll"], abs=2e-6)
    assert got["short"]["nll"] == pytest.approx(want["short"]["nll"], abs=2e-6)
    for g, w in zip(got["by_position"], want["by_position"]):
        assert (g["start"], g["end"], g["tokens"]) == (w["start"], w["end"], w["tokens"])
        assert g["nll"] == pytest.approx(w["nll"], abs=2e-6)
    assert [b["tokens"] for b in got["by_position"]][-1] == 8 + 1  # positions 32..47: 40-token doc, 33-token doc
    # episodes: full logits of each document alone
    ids = [torch.tensor([d["input_ids"]]) for d in docs]
    flat = [e for d, x in zip(docs, ids) for e in brute_force(model, x, [d["episodes"]], [x.shape[1]])]
    ep = m["episodes"]["overall"]
    assert ep["episodes"] == len(flat) == 9
    assert ep["tokens"] == sum(e["tokens"] for e in flat)
    assert ep["token_accuracy"] == sum(e["correct"] for e in flat) / ep["tokens"]
    assert ep["exact_match"] == sum(e["exact"] for e in flat) / len(flat)
    assert ep["mean_logprob"] == pytest.approx(sum(e["logprob"] for e in flat) / ep["tokens"], abs=1e-5)
    # the data record says it is packed
    assert res["data"]["packed"] is True and res["data"]["documents"] == len(docs)
    assert res["data"]["sequences"] == len(rows) and res["data"]["tokens"] == sum(len(d["input_ids"]) for d in docs)


def test_packed_equals_the_same_documents_unpacked(setup):
    """The documents one per row (an unpacked folder) give the same numbers; LongPPL, which runs
    each document as its own text, exactly the same."""
    tmp, tok, model, docs, rows = setup
    cfg = _config(longppl_alpha=-100.0, longppl_beta=-100.0)  # every candidate a key token (a random model)
    packed = evaluate_models({"A": model}, data_dir=tmp / "packed", config=cfg)
    alone = evaluate_models({"A": model}, data_dir=tmp / "docs", config=cfg)
    p, a = packed["models"][0], alone["models"][0]
    assert "packed" not in alone["data"] and alone["data"]["sequences"] == len(docs)
    assert p["longppl"] == a["longppl"] and p["longppl"]["key_tokens"] > 0
    assert packed["evaluator"] == alone["evaluator"]
    for key in ("overall", "short"):
        assert p["perplexity"][key]["tokens"] == a["perplexity"][key]["tokens"]
        assert p["perplexity"][key]["ppl"] == pytest.approx(a["perplexity"][key]["ppl"], rel=2e-6)
    for g, w in zip(p["perplexity"]["by_position"], a["perplexity"]["by_position"]):
        assert g["tokens"] == w["tokens"] and g["ppl"] == pytest.approx(w["ppl"], rel=2e-6)
    for g, w in zip(p["episodes"]["by_distance"], a["episodes"]["by_distance"]):
        assert {k: g[k] for k in ("episodes", "tokens", "token_accuracy", "exact_match")} == {
            k: w[k] for k in ("episodes", "tokens", "token_accuracy", "exact_match")
        }


def test_score_episodes_document_masked_equals_documents_alone():
    model = tiny_model(0)
    g = torch.Generator().manual_seed(5)
    docs = [torch.randint(4, 40, (length,), generator=g) for length in (11, 13, 20)]
    eps = [[[1, 3, 6, 8]], [[2, 5, 8, 11]], [[0, 2, 15, 17]]]
    for d, e in zip(docs, eps):
        for ds, de, us, ue in e:
            d[us:ue] = d[ds:de]
    ids = torch.zeros(2, 24, dtype=torch.long)
    ids[0, :24] = torch.cat(docs[:2])
    ids[1, :20] = docs[2]
    mask = (torch.arange(24)[None] < torch.tensor([[24], [20]])).long()
    packed_eps = [[[1, 3, 6, 8], [13, 16, 19, 22]], [[0, 2, 15, 17]]]
    got = score_episodes(model, ids, packed_eps, mask, [[11, 13], [20]])
    want = [e for d, ep in zip(docs, eps) for e in brute_force(model, d[None], [ep], [len(d)])]
    assert [x["row"] for x in got] == [0, 0, 1]
    for x, y in zip(got, want):
        assert (x["distance"], x["tokens"], x["correct"], x["exact"]) == (
            y["distance"],
            y["tokens"],
            y["correct"],
            y["exact"],
        )
        assert x["logprob"] == pytest.approx(y["logprob"], abs=1e-5)
    # without the document mask the second document would see the first: the numbers differ
    plain = score_episodes(model, ids, packed_eps, mask)
    assert plain[1]["logprob"] != pytest.approx(got[1]["logprob"], abs=1e-4)
    bad = ids.clone()
    bad[0, 12:14] = bad[0, 8:10]
    with pytest.raises(ValueError, match="crosses a document boundary"):
        score_episodes(model, bad, [[[8, 10, 12, 14]], []], mask, [[11, 13], [20]])


@pytest.mark.filterwarnings("ignore:LongPPL skipped")
def test_cache_tells_packed_from_unpacked(setup, tmp_path):
    """Same tokens, same manifest fingerprint, one folder packed and one not: two cache entries."""
    tmp, tok, model, docs, rows = setup
    tight = pack(docs, N, pad=False)
    (tmp_path / "p").mkdir()
    (tmp_path / "u").mkdir()
    save_prepared(tmp_path / "p", tok, tight, N, fingerprint="same")
    save_prepared(tmp_path / "u", tok, [{k: r[k] for k in ("input_ids", "episodes")} for r in tight], N, "same")
    models = {"A": str(tmp / "a")}
    cache = tmp_path / "cache"
    cfg = _config(longppl_trunc_len=4096)  # no LongPPL: the evaluator's key is out of the picture
    u = evaluate_models(models, data_dir=tmp_path / "u", config=cfg, cache_dir=cache)
    p = evaluate_models(models, data_dir=tmp_path / "p", config=cfg, cache_dir=cache)
    assert len(list(cache.glob("*.json"))) == 2
    assert u["models"][0]["perplexity"]["overall"]["tokens"] == p["models"][0]["perplexity"]["overall"]["tokens"] + 4
    again = evaluate_models(models, data_dir=tmp_path / "p", config=cfg, cache_dir=cache)
    assert again["models"][0]["perplexity"] == p["models"][0]["perplexity"]


def test_unpacked_folder_takes_the_former_path_bitwise(setup):
    """An unpacked folder: the runner's numbers are bitwise those of the former computation (one
    plain ``token_nll`` and ``score_episodes`` per padded batch, the row's offset as position)."""
    from tokenweight.evaluate.episodes import EpisodeRecall
    from tokenweight.evaluate.inputs import batches as _batches

    tmp, tok, model, docs, rows = setup
    res = evaluate_models({"A": model}, data_dir=tmp / "docs", config=_config())
    ppl, rec = PositionPerplexity(EDGES, W), EpisodeRecall([0, 10, 48])
    for b in _batches([{"input_ids": d["input_ids"], "episodes": d["episodes"]} for d in docs], 3, 32768):
        assert b["doc_lengths"] is None
        ppl.update(token_nll(model, b["input_ids"], b["attention_mask"]), b["attention_mask"][:, 1:].bool())
        rec.update(score_episodes(model, b["input_ids"], b["episodes"], b["attention_mask"]))
    assert res["models"][0]["perplexity"] == ppl.result()
    assert res["models"][0]["episodes"] == rec.result()
    assert set(res["data"]) == {"dir", "fingerprint", "n", "sequences", "tokens", "episodes"}
