"""The score cache's on-disk layout and identity: constants, shard ranges, stale-cache messages."""

from __future__ import annotations

import os
from pathlib import Path

from tokenweight.identity import (
    check_same_tokenizer,
    check_vocabulary,
)
from tokenweight.outputs import first_difference

FORMAT = 1
META, COMPLETE, SHARDS = "meta.json", "complete.json", "shards"
#: identity fields, in the order a mismatch is reported (the first one that differs is named)
IDENTITY = (
    "data",
    "split",
    "n",
    "n_sequences",
    "window",
    "stride",
    "dtype",
    "tokenizer",
    "scorer",
    "alignment",  # aligned caches only (a scorer with another tokenizer): the rule's version
    "scorer_tokenizer",  # aligned caches only: tokenizer_digest of the scorer's tokenizer
    "bos_token_id",
    "shard_size",
)
#: identity fields that say which data a cache holds the scores of: a cache that differs there
#: belongs to other data, and is not to be recomputed in place (:func:`_stale_message`)
DATA_FIELDS = ("data", "split", "n", "tokenizer")
_HINT = {
    "window": "--window",
    "stride": "--stride",
    "dtype": "--dtype",
    "split": "--split",
    "shard_size": "--shard-size",
}


# ----------------------------------------------------------------------------- defaults, layout


def default_shard_size(n: int) -> int:
    """Sequences per shard: about 256k tokens (1 MiB of float32 scores) per shard file."""
    return max(1, (1 << 18) // max(n, 1))


def shard_ranges(n_sequences: int, shard_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: shard i holds sequences ``start … stop-1``."""
    return [(a, min(a + shard_size, n_sequences)) for a in range(0, n_sequences, shard_size)]


def _shard_path(root: Path, i: int) -> Path:
    return root / SHARDS / f"{i:05d}.safetensors"


def _shard_ok(path: Path, fp: str, start: int, stop: int) -> bool:
    """True when ``path`` is a finished shard of this cache covering exactly ``[start, stop)``."""
    from safetensors import safe_open

    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            m = f.metadata() or {}
    except Exception:  # unreadable: recompute it (atomic writes make this a foreign file)
        return False
    return m.get("fingerprint") == fp and m.get("start") == str(start) and m.get("stop") == str(stop)


# ----------------------------------------------------------------------------- fingerprints


def check_scorer_tokenizer(scorer_tok, scorer_vocab_size: int, data_tok, scorer_name: str) -> None:
    """Refuse a scorer that cannot score the data's token ids with the data's meaning.

    Its embedding matrix must cover the data's vocabulary (a larger one is fine: padded
    matrices are common), and a tokenizer saved with it must be the same tokenizer
    (:func:`tokenweight.identity.check_same_tokenizer`: same vocabulary mapping and BOS/EOS/UNK).
    """
    check_vocabulary(
        scorer_vocab_size,
        data_tok,
        name=f"scorer {scorer_name!r}",
        tokenizer_name="the data's tokenizer",
        fix="score with a model trained with the data's tokenizer",
    )
    if scorer_tok is not None:
        check_same_tokenizer(
            scorer_tok,
            data_tok,
            name=f"scorer {scorer_name!r}",
            ref_name="the data",
            fix="score with a model that shares the data's tokenizer",
        )


def identity_difference(have: dict, want: dict) -> str | None:
    """The first identity field (in ``IDENTITY`` order) present in ``want`` where ``have`` differs."""
    return first_difference(have, want, [k for k in IDENTITY if k in want])


def _stale_message(path: Path, have: dict, want: dict, who: str, data_path: str | os.PathLike | None = None) -> str:
    """The one line refusing the cache ``path`` (meta ``have``) for a caller that wants ``want``.

    A cache of other data (:data:`DATA_FIELDS`) is not to be recomputed in place (``--force``
    would overwrite that data's scores): the message names the data folder it was made for and
    ``data_path`` (the caller's data, when given) and says to score that into another folder --
    unless it was made for an earlier preparation of the same folder (:func:`_other_data`). Other
    settings (window, stride, ...) name the flag that makes a matching cache."""
    k = identity_difference(have, want)
    head = f"score cache {str(path)!r} was computed for {k} {have.get(k)!r} but {who} asks for {want[k]!r}"
    if k in DATA_FIELDS:
        which, replace = _other_data(have, k, data_path)
        if not replace:
            return (
                f"{head}: {which}: score this data into another folder "
                f"(`{_score_command(have, want, data_path)}`) and pass that folder instead"
            )
        return f"{head}: {which}: rerun `tokenweight score --out {path} --force` with the same --data and --scorer"
    fix = f"with {_HINT[k]} {want[k]}" if k in _HINT else "with the same --data and --scorer"
    return f"{head}: rerun `tokenweight score --out {path} --force` {fix}, or use a matching cache"


def _other_data(have: dict, k: str, data_path) -> tuple[str, bool]:
    """``(what the cache holds, whether replacing it loses nothing)`` for a cache (meta ``have``)
    that differs from the caller's data ``data_path`` (None: not known) in the field ``k``:
    ``"it holds the scores of --data 'A' (split 'train'), not of 'B'"``, or, when ``A`` is ``B``
    and ``k`` is not the split, the scores of an earlier preparation of that folder, which
    ``--force`` may replace."""
    made_for = have.get("data_path")
    if data_path is not None and made_for == str(Path(data_path).resolve()) and k != "split":
        return f"it holds the scores of an earlier preparation of --data {made_for!r}", True
    where = f"--data {made_for!r}" if made_for else "other data"
    this = repr(str(data_path)) if data_path is not None else "the data given"
    return f"it holds the scores of {where} (split {have.get('split')!r}), not of {this}", False


def _score_command(have: dict, want: dict, data_path) -> str:
    """``tokenweight score ...`` making a cache like ``have`` (its scorer) for ``want`` (split, window,
    stride) of the data ``data_path`` into a new folder."""
    import shlex

    def arg(v) -> str:
        return shlex.quote(str(v))

    parts = ["tokenweight score --data", arg(data_path) if data_path is not None else "DATA_DIR"]
    if have.get("scorer_path"):
        parts += ["--scorer", arg(have["scorer_path"])]
    split = want.get("split", have.get("split"))
    if split is not None and split != "train":
        parts += ["--split", arg(split)]
    for flag in ("window", "stride"):
        if want.get(flag, have.get(flag)) is not None:
            parts += [f"--{flag}", str(want.get(flag, have.get(flag)))]
    return " ".join([*parts, "--out NEW_DIR"])


def _shard_names(meta: dict) -> list[str]:
    return [f"{SHARDS}/{i:05d}.safetensors" for i in range(len(shard_ranges(meta["n_sequences"], meta["shard_size"])))]
