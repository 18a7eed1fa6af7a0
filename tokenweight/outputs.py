"""The output protocol: what a command does with the output folder it is told to write.

Every stage that writes a folder (prepare, score, select, pretrain/train, ``tasks export``) keeps the same
contract, and these are its rules, each written once:

- **One writer** (:func:`output_lock`): a second process asking for the same output is refused at
  once with one line; the kernel drops the lock of a killed writer.
- **Same settings**: the command continues an interrupted output; on a complete one it does nothing.
- **Other settings**: refused with one line naming the first setting that differs
  (:func:`first_difference`, :func:`other_settings`), unless ``force``.
- **Force**: the new output is built in the hidden sibling ``.NAME.force`` (:func:`staging_dir`,
  :func:`work_folder`; the same forced command continues it after a kill) and moved onto the old
  one only when complete (:func:`move_into_place`), so the old output stays usable until then.
- **Not ours**: an output path that is a file, or a folder that holds something else, is refused
  (:func:`check_not_file`, :func:`foreign_output`).
- **One decision per launch**: under torchrun/accelerate (:func:`launch_rank`,
  :func:`launch_world_size`), rank 0 holds the lock and decides (continue, no-op, refuse, force);
  every rank gets its decision, a refusal included, so that all ranks fail alike (:func:`from_rank0`).

What "settings" and "complete" mean is each stage's own (a run's ``settings.json`` and
``summary.json``, a score cache's ``meta.json`` and ``complete.json``, a prepared folder's or an
export's ``manifest.json``). The files themselves are written by :mod:`tokenweight.io_utils`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from tokenweight.errors import UsageError
from tokenweight.io_utils import current_umask, replace_dir

__all__ = [
    "check_not_file",
    "first_difference",
    "foreign_output",
    "from_rank0",
    "launch_rank",
    "launch_world_size",
    "lock_path",
    "move_into_place",
    "other_settings",
    "output_lock",
    "staging_dir",
    "work_folder",
]


# ----------------------------------------------------------------------------- force: build beside, then move


def staging_dir(out: str | os.PathLike) -> Path:
    """Where ``force`` builds the new output: the hidden sibling ``.NAME.force`` (same filesystem, so
    it can be moved onto ``out``)."""
    out = Path(out)
    return out.parent / f".{out.name}.force"


def work_folder(out: Path, force: bool) -> Path:
    """The folder a command writes: ``out`` itself, or with ``force`` its :func:`staging_dir`."""
    return staging_dir(out) if force else out


def move_into_place(work: Path, out: Path) -> None:
    """Completion: a finished staging folder ``work`` replaces ``out`` (the old output stays whole
    until this moment); nothing to do when ``work`` is ``out``."""
    if work != out:
        replace_dir(work, out)


# ----------------------------------------------------------------------------- other settings


def first_difference(
    old: Mapping, new: Mapping, keys: Iterable[str] | None = None, *, defaults: Mapping | None = None
) -> str | None:
    """The first key (of ``keys``, in order; default: ``new``'s keys, then those only ``old`` has)
    whose value differs between the settings ``old`` (recorded with the output) and ``new`` (this
    command's); a key one of them lacks counts as its value in ``defaults`` (None when not there).
    None when they agree."""
    defaults = defaults or {}
    if keys is None:
        keys = [*new, *(k for k in old if k not in new)]
    return next((k for k in keys if old.get(k, defaults.get(k)) != new.get(k, defaults.get(k))), None)


def other_settings(out: str | os.PathLike, made: str, key: str, old, new) -> UsageError:
    """The one line refusing ``out`` (``made``: e.g. ``"was prepared"``) for this command's settings,
    naming the first difference ``key`` with its ``old`` and ``new`` values, and the fixes."""
    return UsageError(
        f"--out {str(out)!r} {made} with {key} = {old!r}, this command has {key} = {new!r}: "
        "rerun with the same settings, choose another --out, or pass --force to replace it"
    )


# ----------------------------------------------------------------------------- not ours


def check_not_file(out: Path, what: str) -> None:
    """Refuse an output path ``out`` that is a file (``what``: what the folder would hold)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file: pass a folder for {what}")


def foreign_output(out: str | os.PathLike, what: str) -> UsageError:
    """The one line refusing a folder ``out`` that exists and holds something else than ``what``."""
    return UsageError(f"--out {str(out)!r} exists and is not {what}: choose an empty or new folder")


# ----------------------------------------------------------------------------- one decision per launch


def launch_rank() -> int:
    """This process's rank in a torchrun/accelerate launch (``RANK``; 0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


def launch_world_size() -> int:
    """How many processes the torchrun/accelerate launch has (``WORLD_SIZE``; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def from_rank0(value, world: int):
    """Rank 0's ``value`` on every rank of the process group (``world`` ranks; an error message
    included, so all ranks fail alike)."""
    if world <= 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ----------------------------------------------------------------------------- one writer per output

_held: dict[str, int] = {}  # lock files this process holds -> nesting depth
_held_mutex = threading.Lock()


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of output ``path``: the hidden sibling ``.NAME.lock`` (it survives a
    :func:`~tokenweight.io_utils.replace_dir` of ``path``, and is removed when the lock is released)."""
    path = Path(path).expanduser().absolute()
    return path.parent / f".{path.name}.lock"


def holds_lock(path: str | os.PathLike) -> bool:
    """True while this process holds :func:`output_lock` of ``path`` (a plan made inside it is current)."""
    with _held_mutex:
        return bool(_held.get(str(lock_path(path))))


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, *, every_rank: bool = False) -> Iterator[Path]:
    """Hold the write lock of output ``path`` (a file or folder) for the ``with`` block.

    A second process asking for the same output is refused at once with a one-line
    :class:`~tokenweight.errors.UsageError` (it never waits and never touches the output); the
    kernel drops the lock of a killed process (``flock``), so a rerun after ``kill -9`` proceeds.
    Re-entrant within one process.

    Under torchrun/accelerate (``RANK`` set) only rank 0 takes it, unless ``every_rank``: the ranks
    of one job write one output together, and a refused job's rank 0 fails, after which the
    launcher stops its other ranks (code where every rank writes should share rank 0's outcome
    before writing, as :func:`tokenweight.scorecache.compute_scores` does).
    """
    lock = lock_path(path)
    if not every_rank and launch_rank() != 0:
        yield lock
        return
    key = str(lock)
    with _held_mutex:
        if _held.get(key):
            _held[key] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield lock
        finally:
            with _held_mutex:
                _held[key] -= 1
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666 & ~current_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            finally:
                os.close(fd)
            raise UsageError(
                f"{str(Path(path))!r} is being written by another process (pid {holder}, lock {lock}): "
                "wait for it to finish, or write to another output folder"
            ) from None
        try:  # the file may have been released and removed between our open and our lock: retry
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        with _held_mutex:
            _held[key] = 1
        yield lock
    finally:
        with _held_mutex:
            _held.pop(key, None)
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while still locked: a waiting opener then sees another inode and retries
        os.close(fd)
