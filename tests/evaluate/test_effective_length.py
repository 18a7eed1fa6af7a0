"""RULER's effective length: exact averages of RULER-rounded task scores, the strict threshold,
partial lengths, and the block in ``tokenweight eval``'s results and table. Module cost: ~6 s
(the end-to-end test; the rest is arithmetic)."""

from __future__ import annotations

import pytest

from tokenweight.evaluate.effective_length import DEFAULT_THRESHOLD, effective_label, ruler_summary


def _row(task, length, score, depth=None):
    gen = None if score is None else {"metric": "string_match_all", "score": score}
    return {"task": task, "length": length, "depth": depth, "samples": 4, "likelihood": {}, "generation": gen}


def test_threshold_is_llama2_7b_at_4k():
    assert DEFAULT_THRESHOLD == 85.6


def test_summary_by_hand():
    rows = [
        _row("a", 256, 90.0),
        _row("b", 256, 85.0),  # 87.5 > 85.6
        _row("a", 512, 85.6049),  # RULER rounds each task to 2 decimals: 85.6 and 85.6,
        _row("b", 512, 85.6049),  # a mean of 85.6, which does not exceed 85.6 (unrounded it would)
        _row("a", 1024, 80.0),
        _row("b", 1024, 95.0),  # 87.5: passes although 512 does not
        _row("a", 2048, 100.0),  # b skipped at 2048: partial, never effective
        _row("a", 256, 0.0, depth=0.5),  # per-depth rows are not task scores
        _row("c", 256, None),  # no generation: not a task of the summary
    ]
    s = ruler_summary(rows)
    assert s["tasks"] == ["a", "b"] and s["threshold"] == 85.6
    assert s["by_length"] == [
        {"length": 256, "score": 87.5, "tasks": 2, "complete": True, "passes": True},
        {"length": 512, "score": pytest.approx(85.6, abs=1e-12), "tasks": 2, "complete": True, "passes": False},
        {"length": 1024, "score": 87.5, "tasks": 2, "complete": True, "passes": True},
        {"length": 2048, "score": 100.0, "tasks": 1, "complete": False, "passes": False},
    ]
    assert s["effective_length"] == 1024 and effective_label(s) == "1024"
    assert ruler_summary(rows, threshold=87.5)["effective_length"] is None  # strictly above
    assert effective_label(ruler_summary(rows, threshold=87.5)) == "<256"
    assert ruler_summary(rows[:2])["effective_length"] == 256 and effective_label(ruler_summary(rows[:2])) == ">=256"
    assert ruler_summary([_row("a", 256, None)]) is None and ruler_summary([]) is None


def test_eval_results_and_table_carry_it(tmp_path, monkeypatch):
    """End to end: generation scored perfect at 256 and empty at 512 (a stub generator), so the
    effective length is 256; the likelihood rows stay beside it."""
    from tests.evaluate.test_runner import make_model, make_tokenizer
    from tokenweight.evaluate import tasks as T
    from tokenweight.evaluate.results import check_results
    from tokenweight.evaluate.runner import evaluate_models
    from tokenweight.report.evaluation import format_tables
    from tokenweight.stages.evaluate import EvalConfig

    tok = make_tokenizer(tmp_path / "tok")
    model = make_model(tmp_path / "m", len(tok), seed=0)

    def stub(model, tokenizer, samples, max_new_tokens=None, batch_size=8, batch_tokens=None):
        assert max_new_tokens is None and all(s.tokens_to_generate == 5 for s in samples)
        return [", ".join(s.outputs) if s.meta["target_length"] == 256 else "" for s in samples]

    monkeypatch.setattr(T, "generate_predictions", stub)
    cfg = EvalConfig(
        tasks=["niah_single_1", "niah_multikey_2"], lengths=[256, 512], window=256, num_samples=1,
        depths=[0.5], max_new_tokens=5, batch_size=2, ruler_threshold=90.0,
    )  # fmt: skip
    res = check_results(evaluate_models({"m": model}, tokenizer=tok, config=cfg))
    r = res["models"][0]["ruler"]
    assert res["config"]["ruler_threshold"] == 90.0 and r["threshold"] == 90.0
    assert r["tasks"] == ["niah_multikey_2", "niah_single_1"]
    assert [(b["length"], b["score"], b["passes"]) for b in r["by_length"]] == [(256, 100.0, True), (512, 0.0, False)]
    assert r["effective_length"] == 256
    assert all(row["likelihood"]["token_accuracy"] is not None for row in res["models"][0]["tasks"])
    table = format_tables(res)
    assert "RULER: mean generation score over 2 tasks" in table and "threshold 90" in table
    line = next(x for x in table.splitlines() if x.startswith("effective"))
    assert line.split() == ["effective", "256"]
