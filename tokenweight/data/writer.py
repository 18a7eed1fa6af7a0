"""Stream sequences into the two ``datasets`` splits of a prepared folder, and count them.

Why Arrow files written incrementally (``datasets.arrow_writer.ArrowWriter``) rather than
``Dataset.from_dict``: memory stays bounded by one batch of documents whatever the corpus size
(PG19 is ~2B tokens); the finished files are then saved with ``save_to_disk``, which gives the
standard, memory-mapped layout that ``datasets.load_from_disk`` reads.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from tokenweight.data.episodes import DEF_TEMPLATE, USE_TEMPLATES, EpisodeConfig
from tokenweight.data.sequences import Chunked
from tokenweight.errors import UsageError
from tokenweight.io_utils import file_digest

SPLITS = ("train", "validation")


def features(packed: bool = False):
    """The columns of a split; ``packed`` adds ``doc_lengths`` (list<int32>: the pieces of a row)."""
    from datasets import Features, List, Value

    cols = {"input_ids": List(Value("int32")), "doc_id": Value("int64"), "episodes": List(List(Value("int32")))}
    if packed:
        cols["doc_lengths"] = List(Value("int32"))
    return Features(cols)


def complete(folder: Path) -> bool:
    """Whether ``folder`` holds every part of a prepared folder."""
    return (folder / "manifest.json").is_file() and all((folder / p).is_dir() for p in (*SPLITS, "tokenizer"))


def _empty_stats() -> dict:
    return {
        "documents": 0,
        "sequences": 0,
        "tokens": 0,
        "episodes": 0,
        "empty_documents": 0,
        "short_documents": 0,
        "dropped_tail_tokens": 0,
    }


class SplitWriters:
    """Writers for ``train`` and ``validation`` under ``folder``; ``max_tokens`` caps train.

    ``pack_n``: pack the pieces into rows of at most this many tokens (:mod:`tokenweight.data.packing`,
    one packer per split, ``min_piece`` its smallest piece) and write the ``doc_lengths`` column;
    None: every row is one document's sequence, as without ``--pack``.
    """

    def __init__(
        self,
        folder: Path,
        max_tokens: int | None,
        pack_n: int | None = None,
        min_piece: int = 2,
        budgets: list[int] | None = None,
    ):
        from datasets.arrow_writer import ArrowWriter

        from tokenweight.data.packing import Packer

        self.folder, self.max_tokens, self.full = Path(folder), max_tokens, False
        #: a mixture (unpacked rows): train tokens allowed per input, in place of ``max_tokens``; ``full``
        #: once every input's budget is reached; per input, tokens and documents written
        self.budgets = budgets
        self.mixed = [{"tokens": 0, "documents": 0, "full": False} for _ in budgets or []]
        self.work = self.folder / ".work"
        self.work.mkdir()
        packed = pack_n is not None
        self.writers = {s: ArrowWriter(features=features(packed), path=str(self.work / f"{s}.arrow")) for s in SPLITS}
        self.stats = {s: _empty_stats() for s in SPLITS}
        self.packers = {s: Packer(pack_n, min_piece=min_piece) for s in SPLITS} if packed else None
        if packed:
            for st in self.stats.values():
                st["pieces"] = 0
        self.distances: list[np.ndarray] = []
        self.planned = self.injected = 0

    def add(
        self, split: str, doc_id: int, text_tokens: int, chunks: Chunked, planned: int, injected: int, group: int = 0
    ) -> None:
        """Add one document's sequences (train stops, and ``full`` is set, at ``max_tokens``; in a
        mixture, the document's input ``group`` stops at its budget, and ``full`` once all have)."""
        st = self.stats[split]
        mixed = self.mixed[group] if self.budgets is not None and split == "train" else None
        if mixed is not None and mixed["full"]:
            return
        self.planned += planned
        self.injected += injected
        if text_tokens == 0:
            st["empty_documents"] += 1
            return
        if not chunks.sequences:
            st["short_documents"] += 1
        st["dropped_tail_tokens"] += chunks.dropped_tokens
        if self.packers is not None:
            from tokenweight.data.packing import Piece

            packer, rows = self.packers[split], []
            for k, (seq, eps) in enumerate(zip(chunks.sequences, chunks.episodes)):
                rows += packer.add(Piece(seq, eps, doc_id, k == 0))
            self._write_packed(split, rows)
            return
        rows = {"input_ids": [], "doc_id": [], "episodes": []}
        for seq, eps in zip(chunks.sequences, chunks.episodes):
            if mixed is not None:
                if mixed["tokens"] + len(seq) > self.budgets[group]:
                    mixed["full"] = True
                    self.full = all(m["full"] for m in self.mixed)
                    break
                mixed["tokens"] += len(seq)
            elif split == "train" and self.max_tokens is not None and st["tokens"] + len(seq) > self.max_tokens:
                self.full = True
                break
            rows["input_ids"].append(seq)
            rows["doc_id"].append(doc_id)
            rows["episodes"].append(eps.tolist())
            st["sequences"] += 1
            st["tokens"] += len(seq)
            st["episodes"] += len(eps)
            if len(eps):
                self.distances.append(eps[:, 2] - eps[:, 0])
        if rows["doc_id"]:
            st["documents"] += 1
            if mixed is not None:
                mixed["documents"] += 1
            self.writers[split].write_batch(rows)

    def _write_packed(self, split: str, rows: list) -> None:
        """Write packed rows in order; train stops at the first row that would pass ``max_tokens``
        (then ``full`` is set and no later train row is written). A document counts when the row
        holding its first piece is written (its later pieces cannot be written without it: a
        document's full chunks are written at once, before its tail)."""
        st = self.stats[split]
        batch = {"input_ids": [], "doc_id": [], "episodes": [], "doc_lengths": []}
        for row in rows:
            if split == "train" and (
                self.full or (self.max_tokens is not None and st["tokens"] + row.size > self.max_tokens)
            ):
                self.full = True
                break
            eps = row.episodes
            batch["input_ids"].append(row.input_ids)
            batch["doc_id"].append(row.doc_id)
            batch["episodes"].append(eps.tolist())
            batch["doc_lengths"].append(row.doc_lengths)
            st["sequences"] += 1
            st["tokens"] += row.size
            st["episodes"] += len(eps)
            st["pieces"] += len(row.pieces)
            st["documents"] += sum(p.first for p in row.pieces)
            if len(eps):
                self.distances.append(eps[:, 2] - eps[:, 0])
        if batch["doc_id"]:
            self.writers[split].write_batch(batch)

    def finish(self, n: int, documents: int) -> None:
        """Save both splits as ``datasets`` folders; UsageError when train got no sequence."""
        import datasets

        if self.packers is not None:  # the rows still open (train: as far as max_tokens allows)
            for s in SPLITS:
                self._write_packed(s, self.packers[s].flush())
        for w in self.writers.values():
            w.finalize()
        if self.stats["train"]["sequences"] == 0:
            st = self.stats["train"]
            raise UsageError(
                f"no training sequences of n={n} tokens from {documents} selected document(s) "
                f"({st['empty_documents']} empty, {st['short_documents']} shorter than n): "
                "add documents, lower --n, keep tails with --min-tail, or lower --val-fraction"
            )
        was_disabled = datasets.are_progress_bars_disabled()
        datasets.disable_progress_bars()  # our own bar covers the run
        try:
            for s in SPLITS:
                arrow = self.work / f"{s}.arrow"
                ds = datasets.Dataset.from_file(str(arrow))
                # datasets derives the fingerprint from the (temporary) path: use the content, so that
                # the same data always gives byte-identical folders (state.json included)
                ds._fingerprint = file_digest(arrow)
                # an empty split needs one explicit (empty) shard to be loadable again
                ds.save_to_disk(str(self.folder / s), num_shards=1 if len(ds) == 0 else None)
                del ds
        finally:
            if not was_disabled:
                datasets.enable_progress_bars()
        shutil.rmtree(self.work)

    def counts(self, corpus_summary: dict, selected: int, n: int) -> dict:
        """The manifest's ``counts``: per split the stats, ``padding_share`` (``1 - tokens / (rows * n)``:
        the share of a batch of rows right-padded to ``n`` that is padding; 0 for an empty split) and,
        when packed, ``pieces`` and ``documents_per_row`` (pieces per row, a piece being a document or
        a chunk of one)."""
        per_split = {}
        for s, v in self.stats.items():
            c = dict(v)
            rows = c["sequences"]
            c["padding_share"] = round(1 - c["tokens"] / (rows * n), 6) if rows else 0.0
            if self.packers is not None:
                c["documents_per_row"] = round(c["pieces"] / rows, 4) if rows else 0.0
            per_split[s] = c
        return {
            **per_split,
            "corpus_documents": corpus_summary["documents"],
            "selected_documents": selected,
            "skipped_files": corpus_summary["skipped_files"],
            "skipped_reasons": corpus_summary["skipped_reasons"],
        }

    def episode_summary(self, ep: EpisodeConfig | None) -> dict:
        if ep is None:
            return {"enabled": False, "per_1k": 0.0}
        d = np.concatenate(self.distances) if self.distances else np.zeros(0, dtype=np.int64)
        recorded = {s: self.stats[s]["episodes"] for s in SPLITS}
        tokens = sum(self.stats[s]["tokens"] for s in SPLITS)
        return {
            "enabled": True,
            **ep.to_dict(),
            "planned": self.planned,
            "injected": self.injected,
            "recorded": recorded,
            "recorded_per_1k": round(1000 * sum(recorded.values()) / max(1, tokens), 4),
            "distance": (
                {"min": int(d.min()), "max": int(d.max()), "mean": round(float(d.mean()), 2)} if len(d) else None
            ),
            "definition": DEF_TEMPLATE,
            "uses": list(USE_TEMPLATES[ep.style]),
        }
