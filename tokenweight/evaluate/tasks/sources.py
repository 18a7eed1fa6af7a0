"""Where the tasks' inputs come from: the haystack a user names, and the QA files.

One resolver for ``tokenweight tasks export --haystack`` and ``tokenweight eval --haystack``, so that
the two read the same text the same way:

- ``essay`` (the default): the prose shipped with CPython (:mod:`tokenweight.evaluate.tasks.essay`),
  treated as RULER treats its essays;
- ``noise``: RULER's noise sentences, for the essay tasks too;
- ``data``: the prepared data's held-out (validation) split decoded, as documents (packed rows
  split into theirs; ``eval`` only: the ``--data`` folder's);
- ``FILE``: a ``.json`` file with a ``"text"`` string (RULER's ``PaulGrahamEssays.json``) is an
  essay; any other file is one document of a corpus (whitespace kept);
- ``DIR``: a prepared data folder (its validation split decoded; a packed one, document by
  document), or a folder whose ``.txt``, ``.py``, ``.md``, ``.rst`` files are the documents of a corpus.

Only the essay tasks (``niah_single_2``/``_3``, ``niah_multikey_1``, ``niah_multivalue``,
``niah_multiquery``) read it; the other tasks keep RULER's filler.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tokenweight.errors import UsageError
from tokenweight.evaluate.tasks.haystack import Haystack, default_essay

TEXT_SUFFIXES = (".txt", ".py", ".md", ".rst")
HAYSTACK_HELP = (
    "filler of the essay tasks: essay (prose shipped with Python, RULER's treatment), noise (RULER's), "
    "data (the held-out split of --data), FILE (RULER's essay .json, or a text file) or DIR"
)


def _decode_validation(folder: Path, tokenizer) -> list[str]:
    from datasets import load_from_disk

    ds = load_from_disk(str(folder / "validation"))
    if "input_ids" not in ds.column_names:
        raise UsageError(
            f"{str(folder / 'validation')!r} has no input_ids column: pass a folder written by 'tokenweight prepare'"
        )
    if "doc_lengths" in ds.column_names:  # packed rows (tokenweight prepare --pack): one text per document
        from tokenweight.evaluate.packed import read_doc_lengths, split_documents

        rows = [{"input_ids": ids, "doc_lengths": dl} for ids, dl in zip(ds["input_ids"], read_doc_lengths(ds, folder))]
        return tokenizer.batch_decode([r["input_ids"] for r in split_documents(rows)], skip_special_tokens=True)
    return tokenizer.batch_decode(ds["input_ids"], skip_special_tokens=True)


def load_haystack(spec: str, tokenizer=None, held_out: Callable[[], list[str]] | None = None) -> Haystack:
    """The :class:`Haystack` named by ``spec`` (module docstring); ``held_out``: the texts of
    ``data``. UsageError for a name that is none of them, or a file without text."""
    spec = str(spec)
    if spec == "essay":
        return default_essay()
    if spec == "noise":
        return Haystack.noise()
    if spec == "data":
        if held_out is None:
            raise UsageError(
                "--haystack data needs --data PREPARED_DIR (tokenweight eval): pass it, or the prepared folder "
                "itself as --haystack DIR"
            )
        texts = held_out()
        if not texts:
            raise UsageError("--haystack data: the held-out split holds no text; pass another --haystack")
        return Haystack.from_texts(texts, source="data (held-out split)")
    p = Path(spec)
    if p.is_file() and p.suffix == ".json":
        from tokenweight.evaluate.tasks.essay import read_essay_json

        return Haystack.essay(read_essay_json(p), source=f"essay: {p}")
    if p.is_file():
        texts = [p.read_text(encoding="utf-8", errors="replace")]
    elif (p / "validation").is_dir():
        if tokenizer is None:
            raise ValueError("tokenizer is required to decode a prepared folder's validation split")
        texts = _decode_validation(p, tokenizer)
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES)
        texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    else:
        raise UsageError(
            f"--haystack {spec!r} is neither essay, noise, data nor an existing file or folder: pass one of them"
        )
    try:
        return Haystack.from_texts(texts, source=str(p))
    except ValueError:
        raise UsageError(f"--haystack {spec!r} holds no text: pass files with text, or essay") from None


def load_qa(squad: str | None = None, hotpotqa: str | None = None) -> dict:
    """``{"squad": QADataset, "hotpotqa": QADataset}`` for the files given (UsageError for a bad one)."""
    from tokenweight.evaluate.tasks.qa import read_qa

    return {kind: read_qa(path, kind) for kind, path in (("squad", squad), ("hotpotqa", hotpotqa)) if path}


def qa_flag(task: str) -> str | None:
    """The flag that gives a QA task its file (``--squad`` for ``qa_1``), None for other tasks."""
    from tokenweight.evaluate.tasks.registry import TASKS

    spec = TASKS[task]
    return f"--{spec.params['dataset']}" if spec.family == "qa" else None
