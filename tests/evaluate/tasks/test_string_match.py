"""RULER's generation metrics against hand-computed values."""

from __future__ import annotations

import pytest

from tokenweight.evaluate.tasks import Sample, score_generation, string_match_all, string_match_part
from tokenweight.evaluate.tasks.string_match import postprocess


def test_string_match_by_hand():
    refs = ["123", "456", "789"]
    assert string_match_all("The numbers are 123 and 456.", refs) == pytest.approx(2 / 3)
    assert string_match_part("The numbers are 123 and 456.", refs) == 1.0
    assert string_match_all("nothing here", refs) == 0.0
    assert string_match_part("nothing here", refs) == 0.0
    assert string_match_all("VAR ABCDE and abcdf", ["abcde", "ABCDF"]) == 1.0  # case-insensitive
    assert string_match_all("12345", ["1234"]) == 1.0  # substring, as RULER
    with pytest.raises(ValueError, match="at least one gold answer"):
        string_match_all("x", [])


def test_postprocess_like_ruler():
    assert postprocess("  1234567\x00tail \t\n") == "1234567\ntail"
    assert postprocess("\x1b[0m ok") == "[0m ok"


def _s(task, outputs):
    return Sample(task=task, input="q", outputs=outputs, length=1)


def test_score_generation_by_hand():
    samples = [
        _s("niah_single_1", ["1111111"]),
        _s("niah_multivalue", ["11", "22", "33", "44"]),
        _s("vt", ["AAAAA", "BBBBB"]),
        _s("niah_single_1", ["7777777"]),
    ]
    preds = [" 1111111.", "11, 22 and 99", "aaaaa", "no idea"]
    r = score_generation(preds, samples)
    per = [p["score"] for p in r["per_sample"]]
    assert per == [1.0, 0.5, 0.5, 0.0]
    assert [p["string_match_part"] for p in r["per_sample"]] == [1.0, 1.0, 1.0, 0.0]
    assert r["score"] == pytest.approx(100 * 2.0 / 4)
    assert r["string_match_all"] == pytest.approx(50.0)
    assert r["string_match_part"] == pytest.approx(75.0)
    assert r["metric"] == "string_match_all" and r["num_samples"] == 4
    assert r["by_task"]["niah_single_1"] == {"metric": "string_match_all", "score": 50.0, "num_samples": 2}
    assert r["by_task"]["niah_multivalue"]["score"] == pytest.approx(50.0)
    assert r["by_task"]["vt"]["score"] == pytest.approx(50.0)


def test_score_generation_errors():
    with pytest.raises(ValueError, match="one per sample"):
        score_generation(["a"], [_s("vt", ["A"]), _s("vt", ["B"])])
    with pytest.raises(ValueError, match="empty"):
        score_generation([], [])
    with pytest.raises(ValueError, match="must be strings"):
        score_generation([None], [_s("vt", ["A"])])
