"""Stage ``score``: short-context NLL of every training sequence under a frozen scorer.

Computed once into a sharded, fingerprinted cache (``tokenweight.scorecache``) that
:func:`tokenweight.stages.train.train` reads with ``scorer="frozen"``. Interrupted at any moment,
the same call continues: finished shards are kept. Under ``torchrun``/``accelerate launch`` every
rank calls it and scores shards ``rank, rank + K, ...``.

With ``dataset`` instead of ``data`` (any Hugging Face dataset of token ids: a saved folder or a
hub id), the scores become a token-aligned column of that dataset, saved to ``OUT/dataset``
(:func:`tokenweight.scorecache.add_short_nll`; docs/SCORING.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tokenweight.config import RuntimeOptions, StageConfig, check_choice, check_int, check_required, option

__all__ = ["ScoreConfig", "ScoreResult", "score"]

#: ``align`` values (tokenweight.scorecache.compute.ALIGN_CHOICES, not imported here: the config loads without torch)
ALIGN_CHOICES = ("auto", "always", "never")
#: largest |cache - recomputation| accepted by ``verify`` in float32 (nats); batching changes rounding
VERIFY_TOL_FP32 = 1e-3


@dataclass
class ScoreConfig(RuntimeOptions, StageConfig):
    """Options of ``tokenweight score`` (``dtype`` is the scorer's compute dtype: scores are stored as
    float32; the runtime options are :class:`tokenweight.config.RuntimeOptions`)."""

    data: str | None = option(None, "prepared data folder (tokenweight prepare)", metavar="DIR")
    dataset: str | None = option(
        None,
        "instead of --data: any dataset of token ids (a folder saved with save_to_disk, a prepared folder or a hub "
        "id); its rows get a token-aligned column --column, saved to OUT/dataset",
        metavar="DIR|ID",
    )
    column: str = option("short_nll", "with --dataset: name of the new column")
    input_column: str = option("input_ids", "with --dataset: the column of token ids")
    scorer: str | None = option(
        None,
        "frozen scorer: model folder or hub id (another tokenizer than the data's: see --align)",
        metavar="PATH|ID",
    )
    out: str | None = option(None, "score cache folder to create or continue", metavar="DIR")
    window: int = option(256, "short context w in tokens")
    stride: int | None = option(
        None, "window stride s, 1 <= s < w (none: (1 - w/n)·w, docs/METHOD.md; with --dataset: round(0.75·w))"
    )
    batch_size: int | None = option(None, "windows per forward pass (none: about 16k tokens per pass)")
    split: str = option("train", "split of the prepared data to score")
    max_sequences: int | None = option(None, "score only the first N sequences")
    shard_size: int | None = option(None, "sequences per shard file, the unit of resuming (none: ~256k tokens)")
    verify: int = option(0, "afterwards, recompute K sequences directly and report the largest difference")
    align: str = option(
        "auto",
        "a scorer with another tokenizer: its NLL is moved onto the data's tokens by character overlap "
        "(docs/SCORING.md); auto = when the tokenizers differ, always = also when equal (same scores), "
        "never = refuse another tokenizer",
        choices=ALIGN_CHOICES,
    )
    force: bool = option(False, "recompute a cache made with other settings instead of refusing it")

    def validate(self) -> None:
        usage = "tokenweight score --data DIR (or --dataset DIR|ID) --scorer MODEL --out DIR"
        if self.data and self.dataset:
            raise ValueError(f"data and dataset were both given: pass one of them ({usage})")
        check_required(self, "dataset" if self.dataset else "data", "scorer", "out", usage=usage)
        if self.dataset:
            for name, given in (("verify", self.verify), ("max_sequences", self.max_sequences is not None)):
                if given:
                    raise ValueError(f"{name} applies to --data only: drop it with --dataset (every row is scored)")
            if self.align == "always":
                raise ValueError("align always applies to --data only: with --dataset the scorer shares its tokenizer")
            check_required(self, "column", "input_column")
        check_int(self, "window", 2)
        check_int(self, "stride", 1, high=self.window - 1, optional=True)
        for name in ("batch_size", "max_sequences", "shard_size"):
            check_int(self, name, 1, optional=True)
        check_int(self, "verify", 0)
        check_choice(self, "align")
        self.validate_runtime()


#: the fields of :class:`ScoreResult` that both kinds of ``score`` call return as they are
_COUNTS = ("out", "sequences", "computed", "cached", "tokens", "seconds", "tokens_per_s", "world_size")


@dataclass
class ScoreResult:
    """What one ``score`` call did (the same on every rank)."""

    out: str
    sequences: int
    computed: int
    cached: int
    tokens: int
    seconds: float
    tokens_per_s: float
    world_size: int
    meta: dict = field(default_factory=dict)  # the cache's meta.json: its identity (window, stride, ...)
    aligned: bool = False  # the scorer has another tokenizer: its NLL was moved onto the data's tokens
    decoded_per_token: int = 0  # sequences (of those computed now) aligned by decoding token by token
    verified: int = 0
    max_difference: float | None = None
    tolerance: float | None = None  # float32 only: other dtypes are not held to a bound
    dataset: str | None = None  # with --dataset: OUT/dataset, the dataset with its new column
    column: str | None = None  # with --dataset: the column's name
    dataset_tokens: int = 0  # with --dataset: tokens of every row (also those cached before)
    joined: bool = False  # with --dataset: OUT/dataset was written by this call

    @property
    def verify_failed(self) -> bool:
        return None not in (self.max_difference, self.tolerance) and self.max_difference > self.tolerance


def score(config: ScoreConfig) -> ScoreResult:
    """Create, continue or find complete the score cache ``config.out``; optionally verify it."""
    from tokenweight.outputs import launch_rank
    from tokenweight.scorecache import compute_scores
    from tokenweight.train.setup import quiet_progress_bars

    config.check()
    runtime = config.runtime()
    quiet_progress_bars()
    if config.dataset:
        return _score_dataset(config, runtime)
    s = compute_scores(
        config.out,
        config.data,
        config.scorer,
        window=config.window,
        stride=config.stride,
        split=config.split,
        batch_size=config.batch_size,
        dtype=runtime.dtype,
        device=runtime.device,
        attn_implementation=runtime.attn_implementation,
        shard_size=config.shard_size,
        max_sequences=config.max_sequences,
        force=config.force,
        align=config.align,
    )
    meta = json.loads((Path(config.out) / "meta.json").read_text(encoding="utf-8"))
    result = ScoreResult(**{k: s[k] for k in (*_COUNTS, "aligned", "decoded_per_token")}, meta=meta)
    if config.verify and launch_rank() == 0:
        result.verified, result.max_difference = _verify(config)
        result.tolerance = VERIFY_TOL_FP32 if config.dtype == "float32" else None
    return result


def _score_dataset(config: ScoreConfig, runtime) -> ScoreResult:
    """``--dataset``: the scores as a column of the dataset (:func:`tokenweight.scorecache.add_short_nll`)."""
    from tokenweight.scorecache.column import _add_short_nll

    _, s = _add_short_nll(
        config.dataset,
        config.scorer,
        window=config.window,
        stride=config.stride,
        out=config.out,
        column=config.column,
        input_column=config.input_column,
        bos_token_id=None,
        batch_size=config.batch_size,
        dtype=runtime.dtype,
        device=runtime.device,
        force=config.force,
        split=config.split,
        shard_size=config.shard_size,
        attn_implementation=runtime.attn_implementation,
    )
    return ScoreResult(
        **{k: s[k] for k in _COUNTS},
        meta=s["meta"],
        dataset=s["dataset"],
        column=config.column,
        dataset_tokens=s["dataset_tokens"],
        joined=s["joined"],
    )


def _verify(config: ScoreConfig) -> tuple[int, float]:
    """Recompute ``config.verify`` sequences spread over the cache directly: (count, max |difference|)."""
    from tokenweight.data import load_prepared
    from tokenweight.scorecache import ScoreCache, verify

    cache = ScoreCache.open(config.out)
    k = min(config.verify, cache.n_sequences)
    indices = sorted({round(j * (cache.n_sequences - 1) / max(k - 1, 1)) for j in range(k)})
    picked = load_prepared(config.data)[0][config.split].select(indices)
    rows = picked["input_ids"]
    doc_lengths = picked["doc_lengths"] if "doc_lengths" in picked.column_names else None  # packed
    model = config.runtime().load(config.scorer)
    tokenizers = None
    if cache.meta.get("scorer_tokenizer") is not None:  # aligned: recompute through the same alignment
        from tokenweight.identity import load_tokenizer

        tokenizers = (load_tokenizer(Path(config.data) / "tokenizer"), load_tokenizer(config.scorer))
    worst = verify(
        cache, model, rows, indices, batch_size=config.batch_size, tokenizers=tokenizers, doc_lengths=doc_lengths
    )
    return len(indices), worst
