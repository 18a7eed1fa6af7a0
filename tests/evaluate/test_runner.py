"""The suite over several models: values equal the metrics computed directly; JSON schema; outputs."""

import json

import datasets
import pytest
import torch

from tests.tiny_models import save_tiny_llama, tiny_bpe
from tokenweight.evaluate.lm_metrics import PositionPerplexity
from tokenweight.evaluate.results import SCHEMA_VERSION, check_results
from tokenweight.evaluate.runner import evaluate_models
from tokenweight.report.evaluation import format_tables, write_outputs
from tokenweight.scoring import token_nll
from tokenweight.stages.evaluate import EvalConfig


def make_tokenizer(path, vocab=700):
    """Byte-level BPE with digits split one per token and BOS added (like the demo's tokenizer),
    trained in milliseconds on the task templates, so that task prompts stay short."""
    from tokenweight.evaluate.tasks import haystack, niah, variable_tracking, words

    text = [
        niah.TEMPLATE,
        niah.ANSWER_PREFIX,
        niah.NEEDLE,
        variable_tracking.TEMPLATE,
        variable_tracking.ANSWER_PREFIX,
        words.CWE_TEMPLATE,
        words.FWE_TEMPLATE,
        haystack.NOISE,
    ] * 20
    fast = tiny_bpe(text, vocab, split_digits=True, add_bos=True)
    fast.save_pretrained(path)
    return fast


def make_model(path, vocab, seed):
    ids = {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}
    return save_tiny_llama(path, vocab, seed, num_attention_heads=2, max_position_embeddings=256, **ids)


def make_prepared(path, tokenizer, n=48, num=5, seed=0):
    """A prepared folder by hand (docs/ARCHITECTURE.md data contract) with episodes."""
    g = torch.Generator().manual_seed(seed)
    V = len(tokenizer)
    rows = {"input_ids": [], "doc_id": [], "episodes": []}
    for i in range(num):
        length = n if i != num - 1 else n - 7  # one shorter tail
        ids = torch.randint(3, V, (length,), generator=g)
        ids[0] = tokenizer.bos_token_id
        eps = [[3, 6, 9, 12], [5, 8, 30, 33]] if i % 2 == 0 else [[2, 4, 20, 22]]
        for ds, de, us, ue in eps:
            ids[us:ue] = ids[ds:de]
        rows["input_ids"].append(ids.tolist())
        rows["doc_id"].append(i)
        rows["episodes"].append(eps)
    ds = datasets.Dataset.from_dict(rows)
    ds.save_to_disk(str(path / "validation"))
    ds.select(range(2)).save_to_disk(str(path / "train"))
    tokenizer.save_pretrained(path / "tokenizer")
    (path / "manifest.json").write_text(
        json.dumps({"n": n, "tokenizer": "bpe", "counts": {"validation": num}, "fingerprint": "abc", "episodes": {}})
    )
    return rows


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runner")
    tok = make_tokenizer(tmp / "tok")
    a = make_model(tmp / "a", len(tok), 0)
    b = make_model(tmp / "b", len(tok), 1)
    rows = make_prepared(tmp / "data", tok)
    return tmp, tok, a, b, rows


def test_lm_metrics_side_by_side_equal_direct_computation(setup):
    tmp, tok, a, b, rows = setup
    cfg = EvalConfig(
        tasks=[], window=16, batch_size=2, max_sequences=None, longppl_trunc_len=16, longppl_sliding_window=8
    )
    res = evaluate_models({"A": str(tmp / "a"), "B": b}, data_dir=tmp / "data", config=cfg)
    check_results(res)
    assert res["schema_version"] == SCHEMA_VERSION
    assert [m["name"] for m in res["models"]] == ["A", "B"]
    assert res["models"][1]["source"] == "<in-memory>"
    assert res["config"]["position_edges"] == [0, 16, 32, 48]
    assert res["data"]["sequences"] == 5 and res["data"]["episodes"] == 8 and res["data"]["n"] == 48
    for m, model in zip(res["models"], (a, b)):
        acc = PositionPerplexity([0, 16, 32, 48], 16)
        for r in rows["input_ids"]:  # one sequence at a time, no padding
            acc.update(token_nll(model, torch.tensor([r])))
        want = acc.result()
        for got_b, want_b in zip(m["perplexity"]["by_position"], want["by_position"]):
            assert got_b["tokens"] == want_b["tokens"]
            assert got_b["ppl"] == pytest.approx(want_b["ppl"], rel=1e-5)
        assert m["perplexity"]["short"]["ppl"] == pytest.approx(want["short"]["ppl"], rel=1e-5)
        assert m["episodes"]["overall"]["episodes"] == 8
        assert [x["episodes"] for x in m["episodes"]["by_distance"]] == [
            3,
            5,
            0,
        ]  # 3 at distance 6; 3 at 25 and 2 at 18
        assert m["tasks"] == []
    # LongPPL: the first model judges key tokens for both (values: tests/evaluate/test_longppl_suite.py)
    ev = res["evaluator"]
    assert ev["name"] == "A" and ev["trunc_len"] == 16 and ev["sliding_window"] == 8
    a_lp, b_lp = (m["longppl"] for m in res["models"])
    assert a_lp["key_tokens"] == b_lp["key_tokens"] and a_lp["eligible_tokens"] == b_lp["eligible_tokens"]


def test_longppl_every_candidate_is_key_at_extreme_thresholds(setup):
    """With alpha = beta = -1e9 every candidate is a key token, for the evaluator and the models."""
    tmp, tok, a, b, rows = setup
    cfg = EvalConfig(
        tasks=[],
        window=16,
        batch_size=3,
        longppl_trunc_len=16,
        longppl_sliding_window=8,
        longppl_alpha=-1e9,
        longppl_beta=-1e9,
        evaluator="B",
    )
    res = evaluate_models({"A": a, "B": b}, tokenizer=tok, data_dir=tmp / "data", config=cfg)
    ev = res["evaluator"]
    assert ev["name"] == "B" and ev["key_tokens"] == ev["eligible_tokens"] > 0 and ev["key_share"] == 1.0
    for m in res["models"]:
        lp = m["longppl"]
        assert lp["key_tokens"] == lp["eligible_tokens"] > 0 and lp["key_share"] == 1.0


def test_native_and_lm_eval_tasks_get_the_same_lengths(setup, monkeypatch):
    """The window joins --lengths when none lies inside it, for the native tasks and lm-eval's RULER
    tasks alike (one rule, tokenweight.evaluate.inputs.task_lengths); lm-eval gets the run's
    tokenizer folder (here the data's)."""
    import tokenweight.evaluate.runner as runner

    tmp, tok, a, b, rows = setup
    seen = {}

    def plan_harness(config, *, lengths, tokenizer_folder):
        seen.update(lengths=list(lengths), tokenizer_folder=tokenizer_folder)

    monkeypatch.setattr(runner, "plan_harness", plan_harness)
    cfg = EvalConfig(tasks=[], lengths=[128, 64, 128], window=16, harness=["ruler"])
    res = evaluate_models({"A": a}, data_dir=tmp / "data", config=cfg)
    assert res["config"]["lengths"] == seen["lengths"] == [16, 64, 128]
    assert seen["tokenizer_folder"] == str(tmp / "data" / "tokenizer")


def test_write_outputs(setup, tmp_path):
    tmp, tok, a, b, rows = setup
    cfg = EvalConfig(tasks=[], window=16, batch_size=4)
    res = evaluate_models({"A": a, "B": b}, tokenizer=tok, data_dir=tmp / "data", config=cfg)
    written = write_outputs(res, tmp_path / "out")
    back = json.loads((tmp_path / "out" / "results.json").read_text())
    assert back == res
    names = sorted(p.name for p in written["plots"])
    assert names == ["episodes_by_distance.png", "ppl_by_position.png"]
    for p in written["plots"]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000
    text = (tmp_path / "out" / "table.txt").read_text()
    assert text.strip() == format_tables(res).strip()
    assert "LongPPL" in text and "Episode recall" in text


def test_schema_errors():
    with pytest.raises(ValueError, match="lacks key"):
        check_results({"schema_version": SCHEMA_VERSION})
    with pytest.raises(ValueError, match="ValueError|lengths"):
        EvalConfig(lengths=[]).validate()


def test_tasks_rows_by_depth_and_outputs(setup, tmp_path):
    """Task rows: one pooled row and one row per depth, equal to the tasks module's per-sample
    scores averaged by hand; the same samples for both models; skipped lengths recorded."""
    from tokenweight.evaluate import tasks as T

    tmp, tok, a, b, rows = setup
    cfg = EvalConfig(
        tasks=["niah_single_1", "fwe"],
        lengths=[64, 128],
        window=128,
        num_samples=2,
        depths=[0.0, 1.0],
        generation=True,
        max_new_tokens=3,
        batch_size=4,
    )
    res = evaluate_models({"A": a, "B": b}, tokenizer=tok, config=cfg)
    assert res["data"] is None and res["evaluator"] is None
    assert res["config"]["depths"] == [0.0, 1.0] and res["config"]["lengths"] == [64, 128]
    assert sorted((s["task"], s["length"]) for s in res["skipped_tasks"]) == [("fwe", 64), ("niah_single_1", 64)]
    for m, model in zip(res["models"], (a, b)):
        niah = [r for r in m["tasks"] if r["task"] == "niah_single_1"]
        assert [(r["length"], r["depth"], r["samples"]) for r in niah] == [(128, None, 4), (128, 0.0, 2), (128, 1.0, 2)]
        fwe = [r for r in m["tasks"] if r["task"] == "fwe"]
        assert [(r["length"], r["depth"], r["samples"]) for r in fwe] == [(128, None, 4)]  # 2 x 2 depths
        samples = T.generate_samples("niah_single_1", tok, 128, 2, 0, depths=[0.0, 1.0], tokens_to_generate=3)
        lik = T.score_likelihood(model, tok, samples, batch_size=1)
        for r, idx in zip(niah, ([0, 1, 2, 3], [0, 1], [2, 3])):
            assert r["likelihood"]["token_accuracy"] == pytest.approx(
                sum(lik[i]["token_accuracy"] for i in idx) / len(idx)
            )
            assert r["likelihood"]["mean_logprob"] == pytest.approx(
                sum(lik[i]["mean_logprob"] for i in idx) / len(idx), abs=1e-5
            )
            assert r["likelihood"]["candidate_accuracy"] == sum(lik[i]["rank"] == 1 for i in idx) / len(idx)
            assert r["generation"]["metric"] == "string_match_all"
            assert 0.0 <= r["generation"]["score"] <= 100.0
    written = write_outputs(res, tmp_path)
    assert sorted(p.name for p in written["plots"]) == ["heatmap_niah_single_1.png", "tasks_by_length.png"]
    text = written["text"]
    assert "niah_single_1" in text and "128*" in text and "skipped fwe at length 64" in text


def test_unknown_task_is_usage_error(setup):
    from tokenweight.errors import UsageError

    tmp, tok, a, b, rows = setup
    with pytest.raises(UsageError, match="unknown task"):
        evaluate_models({"A": a}, tokenizer=tok, config=EvalConfig(tasks=["nope"], window=64))


def test_cache_resumes_without_running_models(setup, tmp_path, monkeypatch):
    """A second run with the same inputs takes every entry from the cache (no model is loaded);
    a changed setting misses it."""
    import tokenweight.evaluate.runner as runner

    tmp, tok, a, b, rows = setup
    models = {"A": str(tmp / "a"), "B": str(tmp / "b")}
    cfg = EvalConfig(
        tasks=["fwe"],
        lengths=[128],
        window=16,
        num_samples=1,
        depths=[0.5],
        generation=False,
        longppl_trunc_len=16,
        longppl_sliding_window=8,
    )
    first = evaluate_models(models, data_dir=tmp / "data", config=cfg, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 2

    def no_load(source, runtime=None):
        raise AssertionError(f"model {source} loaded although cached")

    monkeypatch.setattr(runner, "evaluation_model", no_load)
    again = evaluate_models(
        {"a2": models["A"], "B": models["B"]}, data_dir=tmp / "data", config=cfg, cache_dir=tmp_path
    )
    for x, y in zip(first["models"], again["models"]):
        assert {k: v for k, v in x.items() if k != "name"} == {k: v for k, v in y.items() if k != "name"}
    assert [m["name"] for m in again["models"]] == ["a2", "B"]
    assert again["evaluator"] == {**first["evaluator"], "name": "a2"}  # the first model judges by default
    with pytest.raises(AssertionError, match="loaded although cached"):
        evaluate_models(
            models,
            data_dir=tmp / "data",
            config=EvalConfig(**{**cfg.__dict__, "longppl_alpha": 1.0}),
            cache_dir=tmp_path,
        )
