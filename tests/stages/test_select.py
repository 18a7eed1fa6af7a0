"""Stage ``select`` (and ``tokenweight select``): the kept documents are the top share by a brute-force
ranking, the output is a prepared folder every stage reads, the output protocol (no-op, refusal,
force, one-line errors), and a resume after ``kill -9`` that ends bitwise where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.scorecache.test_scorecache import make_scorer, make_tokenizer
from tokenweight.cli.main import main
from tokenweight.data import load_prepared
from tokenweight.data.selection import row_scores
from tokenweight.stages.select import SelectConfig, select

BOS, VOCAB, N = 1, 64, 40


def make_documents(folder: Path, docs: list[int], seed: int = 0) -> Path:
    """A prepared folder whose train rows belong to documents ``docs`` (row r: document docs[r]); some
    documents repeat their first row's tokens later in the row (long-range copies), most do not."""
    from datasets import Dataset, Features, List, Value

    feats = Features(
        {"input_ids": List(Value("int32")), "doc_id": Value("int64"), "episodes": List(List(Value("int32")))}
    )
    g = torch.Generator().manual_seed(seed)
    rows = []
    for d in docs:
        ids = torch.randint(4, VOCAB, (N - 1,), generator=g).tolist()
        if d % 3 == 0:  # a copy of the start far later: the long context helps
            ids[25:35] = ids[2:12]
        rows.append([BOS] + ids)
    ds = {"input_ids": rows, "doc_id": docs, "episodes": [[] for _ in docs]}
    Dataset.from_dict(ds, features=feats).save_to_disk(str(folder / "train"))
    val = {"input_ids": rows[:2], "doc_id": [100, 101], "episodes": [[], []]}
    Dataset.from_dict(val, features=feats).save_to_disk(str(folder / "validation"))
    make_tokenizer(folder / "tokenizer", VOCAB)
    manifest = {
        "format": "tokenweight.prepared/1",
        "n": N,
        "tokenizer": "tokenizer",
        "counts": {"train": {"sequences": len(docs), "tokens": N * len(docs)}, "validation": {"sequences": 2}},
        "fingerprint": f"docs-{seed}",
        "episodes": {},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


DOCS = [0, 0, 1, 2, 2, 2, 3, 4, 5, 5, 6, 7, 8, 9]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("select")
    data = make_documents(root / "data", DOCS)
    scorer = make_scorer(root / "scorer", vocab=VOCAB, tokenizer=data / "tokenizer", hidden=16, layers=2)
    return {"root": root, "data": data, "scorer": scorer}


def config(env, out, **kw):
    base = dict(data=str(env["data"]), scorer=str(env["scorer"]), out=str(out), window=16, shard_size=4, device="cpu")
    return SelectConfig(**{**base, **kw})


@pytest.mark.parametrize("method", ["longfilter", "mean_abs_d"])
def test_kept_documents_are_the_top_share_by_brute_force(env, tmp_path, method):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "sel"
    result = select(config(env, out, method=method, keep=0.4))
    model = AutoModelForCausalLM.from_pretrained(env["scorer"]).eval()
    dsd, _ = load_prepared(env["data"])
    rows = dsd["train"]["input_ids"]
    sums, counts = row_scores(model, rows, method, 16, 10, BOS)  # the default stride: round((1 - 16/40)·16)
    score = {}
    for d in set(DOCS):
        mine = [r for r, x in enumerate(DOCS) if x == d]
        score[d] = sums[mine].sum() / counts[mine].sum()
    ranked = sorted(score, key=lambda d: (-score[d], DOCS.index(d)))
    keep = ranked[: int(np.ceil(0.4 * len(ranked)))]
    sel, manifest = load_prepared(out)
    assert sel["train"]["input_ids"] == [rows[r] for r, d in enumerate(DOCS) if d in keep]
    assert sorted(set(sel["train"]["doc_id"])) == sorted(keep)
    assert sel["validation"]["input_ids"] == dsd["validation"]["input_ids"]
    units = json.loads((out / "selection.json").read_text())["units"]
    assert [u["unit"] for u in units] == ranked
    for u in units:
        assert u["score"] == pytest.approx(score[u["unit"]], rel=1e-9)
    assert manifest["selected"]["method"] == method and manifest["fingerprint"] != "docs-0"
    assert manifest["counts"]["train"]["sequences"] == len(sel["train"])
    assert (result.units, result.kept, result.rows) == (len(ranked), len(keep), len(sel["train"]))
    assert not (tmp_path / ".sel.select").exists()  # the row scores go once the folder is complete


def test_the_selection_is_deterministic(env, tmp_path):
    """Two calls rank the same rows alike (units by row: half of them kept)."""
    a = select(config(env, tmp_path / "a", keep=0.5, unit="row"))
    select(config(env, tmp_path / "b", keep=0.5, unit="row"))
    assert (tmp_path / "a" / "selection.json").read_text().replace(str(tmp_path / "a"), "") == (
        tmp_path / "b" / "selection.json"
    ).read_text().replace(str(tmp_path / "b"), "")
    assert a.units == len(DOCS) and a.kept == len(DOCS) // 2


def test_output_protocol(env, tmp_path, capsys):
    out = tmp_path / "sel"
    select(config(env, out, keep=0.5))
    before = (out / "manifest.json").read_text()
    assert select(config(env, out, keep=0.5)).already_done
    argv = ["select", "--data", str(env["data"]), "--scorer", str(env["scorer"]), "--out", str(out)]
    argv += ["--window", "16", "--device", "cpu"]
    assert main([*argv, "--keep", "0.3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was selected with keep = 0.5, this command has keep = 0.3" in err[0]
    assert (out / "manifest.json").read_text() == before
    assert main([*argv, "--keep", "0.3", "--force"]) == 0
    assert json.loads((out / "manifest.json").read_text())["selected"]["keep"] == 0.3


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--keep", "0"], "--keep must be"),
        (["--keep", "1.5"], "--keep must be"),
        (["--method", "kl"], "--method must be one of longfilter, mean_abs_d"),
        (["--window", "40"], "fit in one window of 40: pass a smaller --window"),
        (["--stride", "16"], "--stride must be"),
    ],
)
def test_bad_input_is_one_line(env, tmp_path, capsys, extra, needle):
    argv = ["select", "--data", str(env["data"]), "--scorer", str(env["scorer"]), "--out", str(tmp_path / "o")]
    assert main([*argv, "--window", "16", "--device", "cpu", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "o").exists()


def test_bad_folders_are_one_line(env, tmp_path, capsys):
    base = ["select", "--scorer", str(env["scorer"]), "--window", "16", "--device", "cpu"]
    assert main([*base, "--data", str(env["data"]), "--out", str(env["data"])]) == 2
    assert "is the data folder" in capsys.readouterr().err
    assert main([*base, "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("mine")
    assert main([*base, "--data", str(env["data"]), "--out", str(tmp_path / "busy")]) == 2
    assert "exists and is not a selection" in capsys.readouterr().err
    assert (tmp_path / "busy" / "x.txt").read_text() == "mine"


def test_the_selection_trains(env, tmp_path):
    from tokenweight.stages.train import TrainConfig, train

    out = tmp_path / "sel"
    select(config(env, out, keep=0.5))
    run = train(
        TrainConfig(
            init="tiny",
            data=str(out),
            out=str(tmp_path / "run"),
            max_steps=2,
            batch_size=2,
            report_to=["none"],
            device="cpu",
        )
    )
    assert run.summary["steps"] == 2


@pytest.mark.slow
def test_resume_after_kill_is_bitwise(env, tmp_path):
    """kill -9 once the first shards are written; the same command ends with the bytes of an
    uninterrupted run (train split, selection.json, manifest)."""
    data = make_documents(tmp_path / "data", list(range(60)), seed=1)
    argv = [sys.executable, "-m", "tokenweight.cli.main", "select", "--data", str(data), "--scorer", str(env["scorer"])]
    argv += ["--window", "16", "--shard-size", "2", "--device", "cpu", "--keep", "0.3"]
    ref = tmp_path / "ref"
    subprocess.run([*argv, "--out", str(ref)], check=True, capture_output=True, timeout=600)
    out = tmp_path / "sel"
    proc = subprocess.Popen([*argv, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = tmp_path / ".sel.select"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(shards.glob("scores-*.npy"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists() and len(list(shards.glob("scores-*.npy"))) >= 3
    subprocess.run([*argv, "--out", str(out)], check=True, capture_output=True, timeout=600)
    for name in ("selection.json", "manifest.json"):
        assert (out / name).read_text() == (ref / name).read_text()
    arrows = sorted(p.relative_to(ref) for p in (ref / "train").glob("*.arrow"))
    assert arrows and all((out / p).read_bytes() == (ref / p).read_bytes() for p in arrows)
