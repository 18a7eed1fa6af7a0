"""The frontier's numbers: one point per setting, its paired task gain and short-context cost against
the reference with standard errors, and whether it reaches the target (the verdict's 2-SE rule)."""

from __future__ import annotations

import math

import pytest

from tests.report.test_plots_frontier import aggregate
from tokenweight.report.tables import frontier_table
from tokenweight.report.verdict import FRONTIER_TARGET, frontier_points, meets_target


def test_points_are_the_paired_means_with_standard_errors():
    (p,) = frontier_points(aggregate())
    assert p["label"] == "dense" and p["seeds"] == 3
    assert p["tasks"] == pytest.approx(0.2) and p["tasks_se"] == pytest.approx(0.1 / math.sqrt(3))
    assert p["ppl_short_pct"] == pytest.approx(100 * 0.8 / 40) and p["ppl_short_pct_se"] == pytest.approx(
        100 * 0.4 / 40 / math.sqrt(3)
    )


def point(tasks, ppl_short_pct, tasks_se=0.01, ppl_short_pct_se=0.2, seeds=3):
    return {
        "tasks": tasks,
        "ppl_short_pct": ppl_short_pct,
        "tasks_se": tasks_se,
        "ppl_short_pct_se": ppl_short_pct_se,
        "seeds": seeds,
    }


@pytest.mark.parametrize(
    ("p", "verdict"),
    [
        (point(0.13, 1.5), "clearly"),  # 0.13 - 0.02 >= 0.10 and 1.5 + 0.4 <= 2
        (point(0.115, 1.5), "on the means"),  # the gain's lower end 0.095 misses
        (point(0.13, 1.7), "on the means"),  # the cost's upper end 2.1 misses
        (point(0.13, 1.5, seeds=1, tasks_se=None, ppl_short_pct_se=None), "on the means"),
        (point(0.099, 0.0), "no"),
        (point(0.5, 2.01), "no"),
        (point(0.10, 2.0, tasks_se=0.0, ppl_short_pct_se=0.0), "clearly"),  # the target's corner is in it
    ],
)
def test_meets_target(p, verdict):
    assert FRONTIER_TARGET == {"tasks": 0.10, "ppl_short_pct": 2.0}
    assert meets_target(p) == verdict


def test_the_table_gives_each_point_and_its_judgement():
    table = frontier_table(aggregate())
    assert table.headers == ["setting", "seeds", "tasks gain", "ppl<w cost", "meets the target"]
    # dense: gain 0.2 ± 0.1/√3 (lower end 0.085 < 0.10), cost 2% ± 0.577%: the means only
    assert table.rows == [["dense", "3", "+0.200 ± 0.058", "+2.0 ± 0.6%", "on the means"]]
    assert frontier_table({"aggregate": {"groups": []}}) is None
