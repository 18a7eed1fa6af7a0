"""Identity: what "the same tokenizer", "the same model" and "a hub id" mean, in one place.

Every cache keyed by a tokenizer or a model (prepared data, score cache, evaluation cache, task
export) and every check that two tokenizers agree goes through this module, so that the writer and
the reader of a cache can never disagree about what it was computed for.

- :func:`tokenizer_digest`: the same tokenizer = the same vocabulary mapping (``get_vocab()``,
  added tokens included) and the same BOS/EOS/UNK ids. Pad is not compared: it is never scored and
  often added ad hoc. Never file bytes: ``AutoTokenizer`` can build a different tokenizer from the
  same files (measured: a qwen2 model folder loads as ``Qwen2Tokenizer``, which adds
  ``<|endoftext|>`` as UNK when missing and uses its own pre-tokenizer), and the same tokenizer
  saved by two library versions differs in bytes. :func:`check_same_tokenizer` refuses a pair
  that differs, naming the first difference; :func:`check_model_tokenizer` refuses a model that
  ships another tokenizer than the data's (``train``, ``pretrain``, ``eval``).
- :func:`model_digest`: the same model = the same ``config.json`` (minus the volatile
  ``transformers_version`` and ``_name_or_path``) and the same weight files, digested by content
  with :func:`file_digest_sampled` (whole files up to 32 MiB, above that the size and 32 blocks of
  1 MiB spread evenly over the file: fine-tuning changes every block, yet at most 32 MiB per file
  is read). Trainer state (optimizer, scheduler, rng) does not count.
- :func:`is_hub_id`: a ``str`` ``"name"`` or ``"org/name"`` that is not an existing path.
  :func:`resolve_source` turns a name into what ``from_pretrained`` gets (UsageError for a missing
  path), :func:`resolve_local` into a local folder (a hub id's cached snapshot; never downloads).
- :func:`load_tokenizer`: the one tokenizer loader (local folder or hub id, UsageError for bad
  input; ``require_fast=True`` where exact character offsets are needed).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from tokenweight.errors import UsageError, first_line
from tokenweight.io_utils import fingerprint

#: a hub repository id: "name" or "org/name" (letters, digits, ".", "_", "-"; starting alphanumeric)
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
#: files of which at least one is in a folder that holds a tokenizer
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
)
#: weight files counted by :func:`model_digest` (trainer state files excluded by name)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_NOT_WEIGHTS = ("optimizer", "scheduler", "rng_state", "training_args")
#: config.json keys that change without the model changing
VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path")
#: special tokens that are part of a tokenizer's identity (pad is not: often added ad hoc)
SPECIAL_TOKENS = ("bos", "eos", "unk")


# ----------------------------------------------------------------------------- names and paths


def is_hub_id(name: Any) -> bool:
    """True when ``name`` means a Hugging Face hub repository, not a local path.

    A hub id is a ``str`` of the form ``"name"`` or ``"org/name"`` (letters, digits, ``.``, ``_``,
    ``-``; each part starting with a letter or digit; no ``..`` or ``--``) that is not an existing
    file or folder. Everything else is a local path: ``Path`` objects, absolute paths, paths
    starting with ``.`` or ``~``, paths with more than one ``/``, and an existing folder even when
    it is named like ``"org/name"``.
    """
    if not isinstance(name, str) or not _HUB_ID.fullmatch(name) or ".." in name or "--" in name:
        return False
    return not Path(name).exists()


def resolve_source(name_or_path: str | os.PathLike, what: str = "model") -> str:
    """What to hand to ``from_pretrained``: an existing local folder, or a hub id.

    ``what`` names the thing in messages ("model", "tokenizer"). Raises ``UsageError`` for a file
    and for a missing path that is not a hub id (:func:`is_hub_id`).
    """
    name = str(name_or_path)
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir():
            raise UsageError(
                f"{what} path {name!r} is a file, not a folder: pass the folder it was saved to with save_pretrained"
            )
        return str(p)
    if not is_hub_id(name_or_path):
        raise UsageError(
            f"{what} path {name!r} does not exist: pass an existing folder (HF format) or a hub id like 'org/name'"
        )
    return name


def resolve_local(name_or_path: str | os.PathLike, what: str = "model") -> Path:
    """The local folder of ``name_or_path``: the folder itself, or a hub id's cached snapshot.

    Offline: a hub id is looked up in the local Hugging Face cache only (load it once, e.g. with
    ``tokenweight.models.load_model``, to fetch it). ``UsageError`` for a missing path or a hub id
    that is not cached.
    """
    src = resolve_source(name_or_path, what)
    if not is_hub_id(src):
        return Path(src)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(src, local_files_only=True))
    except Exception as e:  # LocalEntryNotFoundError, an id the hub library refuses, ...
        raise UsageError(
            f"{what} {src!r} is a hub id that is not in the local Hugging Face cache ({first_line(e)}): "
            "load it once with network access, or pass a local folder"
        ) from None


def has_tokenizer(folder: str | os.PathLike) -> bool:
    """True when the local ``folder`` holds tokenizer files (:data:`TOKENIZER_FILES`)."""
    return any((Path(folder) / f).is_file() for f in TOKENIZER_FILES)


# ----------------------------------------------------------------------------- tokenizers


def load_tokenizer(name_or_path: str | os.PathLike, *, require_fast: bool = False):
    """Load a tokenizer (``AutoTokenizer``) from a local folder or a hub id.

    ``require_fast``: refuse a tokenizer without a fast (Rust) backend (data preparation needs its
    exact character offsets). Bad input (a missing path, a file, a folder without tokenizer files,
    an unloadable or unreachable tokenizer) raises ``UsageError`` with what to pass instead.
    """
    from transformers import AutoTokenizer

    src = resolve_source(name_or_path, "tokenizer")
    if not is_hub_id(src) and not has_tokenizer(src):
        raise UsageError(
            f"tokenizer folder {str(name_or_path)!r} holds no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}): "
            "pass a folder saved with save_pretrained (e.g. PREPARED_DIR/tokenizer) or a hub id"
        )
    try:
        tok = AutoTokenizer.from_pretrained(src)
    except Exception as e:  # network errors, broken files, unknown classes: all bad input here
        raise UsageError(
            f"cannot load tokenizer {str(name_or_path)!r} ({first_line(e)}): "
            "pass a folder saved with save_pretrained (e.g. PREPARED_DIR/tokenizer) or a reachable hub id"
        ) from None
    if require_fast and getattr(tok, "backend_tokenizer", None) is None:
        raise UsageError(
            f"tokenizer {str(name_or_path)!r} has no fast (Rust) backend, needed for exact offsets: "
            "convert it to a tokenizer.json (PreTrainedTokenizerFast) first"
        )
    return tok


def special_token_ids(tok) -> dict[str, int | None]:
    """``{"bos": id, "eos": id, "unk": id}`` (None where the tokenizer has none)."""
    return {k: getattr(tok, f"{k}_token_id", None) for k in SPECIAL_TOKENS}


def tokenizer_digest(tok) -> str:
    """Digest (16 hex) of a tokenizer's identity: sorted vocabulary mapping and BOS/EOS/UNK ids."""
    return fingerprint({"vocab": sorted(tok.get_vocab().items()), "special": special_token_ids(tok)})


def check_same_tokenizer(tok, ref, *, name: str, ref_name: str, fix: str) -> None:
    """``UsageError`` unless ``tok`` and ``ref`` have the same :func:`tokenizer_digest` identity.

    The message names the first difference: ``"{name} uses a different tokenizer than {ref_name}
    (...): {fix}"`` or ``"{name} has special tokens ... but {ref_name} has ...: {fix}"``.
    """
    a, b = tok.get_vocab(), ref.get_vocab()
    if a != b:
        token = sorted(set(a.items()) ^ set(b.items()))[0][0]
        raise UsageError(
            f"{name} uses a different tokenizer than {ref_name} ({len(a)} vs {len(b)} entries; "
            f"e.g. {token!r} is {a.get(token)} vs {b.get(token)}): {fix}"
        )
    if special_token_ids(tok) != special_token_ids(ref):
        raise UsageError(
            f"{name} has special tokens {special_token_ids(tok)} but {ref_name} has {special_token_ids(ref)}: {fix}"
        )


def check_vocabulary(vocab_size: int, tokenizer, *, name: str, tokenizer_name: str, fix: str) -> None:
    """The one rule of a model and a tokenizer it reads: its embedding matrix covers every id of the
    tokenizer (a larger one is fine: padded matrices are common). UsageError (one line) otherwise,
    e.g. ``model 'x' has a vocabulary of 32 tokens but the data's tokenizer has 64: <fix>``."""
    if vocab_size < len(tokenizer):
        raise UsageError(
            f"{name} has a vocabulary of {vocab_size} tokens but {tokenizer_name} has {len(tokenizer)}: {fix}"
        )


def model_tokenizer(name_or_path: str | os.PathLike):
    """The tokenizer a model ships with, loaded as users load it (:func:`load_tokenizer` on the model's
    folder or hub id: a qwen2 folder builds ``Qwen2Tokenizer``), or None when it has none.

    A local folder without tokenizer files (:func:`has_tokenizer`) has none; so does a hub id whose
    tokenizer cannot be loaded (none in the repository, or unreachable: loading the model then
    reports the problem). ``UsageError`` for a missing path or a file (:func:`resolve_source`).
    """
    src = resolve_source(name_or_path, "model")
    if is_hub_id(src):
        try:
            return load_tokenizer(src)
        except UsageError:
            return None
    return load_tokenizer(src) if has_tokenizer(src) else None


def check_model_tokenizer(name_or_path: str | os.PathLike, tokenizer, *, ref_name: str, fix: str | None = None) -> None:
    """``UsageError`` when the model ``name_or_path`` ships a tokenizer (:func:`model_tokenizer`) that
    is not ``tokenizer`` (:func:`check_same_tokenizer`: vocabulary and BOS/EOS/UNK, never the vocabulary
    size: embeddings padded beyond the tokenizer are common). A model without a tokenizer passes:
    whether its embeddings cover ``tokenizer`` is the caller's check. ``ref_name`` names where
    ``tokenizer`` comes from (``"the data 'DIR'"``); ``fix`` defaults to preparing the data with
    the model's tokenizer."""
    own = model_tokenizer(name_or_path)
    if own is None:
        return
    name = str(name_or_path)
    check_same_tokenizer(
        own,
        tokenizer,
        name=f"model {name!r}",
        ref_name=ref_name,
        fix=fix or f"prepare the data with --tokenizer {name}, or pass a model trained with the data's tokenizer",
    )


# ----------------------------------------------------------------------------- models


def file_digest_sampled(path: str | os.PathLike, block: int = 1 << 20, blocks: int = 32) -> str:
    """sha256 (16 hex digits) of a file: all of it up to ``block*blocks`` bytes, else its size
    and ``blocks`` blocks at evenly spaced offsets (first and last included)."""
    h = hashlib.sha256()
    size = os.path.getsize(path)
    h.update(str(size).encode())
    with open(path, "rb") as f:
        if size <= block * blocks:
            h.update(f.read())
        else:
            for k in range(blocks):
                f.seek((size - block) * k // (blocks - 1))
                h.update(f.read(block))
    return h.hexdigest()[:16]


def model_digest(name_or_path: str | os.PathLike) -> str:
    """Digest (16 hex) of a saved model: its ``config.json`` minus volatile keys, and its weight files.

    ``name_or_path``: a folder saved with ``save_pretrained``, or a hub id in the local cache
    (:func:`resolve_local`). ``UsageError`` when there is no ``config.json`` or no weight file.
    """
    folder = resolve_local(name_or_path, "model")
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise UsageError(f"model folder {str(folder)!r} has no config.json: pass a folder saved with save_pretrained")
    config = json.loads(cfg.read_text(encoding="utf-8"))
    for k in VOLATILE_CONFIG_KEYS:
        config.pop(k, None)
    weights = {
        p.name: file_digest_sampled(p)
        for p in sorted(folder.iterdir())
        if p.suffix in WEIGHT_SUFFIXES and p.is_file() and not p.name.startswith(_NOT_WEIGHTS)
    }
    if not weights:
        raise UsageError(
            f"model folder {str(folder)!r} holds no weight files (*.safetensors, *.bin): "
            "pass a folder saved with save_pretrained"
        )
    return fingerprint({"config": config, "weights": weights})


def input_identity(kind: str, path: str | os.PathLike) -> str:
    """The identity of a stage's input by content, for comparing runs: ``kind`` is ``data`` (a
    prepared folder: its manifest's fingerprint), ``model`` (:func:`model_digest`) or ``scores``
    (a score cache: its meta's fingerprint). An input that cannot be read yet (missing, or a hub id
    not in the local cache) is identified by its path, and the stage reports the problem itself."""
    p = Path(path).expanduser()
    try:
        if kind == "model":
            return f"model:{model_digest(path)}"
        meta = p / ("manifest.json" if kind == "data" else "meta.json")
        return f"{kind}:{json.loads(meta.read_text(encoding='utf-8'))['fingerprint']}"
    except (UsageError, OSError, ValueError, KeyError):
        return f"{kind}-path:{path}"
