"""``add_short_nll``: a token-aligned short_nll column for any dataset of token ids.

The column equals ``short_context_nll`` row by row and the score cache of the same rows (bitwise),
for rows of any lengths and packed rows; shuffled or filtered rows keep their values; a run killed
after one shard continues without recomputing it and ends bitwise where an uninterrupted run ends;
``tokenweight score --dataset`` writes it, and bad input is one line (ValueError / exit 2).
"""

from __future__ import annotations

import pytest
import torch

from tests.scorecache.test_scorecache import BOS, load_scorer, make_packed, make_prepared, make_scorer
from tokenweight.cli.main import main
from tokenweight.scorecache import ScoreCache, add_short_nll, column_stride, compute_scores
from tokenweight.scorecache.column import DATASET, _add_short_nll
from tokenweight.scoring import short_context_nll

W, S = 16, 12


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("column")
    data = make_prepared(root / "data", n=40, count=11, short_every=4)  # rows of 40 tokens and shorter ones
    scorer = make_scorer(root / "scorer", tokenizer=data / "tokenizer")
    return {"root": root, "data": data, "scorer": scorer, "model": load_scorer(scorer)}


def train_split(folder):
    from datasets import load_from_disk

    return load_from_disk(str(folder / "train"))


def column(env, dataset, out, **kw):
    kw = {"window": W, "stride": S, "shard_size": 3, "device": "cpu", **kw}
    return add_short_nll(dataset, env["scorer"], out=out, **kw)


def check_rows(model, ds, col="short_nll", docs=None):
    """Every row's column: as long as its tokens, entry 0 == 0, entries 1.. == short_context_nll (exact)."""
    for i, row in enumerate(ds):
        ids, got = row["input_ids"], torch.tensor(row[col])
        assert got.dtype == torch.float32 and len(got) == len(ids) and (len(ids) == 0 or got[0] == 0)
        if len(ids) < 2:
            continue
        d = None if docs is None else [docs[i]]
        ref = short_context_nll(model, torch.tensor([ids]), W, S, bos_token_id=BOS, doc_lengths=d)[0]
        assert torch.equal(got[1:], ref), i


def test_column_equals_short_context_nll_and_the_cache(env, tmp_path):
    ds = train_split(env["data"])
    out = column(env, ds, tmp_path / "col")
    assert out.column_names == ["input_ids", "doc_id", "episodes", "short_nll"]
    assert str(out.features["short_nll"]) == "List(Value('float32'))"
    assert out["doc_id"] == ds["doc_id"] and out["input_ids"] == ds["input_ids"]
    assert len({len(r) for r in ds["input_ids"]}) > 1  # rows of different lengths
    check_rows(env["model"], out)
    # The score cache of the same rows (a prepared folder, n = the longest row): bitwise the same.
    compute_scores(tmp_path / "cache", env["data"], env["scorer"], window=W, stride=S, shard_size=3, device="cpu")
    cache = ScoreCache.open(tmp_path / "cache").read(range(len(ds)))
    for i, row in enumerate(out):
        n = len(row["input_ids"])
        assert torch.equal(torch.tensor(row["short_nll"][1:]), cache[i, : n - 1])
        assert torch.all(cache[i, n - 1 :] == 0)
    # The column's own cache reads back the same rows (its shards are as wide as their longest row).
    own = ScoreCache.open(tmp_path / "col")
    assert own.meta["ragged"] is True and own.meta["stride"] == S and own.meta["bos_token_id"] == BOS
    assert torch.equal(own.read(range(len(ds))), cache)
    assert column_stride(W) == 12 and column_stride(8192) == 6144 and column_stride(2) == 1


def test_rows_of_any_length_keep_their_values_when_shuffled_or_filtered(env, tmp_path):
    from datasets import Dataset

    g = torch.Generator().manual_seed(3)
    lengths = [0, 1, 2, W, W + 1, 57, 5, 40]
    rows = [([BOS] if n else []) + torch.randint(4, 64, (max(n - 1, 0),), generator=g).tolist() for n in lengths]
    ds = Dataset.from_dict({"tokens": rows, "name": [f"r{i}" for i in range(len(rows))]})
    out = column(env, ds, tmp_path / "a", input_column="tokens", column="nll", stride=None)  # stride round(0.75·w)
    assert ScoreCache.open(tmp_path / "a").meta["stride"] == S
    assert out["nll"][0] == [] and out["nll"][1] == [0.0]
    check_rows(env["model"], out.rename_column("tokens", "input_ids"), col="nll")
    # Shuffled and filtered (an indices mapping): each row gets the very same values.
    sub = ds.shuffle(seed=1).filter(lambda r: len(r["tokens"]) != 2)
    got = column(env, sub, tmp_path / "b", input_column="tokens", column="nll", stride=None, shard_size=2)
    by_name = dict(zip(out["name"], out["nll"]))
    assert got["name"] == sub["name"] and all(by_name[r["name"]] == r["nll"] for r in got)
    # The same token ids with another column: the cache is reused, only the join is done again.
    more = ds.add_column("extra", list(range(len(ds))))
    kw = dict(_same(), stride=None, shard_size=3)
    again, stats = _add_short_nll(more, env["scorer"], out=tmp_path / "a", column="nll", input_column="tokens", **kw)
    assert (stats["computed"], stats["joined"]) == (0, True) and again["extra"] == list(range(len(ds)))
    assert again["nll"] == out["nll"]
    # Other rows into the same folder: refused (the rows' digest is the cache's identity).
    with pytest.raises(ValueError, match="holds the scores of other rows .8 rows of dataset .* than dataset") as e:
        column(env, sub, tmp_path / "a", input_column="tokens", column="nll", stride=None)
    assert "\n" not in str(e.value)


def test_packed_rows_are_scored_per_document(env, tmp_path):
    data, docs = make_packed(tmp_path / "packed", env["data"])
    ds = train_split(data)
    out = column(env, ds, tmp_path / "col")
    check_rows(env["model"], out, docs=docs)
    compute_scores(tmp_path / "cache", data, env["scorer"], window=W, stride=S, shard_size=3, device="cpu")
    cache = ScoreCache.open(tmp_path / "cache")
    assert cache.meta["packed"] is True and ScoreCache.open(tmp_path / "col").meta["packed"] is True
    got = cache.read(range(len(ds)))
    for i, (row, lengths) in enumerate(zip(out, docs)):
        n = len(row["input_ids"])
        assert torch.equal(torch.tensor(row["short_nll"][1:]), got[i, : n - 1])
        starts = torch.tensor([0, *lengths[:-1]]).cumsum(0)
        assert all(row["short_nll"][s] == 0 for s in starts.tolist())  # a document's first token


def test_resume_after_a_kill_keeps_finished_shards(env, tmp_path, monkeypatch):
    import tokenweight.scorecache.compute as compute

    ds = train_split(env["data"])
    full = column(env, ds, tmp_path / "full")
    real, calls = compute._score_rows, []

    def killed_after_one_shard(*a, **k):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(compute, "_score_rows", killed_after_one_shard)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        column(env, ds, out)
    shards = sorted((out / "shards").glob("*.safetensors"))
    assert [p.name for p in shards] == ["00000.safetensors"] and not (out / DATASET).exists()
    mtime = shards[0].stat().st_mtime_ns
    monkeypatch.setattr(compute, "_score_rows", real)
    again, stats = _add_short_nll(ds, env["scorer"], out=out, column="short_nll", input_column="input_ids", **_same())
    assert (stats["computed"], stats["cached"], stats["joined"]) == (len(ds) - 3, 3, True)
    assert shards[0].stat().st_mtime_ns == mtime  # not recomputed
    assert again.data.table.equals(full.data.table)  # bitwise the uninterrupted run's dataset
    # Finished: the same call computes and writes nothing, and returns the saved dataset.
    saved = (out / DATASET / "state.json").stat().st_mtime_ns
    third, stats = _add_short_nll(ds, env["scorer"], out=out, column="short_nll", input_column="input_ids", **_same())
    assert (stats["computed"], stats["joined"]) == (0, False)
    assert (out / DATASET / "state.json").stat().st_mtime_ns == saved
    assert third.data.table.equals(full.data.table)


def _same() -> dict:
    """``column``'s arguments, for ``_add_short_nll`` (which also returns what the call did)."""
    keys = dict(bos_token_id=None, batch_size=None, dtype=None, device="cpu", split=None, attn_implementation="auto")
    return dict(window=W, stride=S, shard_size=3, force=False, **keys)


def test_loaded_model_scores_like_its_folder(env, tmp_path):
    ds = train_split(env["data"]).select(range(4))
    a = column(env, ds, tmp_path / "folder")
    b = add_short_nll(ds, env["model"], window=W, stride=S, out=tmp_path / "object", shard_size=3)
    assert a["short_nll"] == b["short_nll"]
    with pytest.raises(ValueError, match="loaded float32 model but dtype 'bfloat16'"):
        add_short_nll(ds, env["model"], window=W, out=tmp_path / "x", dtype="bfloat16")


def test_bad_input_is_one_line(env, tmp_path):
    from datasets import Dataset

    ds = train_split(env["data"])
    cases = [
        (dict(input_column="tokens"), "has no column 'tokens' .*pass input_column"),
        (dict(input_column="doc_id"), "column 'doc_id' holds int64, not lists of integers"),
        (dict(column="doc_id"), "already has a column 'doc_id'"),
        (dict(window=1), "window must be an integer >= 2"),
        (dict(stride=W), r"stride must be an integer in \[1, window\)"),
        (dict(dtype="int8"), "dtype must be one of"),
    ]
    for kw, message in cases:
        with pytest.raises(ValueError, match=message) as e:
            column(env, ds, tmp_path / "bad", **kw)
        assert "\n" not in str(e.value)
    floats = Dataset.from_dict({"input_ids": [[0.5, 1.5]]})
    with pytest.raises(ValueError, match="holds list<item: double>, not lists of integers"):
        column(env, floats, tmp_path / "bad")
    outside = Dataset.from_dict({"input_ids": [[1, 5, 64]]})
    with pytest.raises(ValueError, match="holds token id 64 but scorer .* vocabulary of 64 ids"):
        column(env, outside, tmp_path / "bad")
    with pytest.raises(ValueError, match="has no rows"):
        column(env, Dataset.from_dict({"input_ids": [[1]]}).select([]), tmp_path / "bad")
    with pytest.raises(ValueError, match="does not exist"):
        column(env, str(tmp_path / "nowhere"), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_cli_writes_the_column_and_refuses_bad_input(env, tmp_path, capsys):
    from datasets import load_from_disk

    folder = tmp_path / "mine"
    train_split(env["data"]).shuffle(seed=0).save_to_disk(str(folder))
    (tmp_path / "c.yaml").write_text(f"window: {W}\nstride: {S}\nshard-size: 3\ndevice: cpu\n")
    argv = ["score", "--dataset", str(folder), "--scorer", str(env["scorer"]), "--out", str(tmp_path / "o")]
    argv += ["--config", str(tmp_path / "c.yaml")]
    tokens = sum(len(r) for r in load_from_disk(str(folder))["input_ids"])
    assert main([*argv, "--column", "short_nll"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith(f"wrote short_nll for 11 rows ({tokens} tokens) to {tmp_path / 'o' / 'dataset'}: ")
    assert "window 16, stride 12, float32; 11 rows computed now, 0 already cached" in lines[-1]
    check_rows(env["model"], load_from_disk(str(tmp_path / "o" / "dataset")))
    assert main(argv) == 0  # rerun: nothing to do
    assert "already in" in capsys.readouterr().out
    for extra in (
        ["--input-column", "nope"],
        ["--window", "1"],
        ["--verify", "2"],
        ["--data", str(env["data"])],
        ["--out", str(tmp_path / "o2"), "--column", "doc_id"],
    ):
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("tokenweight: error: ") and "\n" not in err, err
