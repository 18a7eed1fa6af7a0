"""``prepare``: corpus -> tokenizer -> tokenized sequences on disk (the data contract).

Steps: list and hash the inputs; decide whether ``DIR`` is already up to date (fingerprint of
inputs, tokenizer and every option that changes the output); take the selected slice of the
corpus' fixed document order; split whole documents into train/validation; train or load the
tokenizer; tokenize (injecting episodes), chunk (with ``pack``: pack the short pieces into rows,
:mod:`tokenweight.data.packing`) and stream the sequences into Arrow files; save
``DIR/train``, ``DIR/validation``, ``DIR/tokenizer`` and ``DIR/manifest.json``, all inside one
``atomic_dir`` so that ``DIR`` only ever appears complete.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tokenweight.data.corpus import Corpus, open_corpus
from tokenweight.data.episodes import DocEpisodes, EpisodeConfig, inject_batch
from tokenweight.data.sequences import capacity, chunk_document
from tokenweight.errors import UsageError
from tokenweight.io_utils import atomic_dir, atomic_write_json, checksums, fingerprint, read_json_object
from tokenweight.outputs import first_difference, foreign_output, other_settings, output_lock

if TYPE_CHECKING:
    from tokenweight.data.tokenizer import Encoder

FORMAT = "tokenweight.prepared/1"
#: documents are processed in batches of about this many characters (bounded memory, and large
#: enough for the tokenizer's parallel batch API)
BATCH_CHARS = 1_000_000


def val_mask(count: int, fraction: float) -> np.ndarray:
    """Which of ``count`` documents (in selection order) are validation documents.

    Document ``i`` is held out when ``ceil((i+1) f) > ceil(i f)``: exactly ``ceil(k f)`` of any
    first ``k`` documents, evenly spread (the first one included, so any ``f > 0`` gives a
    validation split), and the same documents whatever ``max_tokens`` cuts off later.
    """
    f = Fraction(str(fraction))
    i = np.arange(count, dtype=object)
    return np.array([-((-(k + 1) * f) // 1) > -((-k * f) // 1) for k in i], dtype=bool)


def _resolve_skip(cfg, corpus: Corpus) -> int:
    skip = cfg.skip_documents
    if cfg.after is not None:
        m = _read_manifest(Path(cfg.after))
        if m is None:
            raise UsageError(
                f"--after {cfg.after!r} is not a prepared folder (no manifest.json): run prepare on it first"
            )
        if m.get("inputs", {}).get("fingerprint") != corpus.fingerprint:
            raise UsageError(f"--after {cfg.after!r} was prepared from a different corpus: use the same inputs")
        skip += int(m["selection"]["end"])
    return skip


def _read_manifest(out: Path) -> dict | None:
    return read_json_object(out / "manifest.json")


def _batches(order: np.ndarray, corpus: Corpus) -> Iterator[tuple[np.ndarray, list[str]]]:
    """``(doc_ids, texts)`` in selection order, about ``BATCH_CHARS`` characters at a time."""
    i = 0
    while i < len(order):
        ids, texts, chars = [], [], 0
        while i < len(order) and chars < BATCH_CHARS:
            step = order[i : i + 64]
            got = corpus.read(step)
            ids.extend(step.tolist())
            texts.extend(got)
            chars += sum(map(len, got))
            i += len(step)
        yield np.asarray(ids, dtype=np.int64), texts


@dataclass(frozen=True)
class _Job:
    """One batch of documents to tokenize (with episodes): the arguments of :func:`inject_batch`.

    Picklable: it is sent to the worker processes.
    """

    texts: list[str]
    encoder: Encoder
    episodes: EpisodeConfig | None
    capacity: int  # document tokens per sequence
    tail_min: int | None  # smallest kept tail in document tokens (None: tails are dropped)
    extra_tokens: int  # tokens appended after each text (1 for EOS)
    seeds: list[list[int]]  # per document, the entropy of its generator


def _work(job: _Job) -> list[DocEpisodes]:
    return inject_batch(job.texts, job.encoder, job.episodes, job.capacity, job.tail_min, job.extra_tokens, job.seeds)


def _run(jobs: Iterator[tuple[object, _Job]], workers: int) -> Iterator[tuple[object, list[DocEpisodes]]]:
    """``(meta, _work(job))`` for ``(meta, job)`` in order: in this process, or in ``workers``
    processes with at most ``2 * workers`` batches in flight (bounded memory; the caller may stop
    early, and unstarted batches are then cancelled)."""
    if workers <= 1:
        for meta, job in jobs:
            yield meta, _work(job)
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        pending = []
        try:
            for meta, job in jobs:
                pending.append((meta, pool.submit(_work, job)))
                if len(pending) >= 2 * workers:
                    meta0, fut = pending.pop(0)
                    yield meta0, fut.result()
            while pending:
                meta0, fut = pending.pop(0)
                yield meta0, fut.result()
        finally:
            for _, fut in pending:
                fut.cancel()


def _train_tokenizer(cfg, corpus: Corpus, train_ids: np.ndarray):
    from tokenweight.data.tokenizer import train_tokenizer

    def texts():
        budget = cfg.tokenizer_train_chars
        for start in range(0, len(train_ids), 64):
            for t in corpus.read(train_ids[start : start + 64]):
                yield t[:budget]
                budget -= len(t)
                if budget <= 0:
                    return

    return train_tokenizer(texts(), cfg.vocab_size)


def prepare(out: str | Path, cfg, *, force: bool = False) -> tuple[dict, bool]:
    """Write a prepared folder; returns ``(manifest, wrote)`` (``wrote=False``: up to date).

    The resume contract: the same settings find the folder up to date (and intact: its recorded
    checksums are verified; a damaged folder is rebuilt); other settings are refused with one line
    naming the first difference unless ``force``; the new folder replaces the old one only when
    complete, so a kill leaves the old one (or nothing) and the same command starts over. A second
    process writing ``out`` is refused at once (the output protocol: :mod:`tokenweight.outputs`).
    """
    from tokenweight.io_utils import clean_temporaries

    (cfg if out is None else replace(cfg, out=str(out))).check()  # the one check of the options, first
    with output_lock(Path(out).expanduser()):
        clean_temporaries(Path(out).expanduser())  # what a killed prepare left next to it
        return _prepare(out, cfg, force=force)


def _mixture(cfg, ratios: list[float], budgets: list[int], w) -> list[dict]:
    """The manifest's ``mixture``: per input its ratio, its token budget and what it gave the train split."""
    return [
        {"input": str(inp), "ratio": r, "budget": b, "tokens": m["tokens"], "documents": m["documents"]}
        for inp, r, b, m in zip(cfg.inputs, ratios, budgets, w.mixed)
    ]


def _settings(corpus_fp: str, tok_id, cfg, skip: int) -> dict:
    """What the output depends on, flat (its fingerprint is the folder's; recorded in the manifest)."""
    settings = {**cfg.identity(), "inputs": corpus_fp, "tokenizer_identity": tok_id, "skip": skip, "format": FORMAT}
    return json.loads(json.dumps(settings, default=str))  # as it reads back from manifest.json


_NOT_OPTIONS = ("inputs", "tokenizer_identity", "skip", "format")


def _fp_parts(settings: dict) -> dict:
    """The object whose fingerprint names a prepared folder (as it was before ``settings`` existed)."""
    return {
        "format": settings["format"],
        "corpus": settings["inputs"],
        "tokenizer": settings["tokenizer_identity"],
        "options": {k: v for k, v in settings.items() if k not in _NOT_OPTIONS},
        "skip": settings["skip"],
    }


def _refuse_other_settings(out: Path, old: dict, settings: dict) -> None:
    """UsageError naming the first setting that differs from the one ``out`` was prepared with."""
    was = old.get("settings")
    if not isinstance(was, dict):  # prepared by an older version: only the fingerprint is known
        was, settings = {"fingerprint": old.get("fingerprint")}, {"fingerprint": fingerprint(_fp_parts(settings))}
    absent = {"pack": False}  # settings left out of the identity at their default
    # pack first: it changes min_tail's meaning, and is the difference to name
    keys = ["pack", *(k for k in [*settings, *was] if k != "pack")]
    k = first_difference(was, settings, keys, defaults=absent) or keys[1]
    raise other_settings(out, "was prepared", k, was.get(k, absent.get(k)), settings.get(k, absent.get(k)))


def _intact(out: Path, manifest: dict) -> bool:
    """Whether every file recorded in the manifest's checksums still has its bytes."""
    from tokenweight.io_utils import check_files

    try:
        check_files(out, manifest.get("checksums") or {}, what="prepared file", fix="")
    except UsageError:
        return False
    return True


def _prepare(out: str | Path, cfg, *, force: bool = False) -> tuple[dict, bool]:
    from tqdm.auto import tqdm

    from tokenweight import __version__
    from tokenweight.data import writer
    from tokenweight.data.tokenizer import Encoder, encoder_digest, tokenizer_info
    from tokenweight.identity import load_tokenizer, tokenizer_digest

    cfg = replace(cfg, out=str(out))
    out = Path(out).expanduser()
    corpus = open_corpus(
        cfg.inputs, cfg.corpus, text_field=cfg.text_field, split=cfg.split, dataset_config=cfg.dataset_config
    )
    skip = _resolve_skip(cfg, corpus)
    tok = load_tokenizer(cfg.tokenizer, require_fast=True) if cfg.tokenizer is not None else None
    if cfg.pack and tok is not None and tok.bos_token_id is None and tok.eos_token_id is None:
        raise UsageError(
            f"--pack needs a tokenizer with an EOS or BOS token: {cfg.tokenizer!r} has neither, so the documents "
            "of a row could not be told apart; use a tokenizer with one, or prepare without --pack"
        )
    # a given tokenizer counts by its identity and by what its encoder does, never by its path
    tok_id = {"identity": tokenizer_digest(tok), "encoder": encoder_digest(tok)} if tok is not None else "train"
    settings = _settings(corpus.fingerprint, tok_id, cfg, skip)
    fp = fingerprint(_fp_parts(settings))
    old = _read_manifest(out)
    if old is not None and old.get("fingerprint") == fp and not force and writer.complete(out) and _intact(out, old):
        return old, False
    if old is not None and old.get("fingerprint") != fp and not force:
        _refuse_other_settings(out, old, settings)
    if out.exists() and old is None and (not out.is_dir() or any(out.iterdir())):
        raise foreign_output(out, "a prepared folder")
    if corpus.skipped:
        s = corpus.summary()
        why = ", ".join(f"{v} {k}" for k, v in sorted(s["skipped_reasons"].items()))
        print(
            f"tokenweight: warning: skipped {len(corpus.skipped)} input file(s) ({why}), e.g. "
            f"{corpus.skipped[0][0]}; listed in manifest.json",
            file=sys.stderr,
        )
    order = corpus.selection_order()[skip:]
    if cfg.max_documents is not None:
        order = order[: cfg.max_documents]
    if len(order) == 0:
        raise UsageError(
            f"no usable documents: the corpus has {len(corpus)} (after skipping {skip}); "
            "pass other inputs or a smaller --skip-documents"
        )
    is_val = val_mask(len(order), cfg.val_fraction)
    ep = cfg.episode_config()

    with atomic_dir(out) as tmp:
        if tok is None:
            tok = _train_tokenizer(cfg, corpus, order[~is_val])
        tok.save_pretrained(str(tmp / "tokenizer"))
        bos, eos = tok.bos_token_id, tok.eos_token_id
        cap = capacity(cfg.n, bos)
        min_tail = cfg.kept_tail()
        tail_min = None if min_tail is None else max(1, min_tail - (cfg.n - cap))
        encoder = Encoder(tok, parallel=cfg.workers == 0)
        extra = 1 if eos is not None else 0
        ratios = cfg.mix_ratios()  # a mixture: each input's share of max_tokens (validated with the options)
        budgets = None if ratios is None else [int(r * cfg.max_tokens) for r in ratios]
        w = writer.SplitWriters(tmp, cfg.max_tokens, cfg.n if cfg.pack else None, min_tail or 2, budgets)
        input_of = corpus.input_of()
        jobs = (
            (ids, _Job(texts, encoder, ep, cap, tail_min, extra, [[cfg.seed, int(d)] for d in ids]))
            for ids, texts in _batches(order, corpus)
        )
        pos = 0  # documents consumed, in selection order
        with tqdm(total=len(order), unit="doc", desc="prepare", disable=None) as bar:
            for ids, results in _run(jobs, cfg.workers):
                for doc_id, res in zip(ids, results):
                    doc = res.ids if eos is None else np.append(res.ids, np.int32(eos))
                    chunks = chunk_document(doc, cfg.n, bos, min_tail, res.spans)
                    w.add(
                        "validation" if is_val[pos] else "train",
                        int(doc_id),
                        len(res.ids),
                        chunks,
                        res.planned,
                        res.injected,
                        int(input_of[doc_id]),
                    )
                    pos += 1
                    if w.full:
                        break
                bar.update(len(ids))
                if w.full:
                    break
        w.finish(cfg.n, pos)
        manifest = {
            "format": FORMAT,
            "created_by": f"tokenweight {__version__}",
            "n": cfg.n,
            "tokenizer": "tokenizer",
            "tokenizer_info": dict(
                tokenizer_info(tok), source=cfg.tokenizer or f"trained byte-level BPE ({cfg.vocab_size})"
            ),
            "counts": w.counts(corpus.summary(), pos, cfg.n),
            "fingerprint": fp,
            "inputs": corpus.summary(),
            "selection": {
                "order": "blake2b(document key)",
                "skip": skip,
                "end": skip + pos,
                "max_documents": cfg.max_documents,
                "max_tokens": cfg.max_tokens,
                "after": cfg.after,
            },
            "episodes": w.episode_summary(ep),
            **({} if ratios is None else {"mixture": _mixture(cfg, ratios, budgets, w)}),
            "options": {
                **{k: v for k, v in asdict(cfg).items() if k not in ("out", "force")},
                **({"packed": True} if cfg.pack else {}),
            },
            "settings": settings,
            # checked by load_prepared: a damaged or truncated file is refused, never read (the
            # splits' state.json holds a random datasets fingerprint: only their Arrow files count)
            "checksums": {**checksums(tmp, ("train", "validation"), "*.arrow"), **checksums(tmp, ("tokenizer",))},
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest, True
