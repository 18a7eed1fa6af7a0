"""Stage ``report`` on a plain ``tokenweight eval`` (not the demo's): three models evaluated without
--names (two of them are runs' ``model/`` folders, matched to their runs by path), reported with
the run folders, and with no run folders at all (models only: every model a column, differences
to the base model). Cost: ~10 s (two 2-step training runs, one evaluation of three tiny models)."""

from __future__ import annotations

import json

import pytest

from tests.train.train_helpers import make_prepared, make_tokenizer, tiny_model
from tokenweight.errors import UsageError
from tokenweight.stages.evaluate import EvalConfig, evaluate
from tokenweight.stages.report import ReportConfig, report
from tokenweight.stages.train import TrainConfig, train


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage_report")
    data = make_prepared(root / "data", n=32, count=6)
    base = root / "base"
    tiny_model(n=32, seed=3).save_pretrained(base)
    make_tokenizer(base)
    for name, scheme, scorer in (("uniform", "uniform", "none"), ("dense", "dense:0.75", "self")):
        train(
            TrainConfig(
                model=str(base),
                data=str(data),
                out=str(root / "runs" / name),
                scheme=scheme,
                scorer=scorer,
                window=8,
                max_steps=2,
                batch_size=2,
                lr=0.05,  # two steps that move the models apart (differences of a few units)
                warmup_steps=0,
                report_to=["none"],
            )
        )
    models = [str(base), str(root / "runs" / "uniform" / "model"), str(root / "runs" / "dense" / "model")]
    lp = {"longppl_trunc_len": 8, "longppl_sliding_window": 8, "longppl_alpha": -99.0, "longppl_beta": -99.0}
    ev = evaluate(EvalConfig(models=models, data=str(data), tasks=["none"], window=8, out=str(root / "eval"), **lp))
    assert [m["name"] for m in ev.results["models"]] == ["base", "model#2", "model#3"]  # no --names
    return root, ev.results


def cell(md: str, title: str, row: str, column: str) -> str:
    """The cell of a report.md table (metrics as rows) by row label and column header."""
    section = md.split(f"### {title}\n")[1].split("###")[0]
    lines = [[c.strip() for c in x.strip().strip("|").split("|")] for x in section.splitlines() if x.startswith("|")]
    head = lines[0]
    (hit,) = [x for x in lines[2:] if x[0] == row]
    return hit[head.index(column)]


def test_plain_eval_with_run_folders(tree):
    root, ev = tree
    runs = [str(root / "runs" / "uniform"), str(root / "runs" / "dense")]
    res = report(ReportConfig(runs=runs, evaluation=str(root / "eval"), out=str(root / "report_runs"))).results
    assert [r["name"] for r in res["runs"]] == ["uniform", "dense"] and res["base"]["name"] == "base"
    assert res["runs"][1]["eval"]["perplexity"] == ev["models"][2]["perplexity"]  # matched by path
    assert res["models"] == [] and res["config"]["n"] == 32 and res["config"]["window"] == 8
    assert res["aggregate"]["reference"] == "uniform"
    md = (root / "report_runs" / "report.md").read_text()
    ppl = lambda i: ev["models"][i]["perplexity"]["overall"]["ppl"]  # noqa: E731
    assert cell(md, "Comparison", "ppl", "dense") == f"{ppl(2):.2f}"
    assert cell(md, "Difference vs uniform", "ppl", "dense") == f"{ppl(2) - ppl(1):+.2f} (n=1)"
    assert (root / "report_runs" / "index.html").is_file()
    # the runs' training data's exposure histogram: 6 rows of 32 tokens, targets e = 1..31, tail e >= w = 8
    exposure = res["exposure"]
    assert exposure["buckets"] == {"0": 6, "1": 12, "2": 24, "3": 48, "4": 96} and exposure["tail"] == 8
    assert exposure["tail_share"] == pytest.approx(6 * 24 / (6 * 31))
    assert (root / "report_runs" / "exposure_histogram.png").is_file() and "exposure_histogram.png" in md


def test_models_only(tree):
    root, ev = tree
    out = root / "report_models"
    res = report(ReportConfig(evaluation=str(root / "eval" / "results.json"), out=str(out))).results
    assert res["runs"] == [] and res["base"]["name"] == "base"
    assert [m["name"] for m in res["models"]] == ["model#2", "model#3"]
    md = (out / "report.md").read_text()
    ppl = [m["perplexity"]["overall"]["ppl"] for m in ev["models"]]
    assert [cell(md, "Comparison", "ppl", c) for c in ("base", "model#2", "model#3")] == [f"{x:.2f}" for x in ppl]
    assert cell(md, "Difference vs base", "ppl", "model#3") == f"{ppl[2] - ppl[0]:+.2f}"
    lp = [m["longppl"]["longppl"] for m in ev["models"]]
    assert cell(md, "Difference vs base", "LongPPL", "model#2") == f"{lp[1] - lp[0]:+.2f}"
    assert "Differences against the base model" in res["verdict"]["text"]
    assert json.loads((out / "results.json").read_text())["models"][0]["eval"] == ev["models"][1]
    # no reference at all
    res = report(ReportConfig(evaluation=str(root / "eval"), out=str(root / "report_none"), base=None)).results
    assert res["base"] is None and len(res["models"]) == 3


def test_bad_input(tree):
    root, _ = tree
    with pytest.raises(UsageError, match="--base 'nope' is not a model of the evaluation"):
        report(ReportConfig(evaluation=str(root / "eval"), out=str(root / "r1"), base="nope"))
    with pytest.raises(UsageError, match="evaluate .*other.* too, or name it 'other'"):
        other = root / "runs" / "other"
        other.mkdir()
        for name in ("run_config.json", "summary.json"):
            (other / name).write_text((root / "runs" / "dense" / name).read_text())
        report(ReportConfig(runs=[str(other)], evaluation=str(root / "eval"), out=str(root / "r2")))
    assert not (root / "r1").exists() and not (root / "r2").exists()
