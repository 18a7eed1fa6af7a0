"""Atomic outputs and fingerprints.

Every file or folder the pipeline writes goes through these helpers, so that a crash or a kill
never leaves a half-written output that looks complete: data goes to a temporary sibling first and
is moved into place with ``os.replace`` (atomic on POSIX within one filesystem).

Also here: :func:`sha256_file` / :func:`check_file` (content checksums recorded at completion and
verified once per process when a file is first read), :func:`clean_temporaries` (what a killed
writer left). What a command does with an output that exists (one writer, resume, refusal, force)
is :mod:`tokenweight.outputs`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process's umask (what a plain ``open`` or ``mkdir`` takes off the permissions)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_sibling(path: Path, suffix: str = "") -> Path:
    """A new empty file next to ``path``, with the permissions a plain ``open`` would give.

    (``mkstemp`` creates files 0600; outputs such as models and reports should be readable by
    whoever could read a normally written file.)
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it is renamed to ``path``.

    For writers that want a file name (``torch.save``, ``safetensors.save_file``, matplotlib).
    ``suffix``: the temporary's before ``.tmp`` (default: ``path``'s, which such writers may need).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path, suffix=path.suffix if suffix is None else suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    with atomic_file(path, suffix="") as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def tmp_dir_for(path: str | os.PathLike) -> Path:
    """A new empty folder next to ``path`` (same filesystem, so it can be renamed onto it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; outputs get the usual permissions
    return tmp


def replace_dir(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move the finished folder ``tmp`` onto ``path``; an old ``path`` is moved aside first and
    deleted only after the new one is in place, so ``path`` is never half-written."""
    path = Path(path)
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        if _exchange(tmp, path):  # one atomic step: ``path`` is the old or the new folder, never absent
            os.replace(tmp, old / "x")
        else:
            os.replace(path, old / "x")
            os.replace(tmp, path)
    else:
        os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE, _AT_FDCWD = 2, -100


def _exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``path`` (see :func:`replace_dir`).

    For outputs that are folders (a saved ``datasets`` dataset, a HF checkpoint).
    """
    tmp = tmp_dir_for(path)
    try:
        yield tmp
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json_object(path: str | os.PathLike) -> dict | None:
    """The JSON object in ``path``; None when the file is missing, unreadable, not JSON or not an
    object (a record that is absent or damaged counts as absent: its writer starts over)."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def fingerprint(obj: Any) -> str:
    """A short, stable hex digest of a JSON-serialisable object (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 (first 16 hex digits) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- what a kill leaves


def clean_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that writers of ``path`` killed mid-write left next to it.

    Those are the hidden siblings made by :func:`tmp_dir_for`, :func:`atomic_file` and
    :func:`replace_dir` (``.NAME.XXXXXXXX[.suffix].tmp`` and ``.NAME.XXXXXXXX.old``); call it only
    while holding :func:`tokenweight.outputs.output_lock` on ``path`` (no live writer then).
    Returns what was removed.
    """
    path = Path(path)
    pat = re.compile(rf"^\.{re.escape(path.name)}\.[a-z0-9_]{{8}}(\.[^/]*)?\.(tmp|old)$")
    gone = []
    if path.parent.is_dir():
        for p in path.parent.iterdir():
            if pat.match(p.name):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
                gone.append(p)
    return gone


def clean_folder_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the ``.*.tmp`` files that :func:`atomic_file` writers killed mid-write left inside
    ``folder`` (a stage's output folder of single files: evaluation, report); call it only while
    holding that folder's :func:`tokenweight.outputs.output_lock`. Returns what was removed."""
    folder = Path(folder)
    gone = [p for p in folder.glob(".*.tmp") if p.is_file()] if folder.is_dir() else []
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


# ----------------------------------------------------------------------------- content checksums


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 (64 hex digits) of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def checksums(root: str | os.PathLike, folders: tuple[str, ...] = ("",), pattern: str = "*") -> dict[str, dict]:
    """``{relative path: {"sha256", "bytes"}}`` of the files matching ``pattern`` under each
    ``root/folder`` (sorted)."""
    root = Path(root)
    out = {}
    for folder in folders:
        for p in sorted((root / folder).rglob(pattern)):
            if p.is_file():
                out[p.relative_to(root).as_posix()] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return out


_verified: dict[tuple, str] = {}  # (path, inode, size, mtime) -> digest verified in this process


def check_file(path: str | os.PathLike, sha256: str, *, size: int | None = None, what: str, fix: str) -> None:
    """Refuse (one-line ``UsageError`` naming the file and ``fix``) a file whose bytes are not the
    ones recorded at completion. The file is hashed once per process (again only if it changes)."""
    from tokenweight.errors import UsageError

    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UsageError(f"{what} {str(path)!r} is missing: {fix}") from None
    if size is not None and st.st_size != size:
        raise UsageError(f"{what} {str(path)!r} is truncated or damaged ({st.st_size} bytes, {size} expected): {fix}")
    key = (str(path.absolute()), st.st_ino, st.st_size, st.st_mtime_ns)
    if _verified.get(key) == sha256:
        return
    got = sha256_file(path)
    if got != sha256:
        raise UsageError(f"{what} {str(path)!r} is corrupted (sha256 {got[:12]}…, {sha256[:12]}… recorded): {fix}")
    _verified[key] = sha256


def check_files(root: str | os.PathLike, recorded: dict[str, dict], *, what: str, fix: str) -> None:
    """:func:`check_file` for every entry of a :func:`checksums` record."""
    for rel, c in recorded.items():
        check_file(Path(root) / rel, c["sha256"], size=c.get("bytes"), what=what, fix=fix)
