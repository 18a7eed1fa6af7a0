"""Stage ``select``: keep the part of a prepared folder whose text needs long context the most.

Every row of ``data``'s train split is scored by a model (``scorer``: a model that reads the
data's full rows) with a long-vs-short contrast (``method``, :mod:`tokenweight.data.selection`:
LongFilter's KL, or the mean ``|d|`` of the paper's scores), documents (or rows) are ranked by the
mean score of their targets, and the top ``keep`` share becomes the train split of the prepared
folder ``out`` (validation and tokenizer unchanged; ``selection.json`` lists every unit's score).

The output protocol of every stage (:mod:`tokenweight.outputs`): the same call continues an
interrupted selection (its row scores are kept in shards, docs/DATA.md "Selection") and is a no-op
on a complete one; other settings are refused in one line unless ``force``, which replaces the
folder once the new one is complete. A new ``keep`` or ``unit`` reuses the row scores.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from tokenweight.config import RuntimeOptions, StageConfig, check_choice, check_float, check_int, check_required, option
from tokenweight.data.selection import METHODS, UNITS
from tokenweight.errors import UsageError

__all__ = ["SelectConfig", "SelectResult", "select"]


@dataclass
class SelectConfig(RuntimeOptions, StageConfig):
    """Options of ``tokenweight select`` (the runtime options: :class:`tokenweight.config.RuntimeOptions`)."""

    data: str | None = option(None, "prepared data folder to select from (tokenweight prepare)", metavar="DIR")
    scorer: str | None = option(
        None, "model that scores the rows at full length and in short windows (folder or hub id)", metavar="PATH|ID"
    )
    out: str | None = option(None, "the new prepared folder", metavar="DIR")
    method: str = option(
        "longfilter",
        "per-target score: longfilter (KL of the long- to the short-context prediction, LongFilter) or mean_abs_d "
        "(|L_long - L_short|, the paper's scores); a unit's score is the mean over its targets",
        choices=METHODS,
    )
    keep: float = option(0.5, "share of the units kept (the top ones by score), 0 < keep <= 1")
    unit: str = option("document", "what is kept or dropped whole: a document (all its rows) or a row", choices=UNITS)
    window: int = option(256, "short context w in tokens")
    stride: int | None = option(None, "window stride s, 1 <= s < w (none: (1 - w/n)·w, docs/METHOD.md)")
    batch_size: int | None = option(None, "windows per forward pass (none: about 16k tokens per pass)")
    shard_size: int = option(64, "rows scored per shard, the unit of resuming")
    force: bool = option(False, "replace a selection made with other settings (the old one stays until done)")

    def validate(self) -> None:
        check_required(self, "data", "scorer", "out", usage="tokenweight select --data DIR --scorer MODEL --out DIR")
        check_choice(self, "method")
        check_choice(self, "unit")
        check_float(self, "keep", low=0, low_open=True, high=1)
        check_int(self, "window", 2)
        check_int(self, "stride", 1, high=self.window - 1, optional=True)
        check_int(self, "batch_size", 1, optional=True)
        check_int(self, "shard_size", 1)
        self.validate_runtime()


@dataclass
class SelectResult:
    out: str
    units: int  # documents (or rows) ranked
    kept: int  # of them kept
    rows: int  # train rows kept
    tokens: int  # train tokens kept
    source_tokens: int  # train tokens of the data
    already_done: bool = False

    def line(self) -> str:
        if self.already_done:
            return f"{self.out}: up to date ({self.kept} of {self.units} units); --force to redo"
        share = self.tokens / self.source_tokens if self.source_tokens else 0.0
        return (
            f"{self.out}: kept {self.kept} of {self.units} units, {self.rows} rows / {self.tokens} tokens "
            f"({share:.1%} of the train tokens)"
        )


def select(config: SelectConfig) -> SelectResult:
    """Write (or continue, or find complete) the selected prepared folder ``config.out``."""
    from tokenweight.data import load_prepared
    from tokenweight.data.selection import (
        dumps,
        long_episodes,
        rank,
        read_selected,
        row_scores,
        score_dir,
        scored_rows,
        write_selected,
    )
    from tokenweight.identity import check_model_tokenizer, input_identity, load_tokenizer
    from tokenweight.outputs import check_not_file, first_difference, foreign_output, other_settings, output_lock
    from tokenweight.train.setup import quiet_progress_bars
    from tokenweight.windows import resolve_stride

    config.check()
    data, out = Path(config.data).expanduser(), Path(config.out).expanduser()
    if out.resolve() == data.resolve():
        raise UsageError(f"--out {str(out)!r} is the data folder: pass a new folder for the selection")
    check_not_file(out, "a selection")
    dsd, manifest = load_prepared(data)
    train = dsd["train"]
    if len(train) == 0:
        raise UsageError(f"prepared data {str(data)!r} has no training sequences: prepare more data")
    if "doc_lengths" in train.column_names:
        raise UsageError(
            f"prepared data {str(data)!r} is packed (prepare --pack): select from the unpacked folder, then pack"
        )
    n = int(manifest["n"])
    try:
        stride = resolve_stride(n, config.window, config.stride)
    except ValueError as e:
        raise UsageError(f"--window/--stride: {e}") from None
    if n <= config.window:
        raise UsageError(f"the data's rows (n = {n}) fit in one window of {config.window}: pass a smaller --window")
    scores = {  # what the row scores depend on (a new keep or unit reuses them)
        "format": "tokenweight.selection/1",
        "data": manifest.get("fingerprint"),
        "scorer": input_identity("model", config.scorer),
        "method": config.method,
        "window": config.window,
        "stride": stride,
        "dtype": config.runtime().dtype,
    }
    selected = dumps({**scores, "keep": config.keep, "unit": config.unit})
    with output_lock(out):
        old = read_selected(out)
        if old is not None and old == selected and not config.force:
            return _result(out, already_done=True)
        if old is not None and not config.force:
            key = first_difference(old, selected)
            raise other_settings(out, "was selected", key, old.get(key), selected.get(key))
        if old is None and out.is_dir() and any(out.iterdir()):
            raise foreign_output(out, "a selection")
        quiet_progress_bars()
        tokenizer = load_tokenizer(data / "tokenizer")
        check_model_tokenizer(config.scorer, tokenizer, ref_name=f"the data {str(data)!r}")
        model = config.runtime().load(config.scorer)

        def compute(a: int, b: int):
            rows = train[a:b]["input_ids"]
            return row_scores(
                model, rows, config.method, config.window, stride, tokenizer.bos_token_id, config.batch_size
            )

        work = score_dir(out)
        sums, counts = scored_rows(work, dumps(scores), len(train), config.shard_size, compute)
        far = long_episodes(train["episodes"], config.window)
        kept, records = rank(train["doc_id"], sums, counts, config.keep, config.unit, far)
        write_selected(data, train, out, kept, manifest, selected, records)
        shutil.rmtree(work, ignore_errors=True)  # complete: the row scores are in selection.json's units
    return _result(out)


def _result(out: Path, already_done: bool = False) -> SelectResult:
    doc = json.loads((out / "selection.json").read_text(encoding="utf-8"))
    counts = {k: int(doc[k]) for k in ("rows", "tokens", "source_tokens")}
    units, kept = len(doc["units"]), sum(u["kept"] for u in doc["units"])
    return SelectResult(out=str(out), units=units, kept=kept, **counts, already_done=already_done)
