"""Evaluation: perplexity by position, LongPPL, episode recall, synthetic long-context tasks.

Python API (names load lazily, so importing a submodule such as ``tokenweight.evaluate.tasks``
does not pull in the whole suite)::

    from tokenweight.evaluate import EvalConfig, evaluate_models, write_outputs

    results = evaluate_models({"base": "runs/base", "dense": "runs/dense"},
                              data_dir="runs/data", config=EvalConfig(lengths=[256, 1024]))
    write_outputs(results, "runs/eval")   # results.json, table.txt, *.png

``compute_longppl`` is a drop-in for ``PKU-ML/LongPPL``'s (``from longppl import compute_longppl``):
the same arguments, defaults and numbers.

Modules: ``lm_metrics`` (perplexity by position bucket), ``longppl`` (key tokens, LongPPL;
``longppl_fang``: the drop-in, ``longppl_suite``: LongPPL in the suite),
``episodes`` (episode recall), ``tasks`` (RULER-style tasks), ``task_metrics`` (task samples
and per-model task scores for the suite), ``runner`` (the suite over several models), ``results``
(JSON schema, console table), ``plots`` (PNG figures). The results schema is
documented in docs/EVALUATION.md.
"""

from __future__ import annotations

from tokenweight._lazy import lazy_exports

_EXPORTS = {
    "EvalConfig": "tokenweight.evaluate.runner",
    "evaluate_models": "tokenweight.evaluate.runner",
    "write_outputs": "tokenweight.evaluate.runner",
    "load_model": "tokenweight.evaluate.runner",
    "check_results": "tokenweight.evaluate.results",
    "format_tables": "tokenweight.evaluate.results",
    "SCHEMA_VERSION": "tokenweight.evaluate.results",
    "write_plots": "tokenweight.evaluate.plots",
    "compute_longppl": "tokenweight.evaluate.longppl_fang",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
