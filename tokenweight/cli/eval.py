"""Evaluate models side by side on the same inputs (stage ``evaluate``, docs/EVALUATION.md).

Writes OUT/results.json, OUT/table.txt and PNG plots, and prints the table. Each model's entry is
cached under OUT/.cache as soon as it is done: an interrupted evaluation continues with the same
command, and one more model later evaluates only that one.
"""

from __future__ import annotations

from tokenweight.stages.evaluate import EvalConfig as CONFIG


def run(config: CONFIG) -> int:
    from tokenweight.stages.evaluate import evaluate

    result = evaluate(config)
    w = result.written
    print(w["text"])
    print(f"\nwrote {w['json']}, {w['table']} and {len(w['plots'])} plot(s) to {config.out}")
    return 0
