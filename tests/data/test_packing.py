"""``prepare --pack``: the packing rule on hand-made pieces, and packed folders against unpacked ones."""

import json
import random

import numpy as np
import pytest

from tests.data.conftest import make_docs
from tokenweight.cli.main import main
from tokenweight.data import load_prepared, packed_lengths
from tokenweight.data.packing import Packer, Piece, pack_pieces
from tokenweight.data.pipeline import prepare
from tokenweight.errors import UsageError
from tokenweight.stages.prepare import PrepareConfig


def _piece(tag: int, size: int, eps=(), doc=None, first=True):
    return Piece(np.full(size, tag, dtype=np.int32), np.asarray(eps, dtype=np.int64).reshape(-1, 4), doc or tag, first)


def test_hand_made_rows_exact():
    sizes = dict(A=10, B=4, C=5, D=3, E=6, F=2, G=9, H=7, I=6, J=5, K=6, L=3)
    eps = {"C": [[1, 2, 3, 4]], "L": [[0, 1, 1, 2]]}
    pieces = [_piece(i + 1, s, eps.get(k, ())) for i, (k, s) in enumerate(sizes.items())]
    rows = pack_pieces(pieces, n=10, max_open=2, min_piece=2)
    names = "ABCDEFGHIJKL"
    got = [[names[int(p.ids[0]) - 1] for p in r.pieces] for r in rows]
    # A full: alone; B+C leave 1 < 2 free: written; D+E likewise; G alone (free 1) before F+H;
    # J finds no room with I and J open (max_open=2): the fullest, I (free 4), is written; L joins J
    assert got == [["A"], ["B", "C"], ["D", "E"], ["G"], ["F", "H"], ["I"], ["J", "L"], ["K"]]
    assert [r.doc_lengths for r in rows] == [[10], [4, 5], [3, 6], [9], [2, 7], [6], [5, 3], [6]]
    assert rows[1].input_ids.tolist() == [2] * 4 + [3] * 5 and rows[1].doc_id == 2
    assert rows[1].episodes.tolist() == [[5, 6, 7, 8]]  # C's span shifted by B's 4 tokens
    assert rows[6].episodes.tolist() == [[5, 6, 6, 7]]  # L after J's 5 tokens
    assert all(r.episodes.shape == (0, 4) for i, r in enumerate(rows) if i not in (1, 6))


def test_packer_rejects_bad_pieces_and_settings():
    with pytest.raises(ValueError, match="a piece must have 1 to n=8 tokens, got 9"):
        Packer(8).add(_piece(1, 9))
    with pytest.raises(ValueError, match="min_piece"):
        Packer(8, min_piece=9)
    with pytest.raises(ValueError, match="max_open"):
        Packer(8, max_open=0)


@pytest.mark.parametrize("seed,max_open", [(0, 1), (1, 3), (2, 16)])
def test_every_token_once_in_order(seed, max_open):
    """Documents chunked as prepare does (full pieces of n, then a tail), tokens numbered uniquely."""
    rng = random.Random(seed)
    n, next_token, pieces, docs = 16, 0, [], {}
    for doc in range(200):
        length = rng.choice([rng.randint(2, 15), rng.randint(2, 60)])
        tokens = list(range(next_token, next_token + length))
        next_token += length
        docs[doc] = tokens
        for k in range(0, length, n):
            chunk = tokens[k : k + n]
            if len(chunk) >= 2:
                pieces.append(Piece(np.asarray(chunk, dtype=np.int32), np.zeros((0, 4)), doc, k == 0))
            else:
                docs[doc] = tokens[:k]  # a 1-token tail is not a piece (min_piece=2)
    rows = pack_pieces(pieces, n, max_open=max_open, min_piece=2)
    seen = {d: [] for d in docs}
    for r in rows:
        ids = r.input_ids.tolist()
        assert 0 < r.size == len(ids) == sum(r.doc_lengths) <= n
        starts = np.cumsum([0] + r.doc_lengths[:-1])
        for p, s in zip(r.pieces, starts):
            assert ids[s : s + len(p.ids)] == p.ids.tolist()
            seen[p.doc_id] += p.ids.tolist()
        order = [pieces.index(p) for p in r.pieces]
        assert order == sorted(order)  # pieces keep document order within a row
    assert seen == docs  # every token of every document exactly once, in order
    assert sum(r.size for r in rows) == sum(len(p.ids) for p in pieces)
    assert all(len(r.pieces) == 1 for r in rows if r.size == n and len(r.pieces[0].ids) == n)


def _short_corpus(root, count=40):
    """Short documents (1-6 lines, ~5-60 tokens): mostly shorter than one sequence of 64."""
    root.mkdir(parents=True)
    for i, text in enumerate(make_docs(count, seed=5, lines=(1, 3))):
        (root / f"doc{i:02d}.txt").write_text(text)
    (root / "long.txt").write_text(make_docs(1, seed=9, lines=(60, 60))[0])  # several full sequences
    return root


def _pieces_of(ds):
    """The unpacked rows of a split as the pieces prepare --pack would pack (in row order)."""
    out, prev = [], None
    for r in ds:
        eps = np.asarray(r["episodes"], dtype=np.int64).reshape(-1, 4)
        out.append(Piece(np.asarray(r["input_ids"], dtype=np.int32), eps, r["doc_id"], r["doc_id"] != prev))
        prev = r["doc_id"]
    return out


def test_cli_pack_equals_packed_unpacked_pieces(tmp_path, tiny_tokenizer, capsys):
    src, n = _short_corpus(tmp_path / "src"), 128
    common = ["--tokenizer", str(tiny_tokenizer), "--n", str(n), "--val-fraction", "0.25"]
    common += ["--episodes-per-1k", "20", "--episode-distance", "8:30", "--episode-digits", "3"]
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    assert main(["prepare", str(src), "--out", str(plain), "--min-tail", "2", *common]) == 0
    argv = ["prepare", str(src), "--out", str(packed), "--pack", *common]
    assert main(argv) == 0
    dp, mp = load_prepared(plain)
    dk, mk = load_prepared(packed)
    assert mk["options"]["pack"] is True and mk["options"]["packed"] is True and "packed" not in mp["options"]
    assert packed_lengths(dp["train"]) is None and "doc_lengths" not in dp["validation"].column_names
    bos, eos = 1, 2
    for split in ("train", "validation"):
        # brute force: the unpacked --min-tail 2 rows are exactly the pieces; packing them gives the folder
        expect = pack_pieces(_pieces_of(dp[split]), n)
        rows = list(dk[split])
        assert [r["input_ids"] for r in rows] == [e.input_ids.tolist() for e in expect]
        assert [r["doc_lengths"] for r in rows] == [e.doc_lengths for e in expect] == packed_lengths(dk[split])
        assert [r["episodes"] for r in rows] == [e.episodes.tolist() for e in expect]
        assert [r["doc_id"] for r in rows] == [e.doc_id for e in expect]
        for r in rows:
            ids, starts = r["input_ids"], np.cumsum([0] + r["doc_lengths"][:-1]).tolist()
            assert sum(r["doc_lengths"]) == len(ids) <= n and all(ids[s] == bos for s in starts)
            for d0, d1, u0, u1 in r["episodes"]:  # each episode inside one piece, values equal
                piece = max(s for s in starts if s <= d0)
                assert ids[d0:d1] == ids[u0:u1] and piece < d0 and u1 <= piece + r["doc_lengths"][starts.index(piece)]
        cp, ck = mp["counts"][split], mk["counts"][split]
        assert (ck["tokens"], ck["episodes"], ck["documents"]) == (cp["tokens"], cp["episodes"], cp["documents"])
        assert ck["pieces"] == cp["sequences"] == sum(len(x) for x in packed_lengths(dk[split]))
        assert ck["sequences"] == len(rows) < cp["sequences"]
        assert ck["documents_per_row"] == round(ck["pieces"] / len(rows), 4)
        for c in (cp, ck):
            assert c["padding_share"] == round(1 - c["tokens"] / (c["sequences"] * n), 6)
        assert ck["padding_share"] < cp["padding_share"] / 2  # train 0.089 vs 0.433 (docs/DATA.md)
        ends = [
            r["input_ids"][s + k - 1] for r in rows for s, k in zip(np.cumsum([0] + r["doc_lengths"]), r["doc_lengths"])
        ]
        assert ends.count(eos) == ck["documents"]  # each document's last piece ends with EOS
    assert mk["episodes"]["recorded"] == mp["episodes"]["recorded"] and mk["episodes"]["recorded"]["train"] > 5
    capsys.readouterr()
    assert main(argv) == 0 and "up to date" in capsys.readouterr().out  # the same command: a no-op
    assert main(["prepare", str(src), "--out", str(packed), *common]) == 2  # without --pack: refused
    assert "was prepared with pack = True, this command has pack = False" in capsys.readouterr().err
    assert main(["prepare", str(src), "--out", str(plain), "--pack", *common]) == 2
    assert "was prepared with pack = False, this command has pack = True" in capsys.readouterr().err
    # --pack alone keeps every tail: the same folder as --pack --min-tail 2
    assert main([*argv, "--min-tail", "2"]) == 0 and "up to date" in capsys.readouterr().out


def test_pack_with_max_tokens_and_min_tail(tmp_path, tiny_tokenizer):
    src = _short_corpus(tmp_path / "src")
    kw = dict(inputs=[str(src)], tokenizer=str(tiny_tokenizer), n=64, val_fraction=0.2, pack=True)
    m, _ = prepare(tmp_path / "capped", PrepareConfig(**kw, max_tokens=700))
    assert 700 - 64 < m["counts"]["train"]["tokens"] <= 700
    m8, _ = prepare(tmp_path / "tail8", PrepareConfig(**kw, min_tail=8))
    dsd, _ = load_prepared(tmp_path / "tail8")
    lengths = [x for s in ("train", "validation") for x in sum(packed_lengths(dsd[s]), [])]
    c = m8["counts"]["train"]
    assert min(lengths) >= 8 and c["short_documents"] > 0 and c["dropped_tail_tokens"] > 0  # --min-tail still counts


def test_unpacked_identity_has_no_pack():
    """Folders prepared before --pack existed keep their fingerprint: ``pack`` is absent when off."""
    cfg = PrepareConfig(out="o", n=64)
    assert "pack" not in cfg.identity() and cfg.identity()["min_tail"] is None
    assert PrepareConfig(out="o", n=64, pack=True).identity() == {**cfg.identity(), "pack": True, "min_tail": 2}


def test_pack_needs_eos_or_bos(tmp_path, tiny_tokenizer, capsys):
    from tokenweight.identity import load_tokenizer

    tok = load_tokenizer(str(tiny_tokenizer))
    tok.bos_token = tok.eos_token = None
    tok.save_pretrained(str(tmp_path / "bare"))
    src = _short_corpus(tmp_path / "src", count=6)
    argv = ["prepare", str(src), "--out", str(tmp_path / "out"), "--tokenizer", str(tmp_path / "bare"), "--n", "64"]
    assert main([*argv, "--pack"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "tokenweight: error: --pack needs a tokenizer with an EOS or BOS token: "
    )
    assert not (tmp_path / "out").exists()
    with pytest.raises(UsageError, match="--pack needs a tokenizer with an EOS or BOS token"):
        prepare(tmp_path / "out", PrepareConfig(inputs=[str(src)], tokenizer=str(tmp_path / "bare"), n=64, pack=True))
    assert json.loads(json.dumps(PrepareConfig(out="o").to_dict()))["pack"] is False
