"""Corpus readers: the user's inputs as one ordered list of documents.

Inputs, each a path (or a hub dataset id):

- a folder of text files (any extension; ``.jsonl``/``.ndjson``/``.parquet`` files inside it are
  read as records), walked recursively in sorted order, hidden entries and ``__pycache__`` skipped;
- a single text file (one document), a ``.jsonl``/``.ndjson`` file of JSON records or a
  ``.parquet`` file (one document per record, text in ``text_field``);
- a ``datasets`` dataset saved with ``save_to_disk`` (a ``DatasetDict`` picks ``split``);
- a hub dataset id, loaded with ``datasets.load_dataset(id, config, split=split)`` (needs network);
- ``corpus="stdlib"``: the ``.py`` files of the running interpreter's standard library
  (``sysconfig`` ``stdlib`` path; ``site-packages``, ``dist-packages``, ``__pycache__`` excluded;
  ``stdlib-no-tests`` also drops ``test``/``tests``/``idle_test`` folders).

Why everything is listed (and hashed) before any tokenization: the fingerprint that decides
whether an existing output is up to date covers the contents of every input, and the document
order must be fixed before documents are selected. Files that cannot be read or are not UTF-8
text (a NUL byte counts as binary) are skipped and counted, not fatal: real corpora (the stdlib's
own test suite) contain deliberately mis-encoded files, and one bad file should not stop a run.

``doc_id`` is a document's index in this listing (inputs in the given order, files sorted).
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tokenweight.errors import UsageError, first_line

RECORD_SUFFIXES = (".jsonl", ".ndjson", ".parquet")
STDLIB_CORPORA = ("stdlib", "stdlib-no-tests")
_STDLIB_EXCLUDE = {"site-packages", "dist-packages", "__pycache__"}
_TEST_DIRS = {"test", "tests", "idle_test"}


class _Source:
    """One input: ``n`` documents with stable ``keys`` and a content ``digest``."""

    name: str
    kind: str
    keys: list[str]
    digest: str

    def read(self, idx: Sequence[int]) -> list[str]:
        raise NotImplementedError


class _TextFiles(_Source):
    def __init__(self, name: str, root: Path, rels: list[str], digest: str):
        self.name, self.kind, self.root, self.keys, self.digest = name, "text", root, rels, digest

    def read(self, idx):
        out = []
        for i in idx:
            try:
                out.append(_clean((self.root / self.keys[i]).read_bytes().decode("utf-8")))
            except (OSError, UnicodeDecodeError):  # changed since listing: an empty document
                out.append("")
        return out


class _Records(_Source):
    """Records held as an Arrow array or a ``datasets.Dataset`` column (memory-mapped)."""

    def __init__(self, name: str, kind: str, column, n: int, digest: str, key_prefix: str = ""):
        self.name, self.kind, self.column, self.digest = name, kind, column, digest
        self.keys = [f"{key_prefix}{i}" for i in range(n)]

    def read(self, idx):
        if hasattr(self.column, "take"):  # pyarrow
            values = self.column.take(list(idx)).to_pylist()
        else:  # (datasets.Dataset, field)
            ds, field = self.column
            values = ds[list(idx)][field]
        return [_clean(v) if isinstance(v, str) else "" for v in values]


def _clean(text: str) -> str:
    return text[1:] if text.startswith("\ufeff") else text


class Corpus:
    """All documents of all inputs, in listing order, plus what was skipped."""

    def __init__(
        self,
        description: str,
        sources: list[_Source],
        skipped: list[tuple[str, str]],
        files: int,
        source_inputs: list[int] | None = None,
    ):
        self.description, self.sources, self.skipped, self.files = description, sources, skipped, files
        #: the input (its index in ``open_corpus``'s ``inputs``) each source was read from
        self.source_inputs = source_inputs if source_inputs is not None else [0] * len(sources)
        self.offsets = np.cumsum([0] + [len(s.keys) for s in sources])
        prefix = len(sources) > 1
        self.keys = [f"{j}:{k}" if prefix else k for j, s in enumerate(sources) for k in s.keys]
        h = hashlib.sha256()
        for s in sources:
            h.update(f"{s.kind}\0{s.name}\0{len(s.keys)}\0{s.digest}\0".encode())
        h.update(json.dumps(sorted(skipped)).encode())
        self.fingerprint = h.hexdigest()[:16]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def read(self, doc_ids: Sequence[int]) -> list[str]:
        """Texts of ``doc_ids`` (any order), read from the inputs now."""
        doc_ids = np.asarray(doc_ids, dtype=np.int64)
        src = np.searchsorted(self.offsets, doc_ids, "right") - 1
        out: list[str] = [""] * len(doc_ids)
        for j in np.unique(src):
            pos = np.nonzero(src == j)[0]
            texts = self.sources[j].read((doc_ids[pos] - self.offsets[j]).tolist())
            for p, t in zip(pos, texts):
                out[p] = t
        return out

    def input_of(self) -> np.ndarray:
        """``[documents]``: the input every document comes from (its index among the inputs)."""
        per_source = [np.full(len(s.keys), i, dtype=np.int64) for s, i in zip(self.sources, self.source_inputs)]
        return np.concatenate(per_source) if per_source else np.zeros(0, dtype=np.int64)

    def selection_order(self) -> np.ndarray:
        """Doc ids ordered by a hash of their keys: a fixed pseudo-random order.

        Why: ``--max-documents``/``--max-tokens``/``--skip-documents`` take slices of this order,
        so a capped run is a sample of the whole corpus (not the alphabetically first folders),
        disjoint slices are similar in content, and adding a file never reshuffles the others.
        It does not depend on ``--seed``, so runs with different seeds still slice the same order.
        """
        h = np.array(
            [int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "big") >> 1 for k in self.keys],
            dtype=np.int64,
        )
        return np.lexsort((np.arange(len(h)), h))

    def summary(self) -> dict:
        reasons: dict[str, int] = {}
        for _, r in self.skipped:
            reasons[r] = reasons.get(r, 0) + 1
        return {
            "description": self.description,
            "inputs": [{"kind": s.kind, "name": s.name, "documents": len(s.keys)} for s in self.sources],
            "documents": len(self),
            "files": self.files,
            "skipped_files": len(self.skipped),
            "skipped_reasons": reasons,
            "skipped_examples": [p for p, _ in self.skipped[:20]],
            "fingerprint": self.fingerprint,
        }


def _read_text_file(path: Path) -> tuple[bytes | None, str | None]:
    """``(bytes, None)`` for a UTF-8 text file, else ``(bytes or None, reason)``."""
    try:
        data = path.read_bytes()
    except OSError:
        return None, "unreadable"
    if b"\0" in data:
        return data, "binary"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data, "not UTF-8"
    return data, None


def _walk(root: Path, suffixes: tuple[str, ...] | None, exclude_dirs: set[str]) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in exclude_dirs)
        for f in sorted(filenames):
            if f.startswith(".") or (suffixes is not None and not f.endswith(suffixes)):
                continue
            out.append(Path(dirpath) / f)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def _file_sources(name: str, root: Path, files: list[Path], text_field: str, skipped: list) -> list[_Source]:
    """Text files become one source; record files (jsonl, parquet) one source each."""
    sources: list[_Source] = []
    rels, h = [], hashlib.sha256()
    for path in files:
        rel = path.relative_to(root).as_posix() if path != root else path.name
        shown = str(path) if path == root else rel
        if path.name.endswith(RECORD_SUFFIXES):
            src = _record_file(path, shown, text_field, skipped)
            if src is not None:
                sources.append(src)
            continue
        data, reason = _read_text_file(path)
        if reason is not None:
            skipped.append((shown, reason))
            continue
        h.update(f"{rel}\0{len(data)}\0".encode() + hashlib.sha256(data).digest())
        rels.append(rel)
    if rels:
        base = root if root.is_dir() else root.parent
        sources.insert(0, _TextFiles(name, base, rels, h.hexdigest()[:16]))
    return sources


def _record_file(path: Path, shown: str, text_field: str, skipped: list) -> _Source | None:
    import pyarrow as pa

    try:
        data = path.read_bytes()
    except OSError:
        skipped.append((shown, "unreadable"))
        return None
    digest = hashlib.sha256(data).hexdigest()[:16]
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
        except Exception:
            skipped.append((shown, "unreadable"))
            return None
        if text_field not in names:
            raise UsageError(f"{shown}: no column {text_field!r} (columns: {', '.join(names)}): pass --text-field")
        col = pq.read_table(path, columns=[text_field], memory_map=True).column(text_field)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise UsageError(f"{shown}: column {text_field!r} holds {col.type}, not text: pass --text-field")
        return _Records(shown, "parquet", col, len(col), digest)
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        skipped.append((shown, "not UTF-8"))
        return None
    texts, seen = [], False
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(
                f"{shown}:{no}: not valid JSON ({e.msg}): fix the line (one JSON object per line)"
            ) from None
        if not isinstance(rec, dict):
            raise UsageError(f"{shown}:{no}: a JSON line must be an object with a {text_field!r} field")
        value = rec.get(text_field)
        if value is not None and not isinstance(value, str):
            raise UsageError(
                f"{shown}:{no}: field {text_field!r} is a {type(value).__name__}, not a string: pass --text-field"
            )
        seen = seen or text_field in rec
        texts.append(value)
    if texts and not seen:
        first = ", ".join(json.loads(next(line for line in lines if line.strip())))
        raise UsageError(f"{shown}: no record has a field {text_field!r} (first has: {first}): pass --text-field")
    return _Records(shown, "jsonl", pa.array(texts, type=pa.string()), len(texts), digest)


def _saved_dataset(path: Path, split: str, text_field: str) -> _Source:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise UsageError(
            f"{str(path)!r} looks like a saved dataset but cannot be loaded ({e}): re-save it with save_to_disk"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise UsageError(f"{str(path)!r} has no split {split!r} (splits: {', '.join(ds)}): pass --split")
        ds = ds[split]
    _check_column(ds, text_field, str(path))
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return _Records(str(path), "dataset", (ds.select_columns([text_field]), text_field), len(ds), h.hexdigest()[:16])


def _hub_dataset(name: str, split: str, config: str | None, text_field: str) -> _Source:
    import datasets

    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:
        msg = first_line(e)
        raise UsageError(
            f"input {name!r} is not a file or folder, and loading it as a Hugging Face hub dataset failed ({msg}): "
            "check the path, or the dataset id, --split and --dataset-config (and network access)"
        ) from None
    _check_column(ds, text_field, name)
    return _Records(name, "hub", (ds.select_columns([text_field]), text_field), len(ds), str(ds._fingerprint))


def _check_column(ds, text_field: str, shown: str) -> None:
    if text_field not in ds.column_names:
        names = ", ".join(ds.column_names)
        raise UsageError(f"{shown}: no column {text_field!r} (columns: {names}): pass --text-field")


def _looks_like_hub_id(s: str) -> bool:
    parts = s.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not s.startswith((".", "~")) and "\\" not in s


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def open_corpus(
    inputs: Sequence[str] = (),
    corpus: str | None = None,
    *,
    text_field: str = "text",
    split: str = "train",
    dataset_config: str | None = None,
) -> Corpus:
    """List (and hash) the documents of ``inputs`` or of the embedded ``corpus``."""
    if corpus is not None and inputs:
        raise UsageError(f"both input paths and --corpus {corpus} given: pass one or the other")
    if corpus is None and not inputs:
        corpus = "stdlib"
    skipped: list[tuple[str, str]] = []
    if corpus is not None:
        if corpus not in STDLIB_CORPORA:
            raise UsageError(
                f"unknown corpus {corpus!r}: choose one of {', '.join(STDLIB_CORPORA)} or pass input paths"
            )
        root = stdlib_root()
        exclude = _STDLIB_EXCLUDE | (_TEST_DIRS if corpus == "stdlib-no-tests" else set())
        files = _walk(root, (".py",), exclude)
        sources = _file_sources(corpus, root, files, text_field, skipped)
        return Corpus(corpus, sources, skipped, len(files))
    sources, n_files, source_inputs = [], 0, []
    for i, inp in enumerate(inputs):
        path = Path(inp).expanduser()
        before = len(sources)
        if path.is_dir():
            if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
                sources.append(_saved_dataset(path, split, text_field))
                n_files += 1
            else:
                files = _walk(path, None, {"__pycache__"})
                n_files += len(files)
                sources.extend(_file_sources(str(path), path, files, text_field, skipped))
        elif path.is_file():
            n_files += 1
            sources.extend(_file_sources(str(path), path, [path], text_field, skipped))
        elif not path.exists() and _looks_like_hub_id(inp) and not Path(inp).suffix:
            sources.append(_hub_dataset(inp, split, dataset_config, text_field))
            n_files += 1
        else:
            raise UsageError(
                f"input {inp!r} does not exist: pass a folder of text files, a .jsonl/.parquet file, "
                "a saved dataset folder, a hub dataset id, or --corpus stdlib"
            )
        source_inputs += [i] * (len(sources) - before)
    return Corpus(", ".join(inputs), sources, skipped, n_files, source_inputs)
