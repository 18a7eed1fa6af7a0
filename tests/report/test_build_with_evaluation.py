"""The report on a real evaluation document (tokenweight.evaluate) of tiny random models: the
interface between the two packages, end to end."""

import json

import datasets
import pytest
import torch

from tests.report.report_fixtures import make_llama, write_log
from tokenweight.report import assemble_results, build_report, compute_heatmap


def _prepared(path, tokenizer, n=40, num=3):
    g = torch.Generator().manual_seed(0)
    rows = {"input_ids": [], "doc_id": [], "episodes": []}
    for i in range(num):
        ids = torch.randint(3, len(tokenizer), (n,), generator=g)
        ids[0] = tokenizer.bos_token_id
        eps = [[2, 5, 6, 9], [3, 6, 30, 33]]
        for ds, de, us, ue in eps:
            ids[us:ue] = ids[ds:de]
        rows["input_ids"].append(ids.tolist())
        rows["doc_id"].append(i)
        rows["episodes"].append(eps)
    ds = datasets.Dataset.from_dict(rows)
    ds.save_to_disk(str(path / "validation"))
    ds.select(range(1)).save_to_disk(str(path / "train"))
    tokenizer.save_pretrained(path / "tokenizer")
    (path / "manifest.json").write_text(
        json.dumps({"n": n, "tokenizer": "bpe", "counts": {"validation": num}, "fingerprint": "abc", "episodes": {}})
    )


@pytest.mark.slow
def test_report_of_a_real_evaluation(tmp_path, tiny_tokenizer):
    from tokenweight.evaluate import evaluate_models
    from tokenweight.stages import EvalConfig

    _prepared(tmp_path / "data", tiny_tokenizer)
    names = ["base", "u0", "d0", "u1", "d1"]
    models = {name: make_llama(len(tiny_tokenizer), i) for i, name in enumerate(names)}
    ev = evaluate_models(
        models,
        tokenizer=tiny_tokenizer,
        data_dir=tmp_path / "data",
        config=EvalConfig(tasks=[], window=16, batch_size=3),
    )
    runs = []
    for name in names[1:]:
        write_log(tmp_path / f"{name}.jsonl")
        runs.append(
            {
                "name": name,
                "scheme": "uniform" if name[0] == "u" else "dense:0.75",
                "scorer": "none" if name[0] == "u" else "frozen",
                "seed": int(name[1]),
                "log_path": str(tmp_path / f"{name}.jsonl"),
                "train_summary": {"wall_time_s": 1.0},
            }
        )
    results = assemble_results(ev, config={"n": 40, "window": 16}, runs=runs, base="base")
    sample = compute_heatmap(
        models["d0"],
        models["base"],
        tiny_tokenizer,
        "def f(x):\n    return x\n" * 3,
        ["dense:0.75", "sparse:0.3"],
        window=8,
        max_tokens=30,
    )
    build_report(results, tmp_path / "report", sample=sample)
    out = json.loads((tmp_path / "report" / "results.json").read_text())
    agg = out["aggregate"]
    keys = [m["key"] for m in agg["metrics"]]
    assert keys[:2] == ["recall_long", "recall_short"] and "ppl_short" in keys and "ppl_pos:16-32" in keys
    # the report's numbers are the evaluation's: d0's short ppl and its paired difference to u0
    by = {m["name"]: m for m in ev["models"]}
    dense = {g["label"]: g for g in agg["groups"]}["dense:0.75 (frozen)"]
    assert dense["values"]["ppl_short"] == [
        by["d0"]["perplexity"]["short"]["ppl"],
        by["d1"]["perplexity"]["short"]["ppl"],
    ]
    assert dense["vs_reference"]["ppl_short"]["diffs"][0] == pytest.approx(
        by["d0"]["perplexity"]["short"]["ppl"] - by["u0"]["perplexity"]["short"]["ppl"]
    )
    pngs = {p.name for p in (tmp_path / "report").glob("*.png")}
    assert {"training_curves.png", "weight_histograms.png", "ppl_by_position.png", "episodes_by_distance.png"} <= pngs
