"""Stage ``report``: an evaluation and the training runs behind it -> a report folder.

Reads the ``results.json`` of an evaluation (:func:`tokenweight.stages.evaluate.evaluate`) and the
run folders of the evaluated models (their ``run_config.json``, ``summary.json`` and ``log.jsonl``:
scheme, scorer, seed, training curve), and writes ``report.md``, a self-contained ``index.html``,
``results.json`` and the figures (docs/REPORT.md). A run's name is its folder name, which must be
a model name of the evaluation; runs that differ only in their seed (``NAME-seedK``) are grouped.
With ``heatmap_model`` (and optionally a frozen ``heatmap_scorer``) the report also shows the
weights of every scheme on one held-out sequence of ``heatmap_data``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenweight.config import StageConfig, check_int, check_required, option
from tokenweight.errors import UsageError

__all__ = ["ReportConfig", "ReportResult", "report"]

_SEED = re.compile(r"^(?P<label>.+)-seed(?P<seed>\d+)$")


@dataclass
class ReportConfig(StageConfig):
    """Options of ``tokenweight report``."""

    runs: list[str] = option(
        factory=list, help="run folders (tokenweight train) of the evaluated models", positional=True, metavar="RUN"
    )
    evaluation: str | None = option(None, "results.json of tokenweight eval, or its folder", metavar="FILE|DIR")
    base: str | None = option("base", "the reference model's name in the evaluation (none: no reference)")
    out: str = option("runs/report", "report folder", metavar="DIR")
    heatmap_model: str | None = option(None, "model whose long-context NLL the token heat map shows", metavar="PATH")
    heatmap_scorer: str | None = option(
        None, "frozen short-context scorer of the heat map (none: self-scoring)", metavar="PATH"
    )
    heatmap_data: str | None = option(
        None, "prepared folder: the heat map shows one of its validation sequences", metavar="DIR"
    )
    window: int | None = option(None, "short context w of the heat map and the tables (none: the runs' window)")
    schemes: list[str] | None = option(None, "weighting schemes of the heat map (none: the runs' schemes)")
    settings: dict = option(factory=dict, help="settings recorded in the report (Python and YAML)", cli=False)
    machine: dict | None = option(None, "machine description recorded in the report", cli=False)

    def validate(self) -> None:
        check_required(self, "evaluation", usage="tokenweight report RUN ... --evaluation EVAL_DIR --out DIR")
        check_int(self, "window", 2, optional=True)
        if self.heatmap_model is not None and self.heatmap_data is None:
            raise ValueError("heatmap_data is required with --heatmap-model: pass the prepared folder to draw from")


@dataclass
class ReportResult:
    out: Path
    results: dict

    @property
    def index(self) -> Path:
        return self.out / "index.html"


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{what} {str(path)!r} does not exist: {_FIX[what]}") from None
    except ValueError as e:
        raise UsageError(f"{what} {str(path)!r} is not valid JSON ({e}): rerun the stage that wrote it") from None


_FIX = {
    "evaluation": "pass the results.json of tokenweight eval (or its folder)",
    "run config": "pass run folders written by tokenweight train",
    "run summary": "finish the run first (rerun the same tokenweight train command)",
}


def _run_record(folder: Path) -> dict:
    cfg = _read_json(folder / "run_config.json", "run config")
    m = _SEED.match(folder.name)
    return {
        "name": folder.name,
        "label": m["label"] if m else folder.name,
        "scheme": cfg.get("scheme", "uniform"),
        "scorer": cfg.get("scorer", "none"),
        "seed": int(cfg.get("seed", int(m["seed"]) if m else 0)),
        "path": str(folder / "model"),
        "log_path": str(folder / "log.jsonl"),
        "train_summary": _read_json(folder / "summary.json", "run summary"),
        "n": cfg.get("n"),
        "window": cfg.get("window"),
    }


def report(config: ReportConfig) -> ReportResult:
    """Build the report folder ``config.out``; every file is written atomically."""
    from tokenweight.report import assemble_results, build_report
    from tokenweight.report.schema import SchemaError

    config.validate()
    ev_path = Path(config.evaluation)
    evaluation = _read_json(ev_path / "results.json" if ev_path.is_dir() else ev_path, "evaluation")
    runs = [_run_record(Path(r)) for r in config.runs]
    settings = dict(config.settings)
    window = config.window or settings.get("window") or next((r["window"] for r in runs if r["window"]), None)
    n = settings.get("n") or next((r["n"] for r in runs if r["n"]), None)
    if window is None or n is None:
        raise UsageError("the report needs the runs' n and window: pass run folders, or --window")
    settings.update(n=n, window=window)
    records = [{k: v for k, v in r.items() if k not in ("n", "window")} for r in runs]
    try:
        results = assemble_results(evaluation, config=settings, runs=records, base=config.base, machine=config.machine)
    except SchemaError as e:
        raise UsageError(f"cannot build the report: {e}") from None
    sample = (
        _heatmap(config, window, sorted({r["scheme"] for r in runs} | set(config.schemes or [])))
        if config.heatmap_model
        else None
    )
    out = Path(config.out)
    build_report(results, out, sample=sample)
    return ReportResult(out, results)


def _heatmap(config: ReportConfig, window: int, schemes: list[str]) -> dict | None:
    """The heat map's numbers on the validation sequence of ``heatmap_data`` with the most episodes."""
    from tokenweight.data import load_prepared
    from tokenweight.identity import load_tokenizer
    from tokenweight.models import load_model
    from tokenweight.report.heatmap import compute_heatmap

    ds, manifest = load_prepared(config.heatmap_data)
    val = ds["validation"]
    if len(val) == 0:
        return None
    row = max(range(min(len(val), 64)), key=lambda i: len(val[i]["episodes"]))
    tok = load_tokenizer(Path(config.heatmap_data) / "tokenizer")
    text = tok.decode(val[row]["input_ids"], skip_special_tokens=True)
    model = load_model(config.heatmap_model)
    scorer = load_model(config.heatmap_scorer) if config.heatmap_scorer else None
    specs = list(config.schemes or schemes) or ["dense:0.75"]
    return compute_heatmap(model, scorer, tok, text, specs, window=window, max_tokens=int(manifest["n"]))
