"""Requested comparisons between two groups (``config.compare``, ``report --compare``): paired
differences by hand and the verdict's outcome (the demo's smaller-scorer claim)."""

import math

import pytest

from tokenweight.report.metrics import aggregate
from tokenweight.report.verdict import auto_verdict

DENSE = "dense:0.75 (frozen)"


def test_comparison_differences_equal_the_hand_computed_ones(results):
    results["config"]["compare"] = [[DENSE, "uniform"]]
    agg = aggregate(results)
    (c,) = agg["comparisons"]
    assert (c["label"], c["against"]) == (DENSE, "uniform")
    # the same pairs as the comparison with the reference (report_fixtures.py's numbers)
    assert c["diffs"]["recall_long"]["diffs"] == pytest.approx([0.35, 0.0])
    assert c["diffs"]["recall_long"]["std"] == pytest.approx(0.35 / math.sqrt(2))
    assert c["diffs"]["ppl_short"]["diffs"] == pytest.approx([1.0, 1.0])
    ref = {g["label"]: g for g in agg["groups"]}[DENSE]["vs_reference"]
    assert c["diffs"] == ref


def test_reverse_comparison_negates(results):
    results["config"]["compare"] = [["uniform", DENSE]]
    (c,) = aggregate(results)["comparisons"]
    assert c["diffs"]["tasks"]["diffs"] == pytest.approx([-0.3, -0.1])


def test_verdict_says_lost_when_a_headline_metric_is_clearly_worse(results):
    results["config"]["compare"] = [[DENSE, "uniform"]]
    v = auto_verdict(aggregate(results))
    outcome = v["comparisons"][f"{DENSE}:uniform"]
    # recall: mean .175 <= 2 se = .35 -> within noise; ppl<256 (and LongPPL, twice it here): +1 and
    # +2 on both seeds, std 0 -> clearly worse
    assert outcome["judgements"]["recall_long"] == "within noise"
    assert outcome["judgements"]["ppl_short"] == "worse" and outcome["judgements"]["longppl"] == "worse"
    assert outcome["outcome"].startswith("it LOST: clearly worse on") and "ppl<256" in outcome["outcome"]
    assert f"- {DENSE} vs uniform (paired by seed, 2 seed(s))" in v["text"]


def test_verdict_says_lost_little_when_everything_is_within_noise(results):
    for m in results["runs"]:
        if m["name"] == "dense_s1":  # seed 1's short ppl now equals uniform's: diffs (1, 0)
            m["eval"]["perplexity"]["short"]["ppl"] = 12.0
            m["eval"]["longppl"]["longppl"] = 24.0
    results["config"]["compare"] = [[DENSE, "uniform"]]
    outcome = auto_verdict(aggregate(results))["comparisons"][f"{DENSE}:uniform"]
    assert outcome["judgements"]["ppl_short"] == "within noise"
    assert "worse" not in outcome["judgements"].values()
    assert outcome["outcome"].startswith("it lost little")


def test_one_seed_is_not_judged(results):
    results["runs"] = [r for r in results["runs"] if r["seed"] == 0]
    results["config"]["compare"] = [[DENSE, "uniform"]]
    outcome = auto_verdict(aggregate(results))["comparisons"][f"{DENSE}:uniform"]
    assert outcome["outcome"].startswith("one seed only")


def test_unknown_labels_are_left_out_of_the_aggregate(results):
    results["config"]["compare"] = [["nope", "uniform"]]
    assert aggregate(results)["comparisons"] == []
