"""Run the main job: the paper's experiment in miniature, end to end (``tokenweight.demo``).

Prepares the embedded corpus, pretrains a short-context base model (the default profile uses the
one shipped in tokenweight/assets/base-default instead; --from-scratch pretrains it, as the quick
and full profiles always do), checks that it can copy (the gate), scores the extension data with
it, extends its context with every weighting scheme at equal steps and tokens, evaluates all of
them side by side and writes the report. Interrupted, the same command continues where it
stopped; a finished demo rerun only rebuilds the report.
"""

from __future__ import annotations

from tokenweight.demo import DemoConfig as CONFIG


def run(config: CONFIG) -> int:
    from tokenweight.demo import run_demo

    run_demo(config)
    return 0
