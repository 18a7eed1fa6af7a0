"""Reading a complete score cache: :class:`ScoreCache` (validated, memory-mapped) and :func:`verify`."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenweight.errors import UsageError
from tokenweight.io_utils import read_json_object
from tokenweight.scorecache.layout import (
    COMPLETE,
    FORMAT,
    IDENTITY,
    META,
    SHARDS,
    _shard_names,
    _shard_ok,
    _shard_path,
    _stale_message,
    identity_difference,
    shard_ranges,
)

# ----------------------------------------------------------------------------- reading


class ScoreCache:
    """A complete, validated score cache: ``read(indices) -> Tensor[len(indices), n-1]`` float32.

    Entry ``[r, j]`` is the short-context NLL of token ``j+1`` of sequence ``indices[r]`` of the
    cached split (0 past the sequence's end), aligned like ``token_nll``. Shards are memory-mapped
    and only the requested rows are read; the object pickles (for DataLoader workers).
    """

    _MAX_OPEN = 16

    def __init__(self, path: Path, meta: dict, checksums: dict | None = None):
        self.path, self.meta, self.checksums = Path(path), meta, checksums or {}
        self.n_sequences, self.n = int(meta["n_sequences"]), int(meta["n"])
        self.shard_size = int(meta["shard_size"])
        self._handles: OrderedDict = OrderedDict()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        expect: dict | None = None,
        who: str = "training",
        data_path: str | os.PathLike | None = None,
    ) -> ScoreCache:
        """Open the cache at ``path``; ``expect``: identity fields the caller requires (any of
        ``IDENTITY``). A missing, stale or incomplete cache raises ``UsageError`` (one line).
        ``data_path``: the caller's data folder, named when the cache holds other data's scores."""
        path = Path(path)
        if not (path / META).is_file():
            raise UsageError(
                f"{str(path)!r} is not a score cache (no {META}): create it with `tokenweight score --out {path}`"
            )
        meta = read_json_object(path / META) or {}
        if meta.get("format") != FORMAT:
            raise UsageError(
                f"score cache {str(path)!r} has format {meta.get('format')!r}, this version reads "
                f"{FORMAT}: recompute it with `tokenweight score --force`"
            )
        if expect:
            _require(path, meta, expect, who, data_path)
        ranges = shard_ranges(int(meta["n_sequences"]), int(meta["shard_size"]))
        done = read_json_object(path / COMPLETE)  # None when missing, or cut by a kill of an older version
        ok = [_shard_ok(_shard_path(path, i), meta["fingerprint"], *r) for i, r in enumerate(ranges)]
        sums = (done or {}).get("checksums") or {}
        if (
            not done
            or done.get("fingerprint") != meta["fingerprint"]
            or not all(ok)
            or set(sums) != set(_shard_names(meta))
        ):
            have = sum(ok)
            raise UsageError(
                f"score cache {str(path)!r} is incomplete ({have} of {len(ranges)} shards"
                f"{'' if sums or not all(ok) else ', no checksums'}): rerun `tokenweight score` with the same "
                "options to finish it"
            )
        return cls(path, meta, sums)

    def require(self, expect: dict, who: str = "training", data_path: str | os.PathLike | None = None) -> ScoreCache:
        """This cache, when its identity has every field of ``expect`` (as :meth:`open`'s
        ``expect``: for a caller that reads the cache's own window first); UsageError otherwise."""
        _require(self.path, self.meta, expect, who, data_path)
        return self

    def __len__(self) -> int:
        return self.n_sequences

    def __getstate__(self):
        return {"path": self.path, "meta": self.meta, "checksums": self.checksums}

    def __setstate__(self, state):
        self.__init__(state["path"], state["meta"], state.get("checksums"))

    def _handle(self, shard: int):
        """The open shard; the first time a process opens it, its bytes are checked against the
        sha256 in complete.json (a damaged shard is refused: one line naming it and the fix)."""
        from safetensors import safe_open

        from tokenweight.io_utils import check_file

        if shard in self._handles:
            self._handles.move_to_end(shard)
        else:
            path = _shard_path(self.path, shard)
            c = self.checksums.get(f"{SHARDS}/{path.name}")
            if c is not None:
                check_file(
                    path,
                    c["sha256"],
                    size=c.get("bytes"),
                    what="score cache shard",
                    fix=f"rerun `tokenweight score --out {self.path}` with the same options (it recomputes "
                    "damaged shards), or with --force",
                )
            self._handles[shard] = safe_open(str(path), framework="pt")
            while len(self._handles) > self._MAX_OPEN:
                self._handles.popitem(last=False)
        return self._handles[shard]

    def read(self, indices: Sequence[int] | Any):
        """Short-context NLL of the given sequences: ``[len(indices), n-1]`` float32 (CPU)."""
        import torch

        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1).tolist()
        out = torch.zeros(len(idx), max(self.n - 1, 0), dtype=torch.float32)
        for r, i in enumerate(idx):
            if not 0 <= i < self.n_sequences:
                raise UsageError(
                    f"score cache {str(self.path)!r} covers sequences 0..{self.n_sequences - 1} of split "
                    f"{self.meta['split']!r} but sequence {i} was asked for: rerun `tokenweight score "
                    "--force` without --max-sequences (or with a larger one)"
                )
            s, row = divmod(i, self.shard_size)
            got = self._handle(s).get_slice("nll")[row : row + 1][0]
            out[r, : got.shape[0]] = got  # a ragged cache's shard is as wide as its longest row
        return out


def verify(
    cache: ScoreCache,
    model,
    sequences: Sequence[Sequence[int]],
    indices: Sequence[int],
    batch_size: int | None = None,
    tokenizers: tuple | None = None,
    doc_lengths: Sequence[Sequence[int]] | None = None,
) -> float:
    """Recompute ``short_context_nll`` for ``sequences`` (dataset rows ``indices``) one at a time
    and return the largest absolute difference to the cache (nats). Batching differs from the
    cache's, so expect float rounding (~1e-6 in fp32), not 0. ``tokenizers``: ``(data's, scorer's)``
    for an aligned cache (a scorer with another tokenizer): recomputed with ``aligned_short_nll``.
    A cache of packed data (``packed`` in its identity) is recomputed per document: with the rows'
    ``doc_lengths``, or when None with those of the prepared folder it was computed from
    (``data_path`` and ``split`` of its meta.json)."""
    import torch

    from tokenweight.alignment import aligned_short_nll
    from tokenweight.scoring import short_context_nll

    got = cache.read(indices)
    worst = 0.0
    m = cache.meta
    if m.get("packed") and doc_lengths is None:
        doc_lengths = _packed_lengths(cache, indices)
    for r, seq in enumerate(sequences):
        if doc_lengths is not None:
            docs = [int(x) for x in doc_lengths[r]]
            ids = torch.tensor([list(seq)[: sum(docs)]], dtype=torch.long)
            ref = short_context_nll(
                model,
                ids,
                m["window"],
                m["stride"],
                bos_token_id=m["bos_token_id"],
                batch_size=batch_size,
                doc_lengths=[docs],
            )[0].cpu()
            worst = max(worst, float((got[r, : ref.shape[0]] - ref).abs().max()) if ref.numel() else 0.0)
            continue
        ids = torch.tensor([list(seq)], dtype=torch.long)
        if tokenizers is not None:
            ref = aligned_short_nll(model, [list(seq)], *tokenizers, m["window"], m["stride"], batch_size=batch_size)
            worst = max(worst, float((got[r, : ref.nll.shape[1]] - ref.nll[0]).abs().max()) if ref.nll.numel() else 0.0)
            continue
        ref = short_context_nll(
            model, ids, m["window"], m["stride"], bos_token_id=m["bos_token_id"], batch_size=batch_size
        )[0].cpu()
        worst = max(worst, float((got[r, : ref.shape[0]] - ref).abs().max()) if ref.numel() else 0.0)
    return worst


def _packed_lengths(cache: ScoreCache, indices: Sequence[int]) -> list[list[int]]:
    """The ``doc_lengths`` of rows ``indices`` of the prepared folder a packed cache was computed from."""
    from tokenweight.data import load_prepared

    dsd, manifest = load_prepared(cache.meta["data_path"])
    split = dsd[cache.meta["split"]]
    if manifest.get("fingerprint") != cache.meta.get("data") or "doc_lengths" not in split.column_names:
        raise UsageError(
            f"score cache {str(cache.path)!r} holds packed scores but {cache.meta['data_path']!r} is no longer the "
            "packed data it was computed from: pass its doc_lengths to verify"
        )
    return list(split.select([int(i) for i in indices])["doc_lengths"])


def _require(path: Path, meta: dict, expect: dict, who: str, data_path) -> None:
    """The one check of a cache's identity against what its reader requires (one line when stale)."""
    if unknown := sorted(set(expect) - set(IDENTITY)):
        raise ValueError(f"expect has unknown field(s) {unknown}: valid fields are {', '.join(IDENTITY)}")
    if identity_difference(meta, expect):
        raise UsageError(_stale_message(path, meta, expect, who, data_path))
