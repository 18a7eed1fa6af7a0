"""The frontier figure: one point per setting, its paired task gain and short-context cost against the
reference, with standard errors, from a hand-made aggregate (its numbers: test_verdict_frontier.py)."""

from __future__ import annotations

import math

from tokenweight.report.plots import plot_frontier


def aggregate():
    def diffs(values):
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        return {"diffs": values, "mean": mean, "n": len(values), "std": std}

    return {
        "aggregate": {
            "reference": "uniform",
            "groups": [
                {"label": "uniform", "stats": {"ppl_short": {"mean": 40.0}}, "vs_reference": {}},
                {
                    "label": "dense",
                    "stats": {},
                    "vs_reference": {"tasks": diffs([0.1, 0.2, 0.3]), "ppl_short": diffs([0.4, 0.8, 1.2])},
                },
                {"label": "no-tasks", "stats": {}, "vs_reference": {"ppl_short": diffs([1.0, 2.0])}},
            ],
        }
    }


def test_the_figure_is_written_and_absent_without_a_reference(tmp_path):
    assert plot_frontier(aggregate(), tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_frontier({"aggregate": {"groups": []}}, tmp_path / "g.png") is None
    assert not (tmp_path / "g.png").exists()
