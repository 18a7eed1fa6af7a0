"""Helpers of the packed-evaluation tests: documents with episodes, packed by hand into rows with a
``doc_lengths`` column (docs/DATA.md's ``--pack`` contract: documents back to back, BOS first in
each, the rest of a row padding, episodes in row coordinates), and the same documents one per row."""

from __future__ import annotations

import json

import torch

PAD = 2

#: document lengths (some within the window w = 16, some beyond; one of 2 tokens)
LENGTHS = (20, 9, 30, 5, 17, 40, 12, 33, 2, 26)


def documents(tokenizer, lengths=LENGTHS, seed: int = 0) -> list[dict]:
    """Random documents (BOS first), each with episodes inside it when it is long enough."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for length in lengths:
        ids = torch.randint(3, len(tokenizer), (length,), generator=g)
        ids[0] = tokenizer.bos_token_id
        eps = [[2, 4, 12, 14]] if length >= 14 else []
        if length >= 30:
            eps.append([5, 8, length - 4, length - 1])
        for ds, de, us, ue in eps:
            ids[us:ue] = ids[ds:de]
        out.append({"input_ids": ids.tolist(), "episodes": eps})
    return out


def pack(docs: list[dict], n: int, pad: bool = True) -> list[dict]:
    """Greedy first-fit-in-order packing into rows of at most ``n`` tokens (padded to ``n`` when
    ``pad``), episodes shifted into row coordinates."""
    rows: list[dict] = []
    for d in docs:
        if not rows or sum(rows[-1]["doc_lengths"]) + len(d["input_ids"]) > n:
            rows.append({"input_ids": [], "episodes": [], "doc_lengths": []})
        r = rows[-1]
        start = len(r["input_ids"])
        r["input_ids"] += d["input_ids"]
        r["episodes"] += [[x + start for x in ep] for ep in d["episodes"]]
        r["doc_lengths"].append(len(d["input_ids"]))
    if pad:
        for r in rows:
            r["input_ids"] += [PAD] * (n - len(r["input_ids"]))
    return rows


def save_prepared(path, tokenizer, rows: list[dict], n: int, fingerprint: str = "abc") -> None:
    """A prepared folder by hand (columns input_ids, doc_id, episodes and, when the rows have it,
    doc_lengths; ``"packed": true`` in the manifest's options then)."""
    import datasets

    cols = {
        "input_ids": [r["input_ids"] for r in rows],
        "doc_id": list(range(len(rows))),
        "episodes": [r["episodes"] for r in rows],
    }
    packed = "doc_lengths" in rows[0]
    if packed:
        cols["doc_lengths"] = [r["doc_lengths"] for r in rows]
    ds = datasets.Dataset.from_dict(cols)
    ds.save_to_disk(str(path / "validation"))
    ds.select(range(1)).save_to_disk(str(path / "train"))
    tokenizer.save_pretrained(path / "tokenizer")
    manifest = {
        "n": n,
        "tokenizer": "bpe",
        "counts": {"validation": len(rows)},
        "fingerprint": fingerprint,
        "episodes": {},
        "options": {"packed": packed},
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
