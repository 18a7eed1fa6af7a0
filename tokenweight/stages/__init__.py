"""The stages of the pipeline: each one library function taking one typed config.

    stages.prepare.prepare(PrepareConfig) -> PrepareResult    corpus -> tokenized sequences
    stages.score.score(ScoreConfig) -> ScoreResult            frozen short-context NLL cache
    stages.select.select(SelectConfig) -> SelectResult        the data that needs long context most
    stages.pretrain.pretrain(PretrainConfig) -> RunResult     short-context base model
    stages.train.train(TrainConfig) -> RunResult              context extension, token-weighted loss
    stages.evaluate.evaluate(EvalConfig) -> EvalResult        models side by side
    stages.report.report(ReportConfig) -> ReportResult        evaluation + runs -> report folder

For example::

    from tokenweight.stages.train import TrainConfig, train

    result = train(TrainConfig(model="runs/base/model", data="runs/data", out="runs/dense",
                               scheme="dense:0.75", scorer="self", window=256))

Every config is a dataclass (``tokenweight.config``): field defaults, help text, ``validate()``
raising ``ValueError`` that names the field, the value and the valid range. Every stage can be
interrupted and continued with the same call, is a no-op when its output is complete and made with
the same settings, and refuses (or with ``force`` replaces) an output made with other settings.
The package exports the config and result classes (``from tokenweight.stages import TrainConfig``);
each function lives in the module of its name. The CLI (``tokenweight.cli``) derives its flags
from these configs; the demo (``tokenweight.demo``) builds configs from its profile and calls
these functions.
"""

from __future__ import annotations

from tokenweight._lazy import lazy_exports

_EXPORTS = {
    "PrepareConfig": "tokenweight.stages.prepare",
    "PrepareResult": "tokenweight.stages.prepare",
    "ScoreConfig": "tokenweight.stages.score",
    "ScoreResult": "tokenweight.stages.score",
    "SelectConfig": "tokenweight.stages.select",
    "SelectResult": "tokenweight.stages.select",
    "PretrainConfig": "tokenweight.stages.pretrain",
    "TrainConfig": "tokenweight.stages.train",
    "RunResult": "tokenweight.stages.runs",
    "EvalConfig": "tokenweight.stages.evaluate",
    "EvalResult": "tokenweight.stages.evaluate",
    "ReportConfig": "tokenweight.stages.report",
    "ReportResult": "tokenweight.stages.report",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
