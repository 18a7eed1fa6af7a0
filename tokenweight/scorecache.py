"""Frozen short-context scores: computed once, cached on disk, resumable, multi-process.

With a *frozen* scorer (docs/METHOD.md), ``L_short`` does not change during training, so it is computed
once for the whole training split and read back by dataset index at every step. At the paper's
scale this is hours of GPU time, so the cache is built to survive kills and to split across GPUs:

Layout of a cache folder ``OUT/``::

    meta.json                      written first: identity of the scores (below) and the layout
    shards/00000.safetensors ...   shard i = sequences [i*K, min((i+1)*K, N)): "nll" [k, n-1]
                                   float32 and "lengths" [k] int32; its header repeats the cache
                                   fingerprint and its range, so a stray file is never mistaken
    complete.json                  written last, once every shard is present: the sha256 and size
                                   of every shard, checked when a process first reads the shard

Every file is written atomically (``tokenweight.io_utils``), so a killed run leaves only whole
shards; a rerun with the same options skips them (nothing recomputed, lost or duplicated) and
recomputes shards whose bytes differ from complete.json's checksums. One process writes a cache at a
time (``tokenweight.io_utils.output_lock``); ``force`` builds the new cache in the hidden sibling
``.OUT.force`` and moves it onto ``OUT`` when complete, so the old one stays usable until then. Under
``torchrun``/``accelerate launch`` shard ``i`` belongs to rank ``i % world_size``; rank 0 writes
``meta.json`` before and ``complete.json`` after a barrier. Batches never straddle shards, so the
numbers do not depend on how many processes computed them (bitwise, for fp32 on CPU).

Identity (``meta.json``; a cache whose identity differs from what a caller asks for is refused):
``data`` (fingerprint of the prepared folder's manifest), ``split``, ``n_sequences``, ``n``,
``tokenizer`` (digest of the vocabulary and special tokens), ``scorer`` (digest of the scorer's
``config.json`` and weight files: whole files up to 32 MiB, above that the size and 32 blocks of
1 MiB spread evenly over the file -- fine-tuning changes every block, yet at most 32 MiB per file is
read), ``window``, ``stride``, ``dtype``, ``bos_token_id``, ``shard_size``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from tokenweight.errors import UsageError
from tokenweight.identity import (
    check_same_tokenizer,
    has_tokenizer,
    is_hub_id,
    load_tokenizer,
    model_digest,
    resolve_local,
    tokenizer_digest,
)
from tokenweight.io_utils import atomic_write_bytes, atomic_write_json, fingerprint
from tokenweight.scoring import default_stride, windows_per_pass  # noqa: F401 (default_stride: re-exported)

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
    "bos_token_id",
    "shard_size",
)
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
    need = len(data_tok)
    if scorer_vocab_size < need:
        raise UsageError(
            f"scorer {scorer_name!r} has a vocabulary of {scorer_vocab_size} tokens but the data's "
            f"tokenizer has {need}: score with a model trained with the data's tokenizer"
        )
    if scorer_tok is not None:
        check_same_tokenizer(
            scorer_tok,
            data_tok,
            name=f"scorer {scorer_name!r}",
            ref_name="the data",
            fix="score with a model that shares the data's tokenizer",
        )


def _first_difference(have: dict, want: dict) -> str | None:
    """The first identity field (in ``IDENTITY`` order) present in ``want`` where ``have`` differs."""
    return next((k for k in IDENTITY if k in want and have.get(k) != want[k]), None)


def _stale_message(path: Path, have: dict, want: dict, who: str) -> str:
    k = _first_difference(have, want)
    fix = f"with {_HINT[k]} {want[k]}" if k in _HINT else "with the same --data and --scorer"
    return (
        f"score cache {str(path)!r} was computed for {k} {have.get(k)!r} but {who} asks for {want[k]!r}: "
        f"rerun `tokenweight score --out {path} --force` {fix}, or use a matching cache"
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
    def open(cls, path: str | os.PathLike, expect: dict | None = None, who: str = "training") -> ScoreCache:
        """Open the cache at ``path``; ``expect``: identity fields the caller requires (any of
        ``IDENTITY``). A missing, stale or incomplete cache raises ``UsageError`` (one line)."""
        path = Path(path)
        if expect and (unknown := sorted(set(expect) - set(IDENTITY))):
            raise ValueError(f"expect has unknown field(s) {unknown}: valid fields are {', '.join(IDENTITY)}")
        if not (path / META).is_file():
            raise UsageError(
                f"{str(path)!r} is not a score cache (no {META}): create it with `tokenweight score --out {path}`"
            )
        meta = _read_json(path / META) or {}
        if meta.get("format") != FORMAT:
            raise UsageError(
                f"score cache {str(path)!r} has format {meta.get('format')!r}, this version reads "
                f"{FORMAT}: recompute it with `tokenweight score --force`"
            )
        if expect and _first_difference(meta, expect):
            raise UsageError(_stale_message(path, meta, expect, who))
        ranges = shard_ranges(int(meta["n_sequences"]), int(meta["shard_size"]))
        done = _read_json(path / COMPLETE)  # None when missing, or cut by a kill of an older version
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
        out = torch.empty(len(idx), max(self.n - 1, 0), dtype=torch.float32)
        for r, i in enumerate(idx):
            if not 0 <= i < self.n_sequences:
                raise UsageError(
                    f"score cache {str(self.path)!r} covers sequences 0..{self.n_sequences - 1} of split "
                    f"{self.meta['split']!r} but sequence {i} was asked for: rerun `tokenweight score "
                    "--force` without --max-sequences (or with a larger one)"
                )
            s, row = divmod(i, self.shard_size)
            out[r] = self._handle(s).get_slice("nll")[row : row + 1][0]
        return out


def verify(
    cache: ScoreCache, model, sequences: Sequence[Sequence[int]], indices: Sequence[int], batch_size: int | None = None
) -> float:
    """Recompute ``short_context_nll`` for ``sequences`` (dataset rows ``indices``) one at a time
    and return the largest absolute difference to the cache (nats). Batching differs from the
    cache's, so expect float rounding (~1e-6 in fp32), not 0."""
    import torch

    from tokenweight.scoring import short_context_nll

    got = cache.read(indices)
    worst = 0.0
    m = cache.meta
    for r, seq in enumerate(sequences):
        ids = torch.tensor([list(seq)], dtype=torch.long)
        ref = short_context_nll(
            model, ids, m["window"], m["stride"], bos_token_id=m["bos_token_id"], batch_size=batch_size
        )[0].cpu()
        worst = max(worst, float((got[r, : ref.shape[0]] - ref).abs().max()) if ref.numel() else 0.0)
    return worst


# ----------------------------------------------------------------------------- computing


def _dist_setup(device: str) -> tuple[int, int, bool]:
    """(rank, world_size, initialised_here) from torchrun/accelerate's env (RANK, WORLD_SIZE)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, False
    import torch
    import torch.distributed as dist

    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    # Ranks wait for each other at the end: the default 30 min timeout is too short for big runs.
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=timedelta(hours=48))
    return dist.get_rank(), dist.get_world_size(), True


def _from_rank0(value, world: int):
    """Rank 0's ``value`` on every rank (an error message included, so all ranks fail alike)."""
    if world == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def staging_dir(out: Path) -> Path:
    """Where ``force`` builds the new cache: the hidden sibling ``.NAME.force``, moved onto ``out``
    when complete (the old cache stays readable until then)."""
    return out.parent / f".{out.name}.force"


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _prepare_out(out: Path, meta: dict, force: bool) -> tuple[Path, bool]:
    """Rank 0, holding the lock: ``(folder to write, already complete)``.

    The folder is ``out``, or with ``force`` its staging sibling (a forced run killed earlier with
    the same identity is continued there; another one is discarded). Refuses a foreign or stale
    ``out`` unless ``force``; writes meta.json; drops temporaries of killed runs and
    :func:`_check_complete` drops shards whose bytes differ from complete.json's checksums.
    """
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file: pass a folder for the score cache")
    work = staging_dir(out) if force else out
    old = _read_json(work / META)
    stale = old is not None and (old.get("format") != FORMAT or old.get("fingerprint") != meta["fingerprint"])
    if not force:
        if old is None and out.is_dir() and any(p.name != SHARDS for p in out.iterdir()):
            raise UsageError(f"--out {str(out)!r} exists and is not a score cache: choose an empty or new folder")
        if stale:
            k = (_first_difference(old, meta) or "fingerprint") if old.get("format") == FORMAT else "format"
            raise UsageError(
                f"score cache {str(out)!r} holds scores for {k} {old.get(k)!r} but this run asks for "
                f"{meta.get(k, FORMAT)!r}: pass --force to recompute it (the old cache stays until the new one "
                "is complete), rerun with the same settings, or choose another --out"
            )
    elif stale or (old is None and work.exists()):
        shutil.rmtree(work)
        old = None
    work.mkdir(parents=True, exist_ok=True)
    if old is None:
        atomic_write_json(work / META, meta)
    for p in (work / SHARDS).glob(".*.tmp"):  # temporaries of a killed run
        p.unlink(missing_ok=True)
    return work, _check_complete(work, meta)


def _shard_names(meta: dict) -> list[str]:
    return [f"{SHARDS}/{i:05d}.safetensors" for i in range(len(shard_ranges(meta["n_sequences"], meta["shard_size"])))]


def _check_complete(work: Path, meta: dict) -> bool:
    """Whether ``work`` is a complete cache whose every shard has the bytes recorded in
    complete.json. Otherwise complete.json goes first (a kill then leaves an incomplete cache),
    then every damaged shard (so that it is recomputed); a complete.json without checksums (older
    versions) is rewritten with them. Reads every shard: cheap next to computing one."""
    from tokenweight.io_utils import sha256_file

    done = _read_json(work / COMPLETE)
    if done is None:
        return False
    sums = done.get("checksums") or {}
    bad = []
    for rel in _shard_names(meta):
        c, f = sums.get(rel), work / rel
        if c is not None and f.is_file() and (f.stat().st_size != c["bytes"] or sha256_file(f) != c["sha256"]):
            bad.append(f)
    if done.get("fingerprint") == meta["fingerprint"] and set(sums) == set(_shard_names(meta)) and not bad:
        return True
    (work / COMPLETE).unlink()
    for f in bad:
        f.unlink()
    return False


def _claim(out: Path, meta: dict, force: bool, rank: int, world: int, stack: contextlib.ExitStack) -> tuple[Path, bool]:
    """Every rank: ``(folder to write, already complete)``, decided by rank 0 under the output lock
    (held until ``stack`` closes); a refusal reaches every rank, so that all fail alike."""
    from tokenweight.io_utils import output_lock

    decided = None
    if rank == 0:
        try:
            stack.enter_context(output_lock(out))
            decided = _prepare_out(out, meta, force)
        except UsageError as e:
            decided = str(e)
    decided = _from_rank0(decided, world)
    if isinstance(decided, str):
        raise UsageError(decided)
    return decided


def _pad(rows: list, n: int):
    """Right-pad token lists to ``n``: (ids [b, n] long, mask [b, n] or None, lengths [b] int32)."""
    import torch

    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int32)
    ids = torch.zeros(len(rows), n, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
    mask = None if bool((lengths == n).all()) else (torch.arange(n)[None] < lengths[:, None]).long()
    return ids, mask, lengths


def _scorer_folder(scorer, data_tok, dtype: str, device: str):
    """(local folder of the scorer, the model if it had to be loaded to find the folder, else None).

    Refuses (UsageError) a scorer whose vocabulary or saved tokenizer differs from the data's
    before anything is computed or written. A hub id is loaded first (that fetches it into the HF
    cache) and then digested from its cached snapshot, like a local folder.
    """
    from transformers import AutoConfig

    from tokenweight.models import load_model

    model = None
    if is_hub_id(scorer):  # loading fetches it into the HF cache (UsageError when unreachable)
        model = load_model(scorer, dtype=dtype, device=device)
    folder = resolve_local(scorer, "scorer")  # UsageError for a missing path or a file
    if not (folder / "config.json").is_file():
        raise UsageError(f"scorer folder {str(scorer)!r} has no config.json: pass a folder saved with save_pretrained")
    vocab = getattr(AutoConfig.from_pretrained(folder).get_text_config(), "vocab_size", None) or 0
    check_scorer_tokenizer(load_tokenizer(folder) if has_tokenizer(folder) else None, vocab, data_tok, str(scorer))
    return folder, model


def _score_rows(
    model, rows: list, n: int, window: int, stride: int, bos: int | None, batch_size: int | None, bar, where: str
):
    """Short-context NLL of one shard's token lists: (nll [k, n-1] float32 CPU, lengths [k] int32).

    Sequences go to ``short_context_nll`` in groups of about four forward passes' worth of
    windows (enough to fill every pass); the grouping depends only on the shard, never on the
    process, which keeps multi-process results bitwise equal to single-process ones.
    """
    import torch

    from tokenweight.scoring import short_context_nll, window_starts

    per_pass = batch_size or windows_per_pass(window)
    per_call = max(1, math.ceil(4 * per_pass / len(window_starts(n, window, stride))))
    nll = torch.zeros(len(rows), max(n - 1, 0), dtype=torch.float32)
    lengths = torch.zeros(len(rows), dtype=torch.int32)
    for c in range(0, len(rows), per_call):
        chunk = [list(r) for r in rows[c : c + per_call]]
        if (longest := max(len(r) for r in chunk)) > n:
            raise UsageError(
                f"{where} holds a sequence of {longest} tokens but the manifest says n = {n}: re-prepare the data"
            )
        ids, mask, lens = _pad(chunk, n)
        nll[c : c + len(chunk)] = short_context_nll(
            model, ids, window, stride, attention_mask=mask, bos_token_id=bos, batch_size=batch_size
        ).cpu()
        lengths[c : c + len(chunk)] = lens
        bar.update(len(chunk))
    return nll, lengths


@dataclass
class _Inputs:
    """The sequences to score and what identifies them."""

    data: Path
    split: str
    rows: Any  # datasets.Dataset with the input_ids column
    manifest: dict
    n: int
    count: int
    tokenizer: Any


def _load_inputs(data: Path, split: str, max_sequences: int | None) -> _Inputs:
    from tokenweight.data import load_prepared

    dsd, manifest = load_prepared(data)  # UsageError for a missing, incomplete or damaged folder
    if split not in dsd:
        raise UsageError(f"prepared data {str(data)!r} has no split {split!r} (it has {', '.join(dsd)}): pass --split")
    rows = dsd[split].select_columns(["input_ids"])
    count = len(rows) if max_sequences is None else min(len(rows), max_sequences)
    if count == 0:
        raise UsageError(f"split {split!r} of {str(data)!r} has no sequences: prepare more data")
    n = int(manifest["n"])
    return _Inputs(data, split, rows, manifest, n, count, load_tokenizer(data / "tokenizer"))


def _cache_meta(
    inputs: _Inputs, scorer, folder: Path, window: int, stride: int, dtype: str, shard_size: int | None
) -> dict:
    """meta.json: the identity (:data:`IDENTITY`), its fingerprint, the layout and where things came from."""
    identity = dict(
        data=inputs.manifest.get("fingerprint"),
        split=inputs.split,
        n=inputs.n,
        n_sequences=inputs.count,
        window=window,
        stride=stride,
        dtype=dtype,
        tokenizer=tokenizer_digest(inputs.tokenizer),
        scorer=model_digest(folder),
        bos_token_id=inputs.tokenizer.bos_token_id,
        shard_size=shard_size or default_shard_size(inputs.n),
    )
    return dict(
        identity,
        format=FORMAT,
        fingerprint=fingerprint(identity),
        scorer_path=str(scorer),
        data_path=str(inputs.data.resolve()),
        num_shards=len(shard_ranges(inputs.count, identity["shard_size"])),
    )


def _canonical_header(blob: bytes) -> bytes:
    """A safetensors file with its header metadata in sorted order: safetensors writes it in hash
    order, which differs between processes; sorted, equal scores give equal bytes (and checksums)."""
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    if len(text) > size:  # not safetensors' compact JSON (never seen): keep its bytes
        return blob
    return blob[:8] + text + b" " * (size - len(text)) + blob[8 + size :]


def _score_shards(work: Path, meta: dict, inputs: _Inputs, shards: list[int], model, rank: int, world: int, batch_size):
    """Compute and write ``shards`` (this rank's missing ones): ``(sequences, tokens, seconds)``."""
    from safetensors.torch import save
    from tqdm.auto import tqdm

    ranges = shard_ranges(inputs.count, meta["shard_size"])
    computed = tokens = 0
    t0 = time.perf_counter()
    bar = tqdm(
        total=sum(ranges[i][1] - ranges[i][0] for i in shards),
        unit="seq",
        disable=None,
        desc=f"scoring{f' (rank {rank})' if world > 1 else ''}",
        position=rank,
    )
    for i in shards:
        a, b = ranges[i]
        nll, lengths = _score_rows(
            model,
            inputs.rows[a:b]["input_ids"],
            inputs.n,
            meta["window"],
            meta["stride"],
            meta["bos_token_id"],
            batch_size,
            bar,
            f"sequences {a}..{b - 1} of {str(inputs.data)!r}",
        )
        blob = save(
            {"nll": nll, "lengths": lengths}, {"fingerprint": meta["fingerprint"], "start": str(a), "stop": str(b)}
        )
        atomic_write_bytes(_shard_path(work, i), _canonical_header(blob))
        computed += b - a
        tokens += int(lengths.sum())
    bar.close()
    return computed, tokens, time.perf_counter() - t0


def _complete(out: Path, work: Path, meta: dict, rank: int, world: int, stats: tuple, was_complete: bool) -> list:
    """After every rank scored its shards: rank 0 checks that all are there, writes complete.json
    with each shard's sha256 and, for a forced run, moves the new cache onto ``out``. Returns every
    rank's ``stats``."""
    from tokenweight.io_utils import replace_dir, sha256_file

    every = [stats]
    if world > 1:
        import torch.distributed as dist

        every = [None] * world
        dist.all_gather_object(every, stats)  # also the barrier before the marker
    err = None
    if rank == 0:
        ranges = shard_ranges(meta["n_sequences"], meta["shard_size"])
        missing = [i for i, r in enumerate(ranges) if not _shard_ok(_shard_path(work, i), meta["fingerprint"], *r)]
        if missing:
            err = f"score cache {str(work)!r} misses shards {missing[:5]} after scoring: rerun `tokenweight score`"
        else:
            if not was_complete:
                sums = {
                    rel: {"sha256": sha256_file(work / rel), "bytes": (work / rel).stat().st_size}
                    for rel in _shard_names(meta)
                }
                atomic_write_json(
                    work / COMPLETE,
                    {
                        "fingerprint": meta["fingerprint"],
                        "num_shards": len(ranges),
                        "n_sequences": meta["n_sequences"],
                        "checksums": sums,
                    },
                )
            if work != out:
                replace_dir(work, out)
    if (err := _from_rank0(err, world)) is not None:
        raise RuntimeError(err)
    return every


def compute_scores(
    out: str | os.PathLike,
    data: str | os.PathLike,
    scorer: str | os.PathLike,
    *,
    window: int,
    stride: int | None = None,
    split: str = "train",
    batch_size: int | None = None,
    dtype: str = "float32",
    device: str | None = None,
    shard_size: int | None = None,
    max_sequences: int | None = None,
    force: bool = False,
) -> dict:
    """Score every sequence of ``data``'s ``split`` under the frozen ``scorer`` into ``out``.

    ``window``/``stride``: docs/METHOD.md's short context (``stride`` default :func:`default_stride`).
    ``batch_size``: windows per forward pass (default ``short_context_nll``'s). ``dtype``:
    float32 | bfloat16 | float16 (scores are stored as float32). ``device``: default cuda when
    available. Continues an interrupted cache with the same identity (and recomputes shards whose
    bytes no longer match complete.json); a complete one is left as it is; a different one is
    refused unless ``force``, which builds the new cache beside ``out`` and moves it into place when
    complete. A second process writing ``out`` is refused at once (:func:`output_lock`). Under
    ``torchrun`` every rank must call it (each scores its own shards; rank 0 holds the lock).

    Returns (same on every rank) ``{"out", "sequences", "computed", "cached", "tokens",
    "seconds", "tokens_per_s", "world_size", "own_process_group", "already_complete"}``:
    ``computed``/``tokens`` count this call's work; ``own_process_group``: whether this call
    initialised (and destroyed) the process group, i.e. the process was launched by torchrun for
    this call alone; ``already_complete``: the cache was complete before the call (nothing done).
    """
    import torch

    from tokenweight.models import load_model
    from tokenweight.scoring import window_starts

    if max_sequences is not None and max_sequences < 1:
        raise ValueError(f"max_sequences must be >= 1 or None, got {max_sequences}")
    if shard_size is not None and shard_size < 1:
        raise ValueError(f"shard_size must be >= 1 or None, got {shard_size}")
    out = Path(out).expanduser()
    inputs = _load_inputs(Path(data), split, max_sequences)
    stride = default_stride(inputs.n, window) if stride is None else stride
    window_starts(inputs.n, window, stride)  # validates window and stride (ValueError)

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rank, world, own_group = _dist_setup(device)
    if device == "cuda" and world > 1:
        device = f"cuda:{torch.cuda.current_device()}"
    try:
        with contextlib.ExitStack() as lock:
            folder, model = _scorer_folder(scorer, inputs.tokenizer, dtype, device)
            meta = _cache_meta(inputs, scorer, folder, window, stride, dtype, shard_size)
            work, was_complete = _claim(out, meta, force, rank, world, lock)
            ranges = shard_ranges(inputs.count, meta["shard_size"])
            mine = [
                i
                for i in range(rank, len(ranges), world)
                if not _shard_ok(_shard_path(work, i), meta["fingerprint"], *ranges[i])
            ]
            stats = (0, 0, 0.0)
            if mine:
                model = model or load_model(folder, dtype=dtype, device=device)
                stats = _score_shards(work, meta, inputs, mine, model, rank, world, batch_size)
            every = _complete(out, work, meta, rank, world, stats, was_complete)
        computed, tokens = sum(s[0] for s in every), sum(s[1] for s in every)
        seconds = max(s[2] for s in every)
        return {
            "out": str(out),
            "sequences": inputs.count,
            "computed": computed,
            "cached": inputs.count - computed,
            "tokens": tokens,
            "seconds": seconds,
            "tokens_per_s": tokens / seconds if tokens else 0.0,
            "world_size": world,
            "own_process_group": own_group,
            "already_complete": was_complete and work == out,
        }
    finally:
        if own_group:
            import torch.distributed as dist

            dist.destroy_process_group()
