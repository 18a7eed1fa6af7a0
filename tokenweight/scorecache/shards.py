"""The score cache as a resumable sharded output: ranks, the claim of the folder, shards, completion.

How a cache folder is written, whatever is scored into it (:mod:`tokenweight.scorecache.compute`
does the scoring): the process group of a torchrun launch (:func:`dist_setup`); rank 0 claims the
folder under its lock (:func:`claim`: the output protocol of :mod:`tokenweight.outputs`, with the
cache's identity as its settings) and every rank gets its decision; each rank writes its missing
shards (:func:`missing_shards`, :func:`write_shard`); rank 0 completes the cache (:func:`complete`:
``complete.json`` with every shard's checksum, and for ``force`` the move into place).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from datetime import timedelta
from pathlib import Path

from tokenweight.errors import UsageError
from tokenweight.io_utils import atomic_write_bytes, atomic_write_json, read_json_object, sha256_file
from tokenweight.outputs import (
    check_not_file,
    foreign_output,
    from_rank0,
    launch_world_size,
    move_into_place,
    output_lock,
    work_folder,
)
from tokenweight.scorecache.layout import (
    COMPLETE,
    DATA_FIELDS,
    FORMAT,
    META,
    SHARDS,
    _other_data,
    _shard_names,
    _shard_ok,
    _shard_path,
    identity_difference,
    shard_ranges,
)

# ----------------------------------------------------------------------------- ranks


def dist_setup(device: str) -> tuple[int, int, bool]:
    """(rank, world_size, initialised_here) from torchrun/accelerate's env (RANK, WORLD_SIZE)."""
    world = launch_world_size()
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


# ----------------------------------------------------------------------------- the claim of the folder


def _prepare_out(out: Path, meta: dict, force: bool) -> tuple[Path, bool]:
    """Rank 0, holding the lock: ``(folder to write, already complete)``.

    The folder is ``out``, or with ``force`` its staging sibling (a forced run killed earlier with
    the same identity is continued there; another one is discarded). Refuses a foreign or stale
    ``out`` unless ``force``; writes meta.json; drops temporaries of killed runs and
    :func:`_check_complete` drops shards whose bytes differ from complete.json's checksums.
    """
    check_not_file(out, "the score cache")
    work = work_folder(out, force)
    old = read_json_object(work / META)
    stale = old is not None and (old.get("format") != FORMAT or old.get("fingerprint") != meta["fingerprint"])
    if not force:
        if old is None and out.is_dir() and any(p.name != SHARDS for p in out.iterdir()):
            raise foreign_output(out, "a score cache")
        if stale:
            k = (identity_difference(old, meta) or "fingerprint") if old.get("format") == FORMAT else "format"
            want = meta.get(k, FORMAT)
            head = f"score cache {str(out)!r} holds scores for {k} {old.get(k)!r} but this run asks for {want!r}"
            which, replace = _other_data(old, k, meta["data_path"]) if k in DATA_FIELDS else ("", True)
            if not replace:  # --force would overwrite the scores of the other data
                raise UsageError(f"{head}: {which}: choose another --out for this data")
            raise UsageError(
                f"{head}: pass --force to recompute it (the old cache stays until the new one is complete), rerun "
                "with the same settings, or choose another --out"
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


def _check_complete(work: Path, meta: dict) -> bool:
    """Whether ``work`` is a complete cache whose every shard has the bytes recorded in
    complete.json. Otherwise complete.json goes first (a kill then leaves an incomplete cache),
    then every damaged shard (so that it is recomputed); a complete.json without checksums (older
    versions) is rewritten with them. Reads every shard: cheap next to computing one."""
    done = read_json_object(work / COMPLETE)
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


def claim(out: Path, meta: dict, force: bool, rank: int, world: int, stack: contextlib.ExitStack) -> tuple[Path, bool]:
    """Every rank: ``(folder to write, already complete)``, decided by rank 0 under the output lock
    (held until ``stack`` closes); a refusal reaches every rank, so that all fail alike."""
    decided = None
    if rank == 0:
        try:
            stack.enter_context(output_lock(out))
            decided = _prepare_out(out, meta, force)
        except UsageError as e:
            decided = str(e)
    decided = from_rank0(decided, world)
    if isinstance(decided, str):
        raise UsageError(decided)
    return decided


# ----------------------------------------------------------------------------- shards


def missing_shards(work: Path, meta: dict, rank: int, world: int) -> list[int]:
    """The shards of ``rank`` (``i % world == rank``) that ``work`` lacks as finished shards."""
    ranges = shard_ranges(meta["n_sequences"], meta["shard_size"])
    return [
        i
        for i in range(rank, len(ranges), world)
        if not _shard_ok(_shard_path(work, i), meta["fingerprint"], *ranges[i])
    ]


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


def write_shard(work: Path, i: int, meta: dict, start: int, stop: int, nll, lengths) -> None:
    """Shard ``i`` (sequences ``start … stop-1``: ``nll`` and ``lengths``), atomically, its header
    naming the cache's fingerprint and its range."""
    from safetensors.torch import save

    blob = save(
        {"nll": nll, "lengths": lengths}, {"fingerprint": meta["fingerprint"], "start": str(start), "stop": str(stop)}
    )
    atomic_write_bytes(_shard_path(work, i), _canonical_header(blob))


# ----------------------------------------------------------------------------- completion


def complete(out: Path, work: Path, meta: dict, rank: int, world: int, stats: tuple, was_complete: bool) -> list:
    """After every rank scored its shards: rank 0 checks that all are there, writes complete.json
    with each shard's sha256 and, for a forced run, moves the new cache onto ``out``. Returns every
    rank's ``stats``."""
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
            move_into_place(work, out)
    if (err := from_rank0(err, world)) is not None:
        raise RuntimeError(err)
    return every
