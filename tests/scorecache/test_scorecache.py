"""Score cache: contents equal short_context_nll, resume without recomputation, stale/incomplete
caches and foreign tokenizers refused, fingerprints sensitive to what matters and nothing else.

The helpers at the top build a prepared-data folder by hand in the layout of docs/ARCHITECTURE.md
(save_to_disk splits + manifest.json + tokenizer/) and tiny random Llama scorers; tests/cli uses
them too.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from tokenweight.errors import UsageError
from tokenweight.identity import file_digest_sampled, model_digest
from tokenweight.scorecache import (
    COMPLETE,
    META,
    ScoreCache,
    compute_scores,
    default_shard_size,
    default_stride,
    shard_ranges,
    verify,
)
from tokenweight.scoring import short_context_nll

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
BOS = 1


def make_tokenizer(folder: Path, size: int = 64, prefix: str = "w"):
    """A word-level HF tokenizer: ids 0-3 special (<s> = 1), then ``prefix0 …``; saved to ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + [f"{prefix}{i}" for i in range(size - len(SPECIALS))])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    fast.save_pretrained(folder)
    return fast


def make_prepared(
    folder: Path, n: int = 40, count: int = 10, vocab: int = 64, seed: int = 0, short_every: int = 0
) -> Path:
    """Prepared data: ``count`` train sequences of ``n`` random tokens after BOS (every
    ``short_every``-th one a shorter tail), a small validation split, manifest, tokenizer."""
    from datasets import Dataset, Features, List, Value

    g = torch.Generator().manual_seed(seed)
    feats = Features(
        {"input_ids": List(Value("int32")), "doc_id": Value("int64"), "episodes": List(List(Value("int32")))}
    )

    def rows(k):
        out = []
        for i in range(k):
            length = n - 1 - (i * 7) % (n // 2) if short_every and i % short_every == short_every - 1 else n - 1
            out.append([BOS] + torch.randint(4, vocab, (length,), generator=g).tolist())
        return {"input_ids": out, "doc_id": list(range(k)), "episodes": [[] for _ in range(k)]}

    Dataset.from_dict(rows(count), features=feats).save_to_disk(str(folder / "train"))
    Dataset.from_dict(rows(3), features=feats).save_to_disk(str(folder / "validation"))
    make_tokenizer(folder / "tokenizer", vocab)
    manifest = {
        "n": n,
        "tokenizer": "tokenizer",
        "counts": {"train": count, "validation": 3},
        "fingerprint": f"data-{seed}-{n}-{count}-{vocab}",
        "episodes": {},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def make_scorer(
    folder: Path, vocab: int = 64, seed: int = 0, tokenizer: Path | None = None, hidden: int = 16, layers: int = 2
) -> Path:
    """A tiny random Llama saved to ``folder`` (with the tokenizer of folder ``tokenizer`` if given)."""
    from tests.tiny_models import save_tiny_llama

    shape = {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers}
    ids = {"bos_token_id": BOS, "eos_token_id": 2, "pad_token_id": 0}
    save_tiny_llama(folder, vocab, seed, tokenizer, **shape, num_attention_heads=2, max_position_embeddings=256, **ids)
    return folder


def load_scorer(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()


def train_rows(data: Path) -> list[list[int]]:
    from datasets import load_from_disk

    return load_from_disk(str(data / "train"))["input_ids"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("scorecache")
    data = make_prepared(root / "data", n=40, count=11, short_every=4)
    return {"root": root, "data": data, "scorer": make_scorer(root / "scorer", tokenizer=data / "tokenizer")}


def score(env, out, **kw):
    kw = {"window": 16, "stride": 12, "shard_size": 3, "device": "cpu", **kw}
    return compute_scores(out, env["data"], env["scorer"], **kw)


def read_all(out: Path) -> torch.Tensor:
    cache = ScoreCache.open(out)
    return cache.read(range(cache.n_sequences))


def test_defaults():
    assert default_stride(32768, 8192) == 6144  # the paper's setting
    assert default_stride(128, 32) == 24
    assert default_stride(64, 64) == 1 and default_stride(40, 100) == 1  # whole sequence fits
    assert default_stride(1000, 2) == 1
    assert default_shard_size(256) == 1024 and default_shard_size(1 << 20) == 1
    assert shard_ranges(7, 3) == [(0, 3), (3, 6), (6, 7)]


def test_cache_equals_short_context_nll(env, tmp_path):
    s = score(env, tmp_path / "c")
    assert (s["sequences"], s["computed"], s["cached"]) == (11, 11, 0)
    rows = train_rows(env["data"])
    assert s["tokens"] == sum(len(r) for r in rows)
    cache = ScoreCache.open(tmp_path / "c")
    meta = cache.meta
    assert (meta["window"], meta["stride"], meta["n"], meta["n_sequences"], meta["bos_token_id"]) == (16, 12, 40, 11, 1)
    assert meta["num_shards"] == 4 and meta["dtype"] == "float32"
    got = cache.read(range(11))
    assert got.shape == (11, 39) and got.dtype == torch.float32
    model = load_scorer(env["scorer"])
    # Exact: each shard is one short_context_nll call on the right-padded shard.
    for a, b in shard_ranges(11, 3):
        ids = torch.zeros(b - a, 40, dtype=torch.long)
        mask = torch.zeros(b - a, 40, dtype=torch.long)
        for i, r in enumerate(rows[a:b]):
            ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
        ref = short_context_nll(model, ids, 16, 12, attention_mask=mask, bos_token_id=BOS)
        assert torch.equal(got[a:b], ref)
    for i, r in enumerate(rows):  # past a short sequence's end: 0, like token_nll
        assert torch.all(got[i, len(r) - 1 :] == 0) and torch.all(got[i, : len(r) - 1] > 0)
    # Any order, repeats; one sequence at a time agrees up to rounding.
    assert torch.equal(cache.read([10, 0, 10, 5]), got[[10, 0, 10, 5]])
    assert torch.equal(cache.read(torch.tensor([3])), got[3:4])
    assert verify(cache, model, rows, list(range(11))) < 1e-5
    assert torch.equal(pickle.loads(pickle.dumps(cache)).read([7]), got[7:8])
    with pytest.raises(UsageError, match="covers sequences 0..10 .* sequence 11 was asked for"):
        cache.read([11])


def test_resume_recomputes_only_missing_shards(env, tmp_path):
    out = tmp_path / "c"
    score(env, out)
    full = read_all(out)
    shards = sorted((out / "shards").glob("*.safetensors"))
    mtimes = {p.name: p.stat().st_mtime_ns for p in shards}
    # An interrupted run: no completion marker, shards 1 and 3 missing, a temporary left behind.
    (out / COMPLETE).unlink()
    shards[1].unlink()
    shards[3].unlink()
    (out / "shards" / ".00001.safetensors.x.tmp").write_bytes(b"partial")
    with pytest.raises(UsageError, match=r"incomplete \(2 of 4 shards\)"):
        ScoreCache.open(out)
    s = score(env, out)
    assert (s["computed"], s["cached"]) == (3 + 2, 6)  # shard 1: 3 sequences, shard 3: 2
    assert torch.equal(read_all(out), full)
    for p in (shards[0], shards[2]):
        assert p.stat().st_mtime_ns == mtimes[p.name]  # not rewritten
    assert not list((out / "shards").glob(".*.tmp"))
    assert score(env, out)["computed"] == 0  # complete: nothing to do


def test_stale_cache_refused_unless_forced(env, tmp_path):
    out = tmp_path / "c"
    score(env, out)
    with pytest.raises(UsageError, match="holds scores for window 16 but this run asks for 20: pass --force"):
        score(env, out, window=20)
    with pytest.raises(UsageError, match="holds scores for n_sequences 11 but this run asks for 5"):
        score(env, out, max_sequences=5)
    with pytest.raises(UsageError, match="holds scores for dtype 'float32' but this run asks for 'bfloat16'"):
        score(env, out, dtype="bfloat16")
    other = make_scorer(tmp_path / "other", seed=1)
    with pytest.raises(UsageError, match="holds scores for scorer"):
        compute_scores(out, env["data"], other, window=16, stride=12, shard_size=3)
    s = score(env, out, window=20, stride=5, force=True)
    assert s["computed"] == 11
    assert ScoreCache.open(out).meta["window"] == 20
    assert sorted(p.name for p in (out / "shards").iterdir()) == [f"{i:05d}.safetensors" for i in range(4)]
    s = score(env, out, window=20, stride=5, force=True)  # --force recomputes even a matching cache
    assert s["computed"] == 11


def test_open_checks_expectations_and_completeness(env, tmp_path):
    out = tmp_path / "c"
    score(env, out)
    meta = ScoreCache.open(out).meta
    ScoreCache.open(out, expect={k: meta[k] for k in ("window", "stride", "data", "n", "split")})
    with pytest.raises(UsageError) as e:
        ScoreCache.open(out, expect={"window": 256, "stride": 12})
    msg = str(e.value)
    assert "was computed for window 16 but training asks for 256" in msg and "--window 256" in msg
    assert "\n" not in msg
    with pytest.raises(UsageError, match="computed for data 'data-0-40-11-64' but training asks for 'x'"):
        ScoreCache.open(out, expect={"data": "x"})
    with pytest.raises(UsageError, match="is not a score cache"):
        ScoreCache.open(tmp_path)
    with pytest.raises(ValueError, match=r"expect has unknown field\(s\) \['windw'\]"):
        ScoreCache.open(out, expect={"windw": 16})
    # A shard from another cache (another fingerprint) does not count as done.
    other = tmp_path / "o"
    score(env, other, window=20, stride=5)
    (out / "shards" / "00002.safetensors").write_bytes((other / "shards" / "00002.safetensors").read_bytes())
    with pytest.raises(UsageError, match=r"incomplete \(3 of 4 shards\)"):
        ScoreCache.open(out)


def test_foreign_scorer_tokenizer_refused(env, tmp_path):
    make_tokenizer(tmp_path / "tok", 64, prefix="v")  # same size, other words
    foreign = make_scorer(tmp_path / "foreign", tokenizer=tmp_path / "tok")
    with pytest.raises(UsageError, match="uses a different tokenizer than the data"):
        compute_scores(tmp_path / "c", env["data"], foreign, window=16, align="never")  # auto aligns (test_alignment)
    small = make_scorer(tmp_path / "small", vocab=32)
    with pytest.raises(UsageError, match="vocabulary of 32 tokens but the data's tokenizer has 64"):
        compute_scores(tmp_path / "c", env["data"], small, window=16)
    assert not (tmp_path / "c").exists()  # refused before anything is written
    # A larger embedding matrix with the same tokenizer is fine; so is a scorer without a tokenizer.
    big = make_scorer(tmp_path / "big", vocab=80, tokenizer=env["data"] / "tokenizer")
    assert compute_scores(tmp_path / "c", env["data"], big, window=16, max_sequences=2)["computed"] == 2
    bare = make_scorer(tmp_path / "bare")
    assert compute_scores(tmp_path / "d", env["data"], bare, window=16, max_sequences=2)["computed"] == 2


def test_out_must_be_a_cache_folder(env, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="exists and is not a score cache"):
        score(env, tmp_path)
    with pytest.raises(UsageError, match="has no split 'test'"):
        score(env, tmp_path / "c", split="test")


def test_validation_split_and_default_stride(env, tmp_path):
    s = compute_scores(tmp_path / "c", env["data"], env["scorer"], window=16, split="validation")
    meta = ScoreCache.open(tmp_path / "c", expect={"split": "validation"}).meta
    assert s["sequences"] == 3 and meta["stride"] == default_stride(40, 16) == 10
    assert meta["shard_size"] == default_shard_size(40)


def test_fingerprints(tmp_path):
    a = make_scorer(tmp_path / "a")
    d0 = model_digest(a)
    cfg = json.loads((a / "config.json").read_text())
    cfg["transformers_version"] = "0.0.1"  # volatile keys do not matter
    (a / "config.json").write_text(json.dumps(cfg))
    assert model_digest(a) == d0
    (a / "optimizer.pt").write_bytes(b"state")  # neither do trainer files
    assert model_digest(a) == d0
    cfg["rms_norm_eps"] = 1e-5
    (a / "config.json").write_text(json.dumps(cfg))
    d1 = model_digest(a)
    assert d1 != d0
    w = a / "model.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-1] ^= 1  # one bit of one weight
    w.write_bytes(bytes(raw))
    assert model_digest(a) != d1
    # Files above block*blocks bytes: size + sampled blocks (first and last included); below: all.
    big = tmp_path / "big.bin"
    raw = bytearray(range(256)) * (4 * 4096)  # 4 MiB
    big.write_bytes(bytes(raw))
    small, sampled = file_digest_sampled(big), file_digest_sampled(big, block=1 << 16, blocks=8)
    raw[len(raw) // 2 + 1000] ^= 1  # between sampled blocks (they start at multiples of 4 MiB-64 KiB / 7)
    big.write_bytes(bytes(raw))
    assert file_digest_sampled(big) != small and file_digest_sampled(big, block=1 << 16, blocks=8) == sampled
    for pos in (0, len(raw) - 1):  # the first and the last block are always read
        raw[pos] ^= 1
        big.write_bytes(bytes(raw))
        assert file_digest_sampled(big, block=1 << 16, blocks=8) != sampled
        raw[pos] ^= 1
    with pytest.raises(UsageError, match="holds no weight files"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "config.json").write_text("{}")
        model_digest(tmp_path / "empty")


def test_meta_is_written_first(env, tmp_path, monkeypatch):
    """A run killed during the first shard leaves meta.json and no shard: open says incomplete."""
    import tokenweight.scorecache as sc

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("tokenweight.scoring.short_context_nll", boom)
    with pytest.raises(KeyboardInterrupt):
        score(env, tmp_path / "c")
    assert (tmp_path / "c" / META).is_file() and not list((tmp_path / "c" / "shards").glob("*"))
    with pytest.raises(UsageError, match=r"incomplete \(0 of 4 shards\)"):
        sc.ScoreCache.open(tmp_path / "c")


def make_packed(folder: Path, base: Path) -> tuple[Path, list[list[int]]]:
    """``base``'s prepared data with a ``doc_lengths`` column (packed rows, as ``prepare --pack``
    writes them): every train row cut into documents of varied lengths, each starting with BOS."""
    import shutil

    from datasets import load_from_disk

    shutil.copytree(base, folder)
    cuts = [[13, 1, 20, 6], [40], [16, 16, 8], [2, 38]]  # <= w, one token, > w, = w, ...
    docs = []
    for split in ("train", "validation"):
        ds = load_from_disk(str(base / split))
        rows, lengths = [], []
        for i, row in enumerate(ds["input_ids"]):
            cut = cuts[i % len(cuts)]
            if sum(cut) != len(row):  # the short rows: one document
                cut = [len(row)]
            row = list(row)
            for start in torch.tensor([0, *cut[:-1]]).cumsum(0).tolist():
                row[start] = BOS
            rows.append(row)
            lengths.append(cut)
        if split == "train":
            docs = lengths
        shutil.rmtree(folder / split)
        ds.remove_columns("input_ids").add_column("input_ids", rows).add_column("doc_lengths", lengths).save_to_disk(
            str(folder / split)
        )
    manifest = json.loads((base / "manifest.json").read_text())
    manifest.update(fingerprint=manifest["fingerprint"] + "-packed")
    manifest.setdefault("options", {})["packed"] = True
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder, docs


def test_packed_data_is_scored_per_document(env, tmp_path):
    data, docs = make_packed(tmp_path / "packed", env["data"])
    assert sum(len(d) > 1 for d in docs) >= 5  # most rows hold several documents
    out = tmp_path / "c"
    s = compute_scores(out, data, env["scorer"], window=16, stride=12, shard_size=3, device="cpu")
    rows = train_rows(data)
    assert s["computed"] == 11 and s["tokens"] == sum(len(r) for r in rows)
    cache = ScoreCache.open(out)
    score(env, tmp_path / "plain")
    assert cache.meta["packed"] is True and "packed" not in ScoreCache.open(tmp_path / "plain").meta
    got = cache.read(range(11))
    model = load_scorer(env["scorer"])
    for i, (row, lengths) in enumerate(zip(rows, docs)):
        start = 0
        for length in lengths:  # every document scored as a sequence of its own
            doc = torch.tensor([row[start : start + length]])
            if length > 1:
                ref = short_context_nll(model, doc, 16, 12, bos_token_id=BOS)[0]
                torch.testing.assert_close(got[i, start : start + length - 1], ref, atol=1e-5, rtol=0)
            if start > 0:
                assert got[i, start - 1] == 0  # a document's first token is not a target
            start += length
        assert torch.all(got[i, len(row) - 1 :] == 0)
    assert verify(cache, model, rows, list(range(11))) < 1e-5  # doc_lengths read from the data folder
    assert verify(cache, model, rows[:2], [0, 1], doc_lengths=docs[:2]) < 1e-5
    make_tokenizer(tmp_path / "tok", 64, prefix="v")  # another tokenizer: aligned scoring is refused
    foreign = make_scorer(tmp_path / "foreign", tokenizer=tmp_path / "tok")
    with pytest.raises(UsageError, match="--align with packed data is not supported yet"):
        compute_scores(tmp_path / "d", data, foreign, window=16, device="cpu")


def test_cache_of_other_data_is_refused_naming_both_folders_without_force(env, tmp_path):
    """--force would overwrite the other data's scores: the fix is another folder for this data."""
    data, scorer = env["data"], env["scorer"]
    other = make_prepared(tmp_path / "other", n=40, count=11, seed=1)
    foreign = tmp_path / "foreign"
    compute_scores(foreign, other, scorer, window=16, stride=12, shard_size=3, device="cpu")
    want = {"data": "data-0-40-11-64", "split": "train", "n": 40, "window": 16, "stride": 12}
    with pytest.raises(UsageError) as e:
        ScoreCache.open(foreign, expect=want, data_path=data)
    assert str(e.value) == (
        f"score cache {str(foreign)!r} was computed for data 'data-1-40-11-64' but training asks for "
        f"'data-0-40-11-64': it holds the scores of --data {str(other.resolve())!r} (split 'train'), not of "
        f"{str(data)!r}: score this data into another folder (`tokenweight score --data {data} --scorer {scorer} "
        "--window 16 --stride 12 --out NEW_DIR`) and pass that folder instead"
    )
    with pytest.raises(UsageError) as e:  # a caller that does not know its data folder
        ScoreCache.open(foreign, expect=want)
    msg = str(e.value)
    assert f"--data {str(other.resolve())!r} (split 'train'), not of the data given" in msg and "--force" not in msg
    assert "`tokenweight score --data DATA_DIR --scorer" in msg
    # another split of the same data: its scores too are not to be overwritten
    val = tmp_path / "val"
    compute_scores(val, data, scorer, window=16, stride=12, split="validation", device="cpu")
    with pytest.raises(UsageError, match="computed for split 'validation' but training asks for 'train'") as e:
        ScoreCache.open(val, expect={**want, "data": json.loads((val / META).read_text())["data"]})
    assert "--force" not in str(e.value) and "(split 'validation'), not of the data given" in str(e.value)
    # the same folder prepared again since: its old scores are of nothing left, --force is the fix
    with pytest.raises(UsageError) as e:
        ScoreCache.open(val, expect={"data": "new"}, data_path=data)
    assert str(e.value).endswith(
        f"it holds the scores of an earlier preparation of --data {str(data.resolve())!r}: rerun `tokenweight score "
        f"--out {val} --force` with the same --data and --scorer"
    )
    # `tokenweight score --out` a cache of other data: another --out, not --force
    with pytest.raises(UsageError) as e:
        compute_scores(foreign, data, scorer, window=16, stride=12, shard_size=3, device="cpu")
    assert str(e.value).endswith(
        f"it holds the scores of --data {str(other.resolve())!r} (split 'train'), not of {str(data.resolve())!r}: "
        "choose another --out for this data"
    )
