"""Metrics, means/stds over seeds, seed-paired differences: against hand-computed numbers."""

import math

import pytest

from tokenweight.report.metrics import aggregate, define_metrics, mean_entry, mean_std


def test_mean_std_is_sample_std():
    s = mean_std([1.0, None, 2.0, 4.0])
    assert s["n"] == 3 and s["mean"] == pytest.approx(7 / 3)
    assert s["std"] == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert mean_std([5.0]) == {"mean": 5.0, "std": None, "n": 1}
    assert mean_std([None]) == {"mean": None, "std": None, "n": 0}


def test_metric_set(results):
    keys = [m.key for m in define_metrics(results)]
    assert keys[:4] == ["recall_long", "recall_short", "tasks", "tasks_gen"]
    assert "ppl_pos:256-512" in keys and "longppl" in keys and "wall_time_s" in keys and "tokens_per_s" in keys
    assert keys[-2:] == ["task:niah", "task:kv"]


def test_aggregate_by_hand(results):
    agg = aggregate(results)
    assert agg["reference"] == "uniform"
    assert agg["task_length"] == 1024
    g = {x["label"]: x for x in agg["groups"]}
    assert list(g) == ["uniform", "dense:0.75 (frozen)"]
    uni, dense = g["uniform"], g["dense:0.75 (frozen)"]
    assert uni["seeds"] == [0, 1] and uni["vs_reference"] is None
    # recall d>=256, episode-weighted over [256,512) (4 eps) and [512,768) (6 eps)
    assert uni["values"]["recall_long"] == pytest.approx([0.35, 0.6])
    assert dense["values"]["recall_long"] == pytest.approx([0.7, 0.6])
    assert uni["stats"]["recall_long"]["mean"] == pytest.approx(0.475)
    assert uni["stats"]["recall_long"]["std"] == pytest.approx(0.25 / math.sqrt(2))
    d = dense["vs_reference"]["recall_long"]
    assert d["diffs"] == pytest.approx([0.35, 0.0]) and d["seeds"] == [0, 1]
    assert d["mean"] == pytest.approx(0.175) and d["std"] == pytest.approx(0.35 / math.sqrt(2))
    # tasks at 1024: mean of niah and kv (depth-pooled rows only)
    assert uni["values"]["tasks"] == pytest.approx([0.4, 0.5])
    assert dense["vs_reference"]["tasks"]["mean"] == pytest.approx(0.2)
    assert dense["vs_reference"]["tasks"]["std"] == pytest.approx(math.sqrt(0.02))
    assert dense["stats"]["tasks_gen"]["mean"] == pytest.approx(0.325)
    # short ppl: paired differences are exactly 1 for both seeds -> std 0
    assert dense["vs_reference"]["ppl_short"]["mean"] == pytest.approx(1.0)
    assert dense["vs_reference"]["ppl_short"]["std"] == pytest.approx(0.0)
    assert dense["stats"]["wall_time_s"]["mean"] == pytest.approx(120.0)
    assert agg["base"]["recall_long"] == pytest.approx(0.0)
    assert agg["base"]["wall_time_s"] is None


def test_pairing_drops_unpaired_seeds(results):
    results["runs"] = [r for r in results["runs"] if r["name"] != "uniform_s1"]
    d = {g["label"]: g for g in aggregate(results)["groups"]}["dense:0.75 (frozen)"]["vs_reference"]["recall_long"]
    assert d["seeds"] == [0] and d["n"] == 1 and d["std"] is None and d["mean"] == pytest.approx(0.35)


def test_mean_entry(results):
    runs = [r for r in results["runs"] if r["scheme"] == "uniform"]
    m = mean_entry([r["eval"] for r in runs], "uniform")
    assert m["name"] == "uniform"
    assert m["perplexity"]["short"]["ppl"] == pytest.approx(11.0)
    assert m["perplexity"]["short"]["window"] == 256 and isinstance(m["perplexity"]["short"]["window"], int)
    b = m["episodes"]["by_distance"]
    assert [x["start"] for x in b] == [0, 256, 512, 768]
    assert b[1]["exact_match"] == pytest.approx(0.625) and b[3]["exact_match"] is None
    rows = {(r["task"], r["length"], r["depth"]): r for r in m["tasks"]}
    assert rows[("niah", 1024, None)]["likelihood"]["token_accuracy"] == pytest.approx(0.6)
    assert rows[("niah", 1024, 1.0)]["samples"] == 2
