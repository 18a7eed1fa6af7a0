"""Stage ``report``: an evaluation and the training runs behind it -> a report folder.

Reads the ``results.json`` of an evaluation (:func:`tokenweight.stages.evaluate.evaluate`) and the
run folders of the evaluated models (their ``run_config.json``, ``summary.json`` and ``log.jsonl``:
scheme, scorer, seed, training curve), and writes ``report.md``, a self-contained ``index.html``,
``results.json`` and the figures (docs/REPORT.md). A run's name is its folder name; its model in
the evaluation is the one of that name, else the one evaluated from ``RUN/model`` (a plain
``tokenweight eval`` without ``--names``); runs that differ only in their seed (``NAME-seedK``) are
grouped. Every other evaluated model but the base is reported as a model of its own, so an
evaluation reports without any run folder too (models only).
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
    base: str | None = option(
        "auto",
        "the reference model's name in the evaluation; auto: 'base' when there is one, else the one evaluated "
        "model that is not a run, else (no runs) the first model; none: no reference",
    )
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
    compare: list[str] = option(
        factory=list,
        help="further seed-paired comparisons LABEL:AGAINST between two groups of runs (a group's label is its "
        "folder name without -seedK), judged in the verdict like the comparisons with uniform",
        metavar="LABEL:AGAINST",
    )
    settings: dict = option(factory=dict, help="settings recorded in the report (Python and YAML)", cli=False)
    machine: dict | None = option(None, "machine description recorded in the report", cli=False)

    def validate(self) -> None:
        check_required(self, "evaluation", usage="tokenweight report RUN ... --evaluation EVAL_DIR --out DIR")
        check_int(self, "window", 2, optional=True)
        for pair in self.compare:
            if not isinstance(pair, str) or len(pair.split(":")) != 2 or not all(pair.split(":")):
                raise ValueError(f"compare {pair!r} must be LABEL:AGAINST, two run labels, e.g. dense-small:dense")
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
        "data": cfg.get("data"),
    }


def report(config: ReportConfig) -> ReportResult:
    """Build the report folder ``config.out``; every file is written atomically."""
    from tokenweight.report import assemble_results, build_report
    from tokenweight.report.schema import SchemaError

    config.check()
    ev_path = Path(config.evaluation)
    ev_file = ev_path / "results.json" if ev_path.is_dir() else ev_path
    evaluation = _read_json(ev_file, "evaluation")
    if not isinstance(evaluation, dict) or not isinstance(evaluation.get("models"), list) or not evaluation["models"]:
        raise UsageError(f"evaluation {str(ev_file)!r} has no models: pass the results.json of tokenweight eval")
    runs = [_run_record(Path(r)) for r in config.runs]
    evaluation = _match_runs(evaluation, runs, ev_file)
    base = _base_name(config.base, evaluation, runs)
    run_names = {r["name"] for r in runs}
    others = [
        {"name": m["name"], "path": m.get("source")}
        for m in evaluation["models"]
        if m["name"] != base and m["name"] not in run_names
    ]
    settings = dict(config.settings)
    ev_cfg, ev_data = evaluation.get("config") or {}, evaluation.get("data") or {}
    window = config.window or settings.get("window") or next((r["window"] for r in runs if r["window"]), None)
    window = window or ev_cfg.get("window")
    n = settings.get("n") or next((r["n"] for r in runs if r["n"]), None) or ev_data.get("n")
    n = n or max([int(x) for x in ev_cfg.get("lengths") or []] + [int(window or 0)]) or None
    if window is None or n is None:
        raise UsageError("the report needs the long context n and the window w: pass run folders, or --window")
    settings.update(n=max(int(n), int(window)), window=window)
    if config.compare:
        labels = {r["label"] for r in runs}
        missing = sorted({x for pair in config.compare for x in pair.split(":")} - labels)
        if missing:
            raise UsageError(
                f"--compare names run label(s) {', '.join(missing)} that no run has "
                f"(labels: {', '.join(sorted(labels))}): pass those runs' folders or fix the label"
            )
        settings["compare"] = [pair.split(":") for pair in config.compare]
    records = [{k: v for k, v in r.items() if k not in ("n", "window", "data")} for r in runs]
    try:
        results = assemble_results(
            evaluation, config=settings, runs=records, base=base, models=others, machine=config.machine
        )
    except SchemaError as e:
        raise UsageError(f"cannot build the report: {e}") from None
    data = next((r["data"] for r in runs if r.get("data")), None)
    if data is not None and Path(data, "manifest.json").is_file():  # the runs' training data
        results["exposure"] = _exposure(Path(data), int(window))
    selected = next(
        (Path(r["data"]) for r in runs if r.get("data") and Path(r["data"], "selection.json").is_file()), None
    )
    if selected is not None:  # a run trained on a selection: which documents carry the long-range signal
        from tokenweight.data.selection import summary

        results["selection"] = {"label": selected.name, **summary(_read_json(selected / "selection.json", "selection"))}
    sample = (
        _heatmap(config, window, sorted({r["scheme"] for r in runs} | set(config.schemes or [])))
        if config.heatmap_model
        else None
    )
    from tokenweight.io_utils import clean_folder_temporaries
    from tokenweight.outputs import output_lock

    out = Path(config.out)
    with output_lock(out):
        clean_folder_temporaries(out)  # what a report killed mid-write left: every file is written atomically
        return ReportResult(out, build_report(results, out, sample=sample))


def _exposure(data: Path, window: int) -> dict:
    """The exposure histogram of a prepared folder's training split (every document of a packed
    row on its own; tokenweight.exposure), with the tail ``e >= w``'s share of the targets."""
    from tokenweight.data import load_prepared
    from tokenweight.exposure import length_histogram

    train = load_prepared(data)[0]["train"]
    if "doc_lengths" in train.column_names:
        docs = [x for row in train["doc_lengths"] for x in row]
    else:
        docs = [len(x) for x in train["input_ids"]]
    buckets = length_histogram(docs)
    tail = sum(max(0, length - window) for length in docs)  # targets e = w .. L-1 of every document
    total = sum(buckets.values()) or 1
    buckets = {str(k): v for k, v in buckets.items()}  # JSON object keys
    return {"label": data.name, "tail": window, "base": 2.0, "buckets": buckets, "tail_share": tail / total}


def _match_runs(evaluation: dict, runs: list[dict], ev_file: Path) -> dict:
    """The evaluation with each run's model entry named as the run (its folder name).

    A run is matched by name (``tokenweight eval --names`` gave it its folder's name), else by
    path: the model that was evaluated from ``RUN/model`` (or ``RUN``), so that a plain
    ``tokenweight eval runs/a/model runs/b/model`` (names ``model#1``, ``model#2``) reports too.
    """
    models = [dict(m) for m in evaluation["models"]]
    names = [m["name"] for m in models]
    for run in runs:
        if run["name"] in names:
            continue
        folder = Path(run["path"]).parent
        hits = [
            i
            for i, m in enumerate(models)
            if m.get("source") and _same_path(m["source"], (folder / "model", folder)) and m["name"] not in _names(runs)
        ]
        if len(hits) != 1:
            raise UsageError(
                f"run {run['name']!r} is not a model of the evaluation {str(ev_file)!r} (models: {', '.join(names)}): "
                f"evaluate {folder / 'model'} too, or name it {run['name']!r} with tokenweight eval --names"
            )
        models[hits[0]]["name"] = names[hits[0]] = run["name"]
    return {**evaluation, "models": models}


def _names(runs: list[dict]) -> set[str]:
    return {r["name"] for r in runs}


def _same_path(source: str, candidates) -> bool:
    try:
        resolved = Path(source).expanduser().resolve()
    except (OSError, RuntimeError):
        return False
    return any(resolved == Path(c).expanduser().resolve() for c in candidates)


def _base_name(base: str | None, evaluation: dict, runs: list[dict]) -> str | None:
    """The reference model's name (``--base``; ``auto``: see :class:`ReportConfig`)."""
    names = [m["name"] for m in evaluation["models"]]
    if base != "auto":
        if base is not None and base not in names:
            raise UsageError(f"--base {base!r} is not a model of the evaluation (models: {', '.join(names)})")
        return base
    not_runs = [n for n in names if n not in _names(runs)]
    if "base" in not_runs:
        return "base"
    if runs:
        return not_runs[0] if len(not_runs) == 1 else None
    return names[0]


def _heatmap(config: ReportConfig, window: int, schemes: list[str]) -> dict | None:
    """The heat map's numbers on the validation sequence of ``heatmap_data`` with the most episodes."""
    from tokenweight.data import load_prepared
    from tokenweight.identity import has_tokenizer, load_tokenizer
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
    # a scorer with its own (other) tokenizer is aligned by characters, as its score cache was
    own = load_tokenizer(config.heatmap_scorer) if scorer is not None and has_tokenizer(config.heatmap_scorer) else None
    if "doc_lengths" in val.column_names:  # a packed row: its documents' boundaries, not its decoded text
        from tokenweight.report.heatmap import compute_heatmap_ids

        ids = list(val[row]["input_ids"])
        lengths = [int(x) for x in val[row]["doc_lengths"]]
        return compute_heatmap_ids(model, scorer, tok, ids[: sum(lengths)], specs, window, None, own, lengths)
    return compute_heatmap(
        model, scorer, tok, text, specs, window=window, max_tokens=int(manifest["n"]), scorer_tokenizer=own
    )
