"""``prepare``: corpus -> tokenizer -> tokenized sequences on disk (the data contract).

Steps: list and hash the inputs; decide whether ``DIR`` is already up to date (fingerprint of
inputs, tokenizer and every option that changes the output); take the selected slice of the
corpus' fixed document order; split whole documents into train/validation; train or load the
tokenizer; tokenize (injecting episodes), chunk and stream the sequences into Arrow files; save
``DIR/train``, ``DIR/validation``, ``DIR/tokenizer`` and ``DIR/manifest.json``, all inside one
``atomic_dir`` so that ``DIR`` only ever appears complete.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from tokenweight.data.corpus import STDLIB_CORPORA, Corpus, open_corpus
from tokenweight.data.episodes import EpisodeConfig, inject_batch, parse_distance
from tokenweight.data.sequences import capacity, chunk_document
from tokenweight.data.tokenizer import DEFAULT_VOCAB_SIZE, MAX_VOCAB_SIZE, MIN_VOCAB_SIZE
from tokenweight.errors import UsageError
from tokenweight.io_utils import atomic_dir, atomic_write_json, fingerprint

FORMAT = "tokenweight.prepared/1"
MAX_N = 1 << 20
#: documents are processed in batches of about this many characters (bounded memory, and large
#: enough for the tokenizer's parallel batch API)
BATCH_CHARS = 1_000_000
DEFAULT_EPISODES_PER_1K = 2.0


@dataclass
class PrepareConfig:
    """Every option of ``tokenweight prepare`` (see ``tokenweight prepare --help``)."""

    inputs: list[str] = field(default_factory=list)
    corpus: str | None = None
    text_field: str = "text"
    split: str = "train"
    dataset_config: str | None = None
    tokenizer: str | None = None
    vocab_size: int = DEFAULT_VOCAB_SIZE
    tokenizer_train_chars: int = 5_000_000
    n: int = 1024
    val_fraction: float = 0.05
    min_tail: int | None = None
    max_documents: int | None = None
    max_tokens: int | None = None
    skip_documents: int = 0
    after: str | None = None
    episodes_per_1k: float | None = None
    episode_distance: str | None = None
    episode_digits: int = 7
    episode_style: str = "restate"
    seed: int = 0
    workers: int = 0

    def is_stdlib(self) -> bool:
        return self.corpus in STDLIB_CORPORA or (self.corpus is None and not self.inputs)

    def episode_config(self) -> EpisodeConfig | None:
        """None when episodes are off (the default for user corpora)."""
        per_1k = self.episodes_per_1k
        if per_1k is None:
            per_1k = DEFAULT_EPISODES_PER_1K if self.is_stdlib() else 0.0
        if per_1k == 0:
            return None
        lo, hi = parse_distance(self.episode_distance or "16:")
        return EpisodeConfig(
            per_1k=float(per_1k), min_distance=lo, max_distance=hi, digits=self.episode_digits, style=self.episode_style
        )

    def validate(self) -> None:
        """Raise UsageError naming the option and its valid range."""

        def bad(opt, value, rule):
            raise UsageError(f"--{opt} {value!r} is invalid: {rule}")

        if not isinstance(self.n, int) or not 2 <= self.n <= MAX_N:
            bad("n", self.n, f"the sequence length must be an int in [2, {MAX_N}]")
        if not 0 <= self.val_fraction < 1:
            bad("val-fraction", self.val_fraction, "use a fraction in [0, 1), e.g. 0.05")
        if self.min_tail is not None and not 2 <= self.min_tail <= self.n:
            bad("min-tail", self.min_tail, f"use an int in [2, n={self.n}]")
        if self.max_documents is not None and self.max_documents < 1:
            bad("max-documents", self.max_documents, "use an int >= 1")
        if self.max_tokens is not None and self.max_tokens < self.n:
            bad("max-tokens", self.max_tokens, f"use at least n={self.n} (one sequence)")
        if self.skip_documents < 0:
            bad("skip-documents", self.skip_documents, "use an int >= 0")
        if self.tokenizer is None and not MIN_VOCAB_SIZE <= self.vocab_size <= MAX_VOCAB_SIZE:
            bad("vocab-size", self.vocab_size, f"use an int in [{MIN_VOCAB_SIZE}, {MAX_VOCAB_SIZE}]")
        if self.tokenizer_train_chars < 1:
            bad("tokenizer-train-chars", self.tokenizer_train_chars, "use an int >= 1")
        if self.workers < 0:
            bad("workers", self.workers, "use 0 (tokenizer threads), 1 (one thread) or more processes")
        try:
            ep = self.episode_config()
        except ValueError as e:
            raise UsageError(
                f"bad episode option ({e}): check --episodes-per-1k (0-20), "
                "--episode-distance MIN:MAX, --episode-digits (1-18) and --episode-style"
            ) from None
        if ep is not None:
            fits = ep.max_fitting(capacity(self.n, 0))
            if ep.min_distance > fits:
                bad(
                    "episode-distance",
                    self.episode_distance,
                    f"with n={self.n} an episode fits only up to ~{fits} tokens apart: lower MIN or raise --n",
                )

    def identity(self) -> dict:
        """The options that change the output (not ``workers``, not the ``after`` path itself)."""
        d = asdict(self)
        for k in ("workers", "after", "inputs", "corpus"):  # inputs: by content, after: as the skip
            d.pop(k)
        if self.tokenizer is not None:  # a given tokenizer counts by its definition, not its path
            for k in ("tokenizer", "vocab_size", "tokenizer_train_chars"):
                d.pop(k)
        ep = self.episode_config()
        d["episodes_per_1k"] = ep.to_dict() if ep else None
        d.pop("episode_distance"), d.pop("episode_digits"), d.pop("episode_style")
        return d


def val_mask(count: int, fraction: float) -> np.ndarray:
    """Which of ``count`` documents (in selection order) are validation documents.

    Document ``i`` is held out when ``ceil((i+1) f) > ceil(i f)``: exactly ``ceil(k f)`` of any
    first ``k`` documents, evenly spread (the first one included, so any ``f > 0`` gives a
    validation split), and the same documents whatever ``max_tokens`` cuts off later.
    """
    f = Fraction(str(fraction))
    i = np.arange(count, dtype=object)
    return np.array([-((-(k + 1) * f) // 1) > -((-k * f) // 1) for k in i], dtype=bool)


def _resolve_skip(cfg: PrepareConfig, corpus: Corpus) -> int:
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
    try:
        return json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


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


def _work(job):
    texts, encoder, ep, cap, tail_min, extra, seeds = job
    return inject_batch(texts, encoder, ep, cap, tail_min, extra, seeds)


def _run(jobs: Iterator[tuple[object, tuple]], workers: int) -> Iterator[tuple[object, list]]:
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


def _train_tokenizer(cfg: PrepareConfig, corpus: Corpus, train_ids: np.ndarray):
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


def prepare(out: str | Path, cfg: PrepareConfig, *, force: bool = False) -> tuple[dict, bool]:
    """Write a prepared folder; returns ``(manifest, wrote)`` (``wrote=False``: up to date)."""
    from tqdm.auto import tqdm

    from tokenweight import __version__
    from tokenweight.data import writer
    from tokenweight.data.tokenizer import Encoder, load_tokenizer, tokenizer_fingerprint, tokenizer_info

    cfg.validate()
    out = Path(out).expanduser()
    corpus = open_corpus(
        cfg.inputs, cfg.corpus, text_field=cfg.text_field, split=cfg.split, dataset_config=cfg.dataset_config
    )
    skip = _resolve_skip(cfg, corpus)
    tok = load_tokenizer(cfg.tokenizer) if cfg.tokenizer is not None else None
    tok_id = tokenizer_fingerprint(tok) if tok is not None else "train"
    fp = fingerprint(
        {"format": FORMAT, "corpus": corpus.fingerprint, "tokenizer": tok_id, "options": cfg.identity(), "skip": skip}
    )
    old = _read_manifest(out)
    if old is not None and old.get("fingerprint") == fp and not force and writer.complete(out):
        return old, False
    if out.exists() and old is None and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {str(out)!r} exists and is not a prepared folder: choose a new or empty folder")
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
        tail_min = None if cfg.min_tail is None else max(1, cfg.min_tail - (cfg.n - cap))
        encoder = Encoder(tok, parallel=cfg.workers == 0)
        extra = 1 if eos is not None else 0
        w = writer.SplitWriters(tmp, cfg.max_tokens)
        jobs = (
            (ids, (texts, encoder, ep, cap, tail_min, extra, [[cfg.seed, int(d)] for d in ids]))
            for ids, texts in _batches(order, corpus)
        )
        pos = 0  # documents consumed, in selection order
        with tqdm(total=len(order), unit="doc", desc="prepare", disable=None) as bar:
            for ids, results in _run(jobs, cfg.workers):
                for doc_id, res in zip(ids, results):
                    doc = res.ids if eos is None else np.append(res.ids, np.int32(eos))
                    chunks = chunk_document(doc, cfg.n, bos, cfg.min_tail, res.spans)
                    w.add(
                        "validation" if is_val[pos] else "train",
                        int(doc_id),
                        len(res.ids),
                        chunks,
                        res.planned,
                        res.injected,
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
            "counts": w.counts(corpus.summary(), pos),
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
            "options": asdict(cfg),
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest, True
