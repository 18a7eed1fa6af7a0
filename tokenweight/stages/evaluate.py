"""Stage ``evaluate``: one or more models side by side on identical inputs.

Writes ``out/results.json`` (docs/EVALUATION.md), ``out/table.txt`` and PNG plots. Each model's
entry is cached under ``out/.cache`` as soon as it is done, so an interrupted evaluation continues
with the same call and a rerun with one more model evaluates only that one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenweight.errors import UsageError
from tokenweight.evaluate.runner import EvalConfig

__all__ = ["EvalConfig", "EvalResult", "evaluate"]


@dataclass
class EvalResult:
    """The results document and the files written."""

    results: dict
    written: dict

    @property
    def table(self) -> str:
        return self.written["text"]


def evaluate(config: EvalConfig, *, tokenizer=None) -> EvalResult:
    """Evaluate ``config.models`` (folders, hub ids; Python callers may pass model objects)."""
    from tokenweight.evaluate.runner import evaluate_models, write_outputs

    config.validate()
    if not config.models:
        raise UsageError(
            "no MODEL given: pass one or more model folders, e.g. tokenweight eval runs/base runs/weighted"
        )
    for m in config.models:
        if isinstance(m, (str, Path)) and not Path(m).exists() and not _is_hub_id(str(m)):
            raise UsageError(f"model path {str(m)!r} does not exist: pass a folder saved with save_pretrained")
    if config.data is not None and not Path(config.data).is_dir():
        raise UsageError(f"--data {config.data!r} is not a folder: pass a folder written by 'tokenweight prepare'")
    names = config.display_names()
    ev = config.evaluator
    if isinstance(ev, str) and ev not in names and not Path(ev).exists():
        raise UsageError(f"--evaluator {ev!r} is neither a model name ({', '.join(names)}) nor an existing folder")
    from tokenweight.evaluate.harness import plan_harness
    from tokenweight.io_utils import output_lock

    plan_harness(config, config.models, config.data, tokenizer)  # lm-eval task names: before anything is written

    out = Path(config.out)
    with output_lock(out):  # a second evaluation into the same folder is refused at once
        results = evaluate_models(
            dict(zip(names, config.models)),
            tokenizer=tokenizer,
            data_dir=config.data,
            config=config,
            cache_dir=out / ".cache" if config.cache else None,
        )
        return EvalResult(results, write_outputs(results, out))


def _is_hub_id(name: str) -> bool:
    from tokenweight.identity import is_hub_id

    return is_hub_id(name)
