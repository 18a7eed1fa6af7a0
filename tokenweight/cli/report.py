"""Build a report from an evaluation and the training runs behind it (stage ``report``, docs/REPORT.md).

example:
  tokenweight eval runs/base/model runs/uniform-seed0/model runs/dense-seed0/model \\
      --names base,uniform-seed0,dense-seed0 --data runs/data --out runs/eval
  tokenweight report runs/uniform-seed0 runs/dense-seed0 --evaluation runs/eval --out runs/report
"""

from __future__ import annotations

from tokenweight.stages.report import ReportConfig as CONFIG


def run(config: CONFIG) -> int:
    from tokenweight.stages.report import report

    result = report(config)
    print(f"report: {result.index}")
    return 0
