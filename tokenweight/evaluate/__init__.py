"""Evaluation: perplexity by position, LongPPL, episode recall, synthetic long-context tasks.

Python API (names load lazily, so importing a submodule such as ``tokenweight.evaluate.tasks``
does not pull in the whole suite); the stage (``tokenweight.stages.evaluate``) holds the config
and writes the outputs, the report package draws the tables and figures::

    from tokenweight.evaluate import evaluate_models
    from tokenweight.report import write_outputs
    from tokenweight.stages import EvalConfig

    results = evaluate_models({"base": "runs/base", "dense": "runs/dense"},
                              data_dir="runs/data", config=EvalConfig(lengths=[256, 1024]))
    write_outputs(results, "runs/eval")   # results.json, table.txt, *.png

``compute_longppl`` is a drop-in for ``PKU-ML/LongPPL``'s (``from longppl import compute_longppl``):
the same arguments, defaults and numbers.

Modules: ``lm_metrics`` (perplexity by position bucket), ``longppl`` (key tokens, LongPPL;
``longppl_fang``: the drop-in, ``longppl_suite``: LongPPL in the suite),
``episodes`` (episode recall), ``tasks`` (RULER-style tasks), ``task_metrics`` (task samples
and per-model task scores for the suite), ``inputs`` (held-out rows, tokenizer, window and task
lengths of a run), ``harness`` (lm-evaluation-harness tasks), ``cache`` (per-model results cache),
``runner`` (the suite over several models), ``results`` (the JSON schema and its readers). The
results schema is documented in docs/EVALUATION.md. Nothing here imports ``tokenweight.stages`` or
``tokenweight.report``: the config is taken by its fields.
"""

from __future__ import annotations

from tokenweight._lazy import lazy_exports

_EXPORTS = {
    "evaluate_models": "tokenweight.evaluate.runner",
    "plan_evaluation": "tokenweight.evaluate.runner",
    "run_evaluation": "tokenweight.evaluate.runner",
    "check_results": "tokenweight.evaluate.results",
    "SCHEMA_VERSION": "tokenweight.evaluate.results",
    "compute_longppl": "tokenweight.evaluate.longppl_fang",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
