"""lm-evaluation-harness results in the report: one metric per shown (task, metric), a table per
model and group, seed-paired differences to uniform, differences of models without runs to the
base model. Hand-made numbers (tests.report.report_fixtures plus a harness entry per model)."""

from __future__ import annotations

import pytest

from tests.report.report_fixtures import make_evaluation, make_runs
from tokenweight.report import assemble_results, build_report
from tokenweight.report.metrics import aggregate
from tokenweight.report.tables import all_tables

#: model -> (mmlu acc, toy acc, toy word_perplexity): uniform (.3, .5), dense (.4, .7) per seed
ACC = {
    "base": (0.25, 0.25, 30.0),
    "uniform_s0": (0.30, 0.50, 20.0),
    "uniform_s1": (0.50, 0.50, 22.0),
    "dense_s0": (0.40, 0.70, 19.0),
    "dense_s1": (0.70, 0.60, 20.0),
}


def harness(mmlu, toy, wppl) -> dict:
    def row(task, group, metrics, hib):
        return {"task": task, "alias": task, "group": group, "metrics": metrics, "samples": 10, "num_fewshot": 0,
                "higher_is_better": hib, "version": 1}  # fmt: skip

    return {
        "lm_eval_version": "0.4.13",
        "requested": ["mmlu", "toy"],
        "limit": None,
        "num_fewshot": None,
        "seconds": 1.0,
        "tasks": [
            row("mmlu", True, {"acc,none": mmlu, "acc_stderr,none": 0.01}, {"acc": True}),
            row("mmlu_anatomy", False, {"acc,none": 0.9, "acc_stderr,none": 0.1}, {"acc": True}),  # not requested
            row("toy", False, {"acc,none": toy, "word_perplexity,none": wppl}, {"acc": True, "word_perplexity": False}),
        ],
    }


def evaluation():
    ev = make_evaluation()
    for m in ev["models"]:
        m["harness"] = harness(*ACC[m["name"]])
    return ev


@pytest.fixture
def results(tmp_path):
    return assemble_results(evaluation(), config={"n": 1024, "window": 256}, runs=make_runs(tmp_path), base="base")


def test_harness_metrics_and_paired_differences(results):
    agg = aggregate(results)
    keys = [m["key"] for m in agg["metrics"] if m["table"] == "harness"]
    assert keys == ["harness:mmlu:acc,none", "harness:toy:acc,none", "harness:toy:word_perplexity,none"]
    better = {m["key"]: m["better"] for m in agg["metrics"] if m["table"] == "harness"}
    assert better["harness:toy:word_perplexity,none"] == "lower" and better["harness:mmlu:acc,none"] == "higher"
    dense = next(g for g in agg["groups"] if g["label"] == "dense:0.75 (frozen)")
    assert dense["stats"]["harness:mmlu:acc,none"]["mean"] == pytest.approx(0.55)
    d = dense["vs_reference"]["harness:mmlu:acc,none"]  # (.4 - .3, .7 - .5)
    assert d["diffs"] == pytest.approx([0.1, 0.2]) and d["mean"] == pytest.approx(0.15)
    assert agg["base"]["harness:toy:acc,none"] == 0.25
    tables = {t.title: t for t in all_tables(results, agg)}
    h = tables["lm-evaluation-harness"]
    assert h.headers == ["metric", "base", "uniform", "dense:0.75 (frozen)"]
    assert [r[0] for r in h.rows] == ["seeds", "mmlu acc", "toy acc", "toy word_perplexity"]
    assert h.rows[1] == ["mmlu acc", "0.250", "0.400 ± 0.141", "0.550 ± 0.212"]
    vs = tables["lm-evaluation-harness: difference vs uniform"]
    assert vs.rows[0] == ["mmlu acc", "+0.150 ± 0.071 (n=2)"]
    assert vs.rows[2] == ["toy word_perplexity", "-1.500 ± 0.707 (n=2)"]
    assert "harness" not in str(tables["Difference vs uniform"].rows)  # harness differences: their own table


def test_models_without_runs_differ_from_base(tmp_path):
    res = assemble_results(
        evaluation(), config={"n": 1024, "window": 256}, runs=[], base="base", models=["uniform_s0", "dense_s1"]
    )
    out = build_report(res, tmp_path / "r")
    models = {m["name"]: m for m in out["aggregate"]["models"]}
    assert models["dense_s1"]["vs_base"]["harness:mmlu:acc,none"] == pytest.approx(0.45)
    md = (tmp_path / "r" / "report.md").read_text()
    assert "### Difference vs base" in md and "| mmlu acc | +0.050 | +0.450 |" in md
    assert "| mmlu acc | 0.250 | 0.300 | 0.700 |" in md  # comparison: one column per model, no seeds row
    assert "seeds" not in md.split("### Comparison")[1].split("###")[0]
    assert "mmlu_anatomy" not in md  # a subtask of a requested group: in results.json only
