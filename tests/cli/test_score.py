"""``tokenweight score``: summary and verification, bad input -> exit 2 with one line, resume
after a kill (subprocess), torchrun with 2 processes == 1 process (bitwise)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.scorecache.test_scorecache import make_prepared, make_scorer, make_tokenizer  # noqa: E402
from tokenweight.cli.main import main  # noqa: E402
from tokenweight.scorecache import COMPLETE, ScoreCache, compute_scores  # noqa: E402


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_score")
    data = make_prepared(root / "data", n=40, count=11, short_every=4)
    return {"root": root, "data": data, "scorer": make_scorer(root / "scorer", tokenizer=data / "tokenizer")}


def args(env, out, *extra):
    return [
        "score",
        "--data",
        str(env["data"]),
        "--scorer",
        str(env["scorer"]),
        "--out",
        str(out),
        "--window",
        "16",
        "--shard-size",
        "3",
        "--device",
        "cpu",
        *extra,
    ]


def cli(*argv, **kw):
    return subprocess.run(
        [sys.executable, "-m", "tokenweight.cli.main", *argv], capture_output=True, text=True, timeout=300, **kw
    )


def assert_same_cache(a: Path, b: Path) -> None:
    """Same files, same meta.json and complete.json, every shard's tensors and header metadata equal
    (bitwise; safetensors writes header keys in no fixed order, so bytes are not compared)."""
    from safetensors import safe_open

    files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    for name in files:
        if name.endswith(".json"):
            assert (a / name).read_text() == (b / name).read_text(), name
            continue
        with safe_open(str(a / name), "pt") as fa, safe_open(str(b / name), "pt") as fb:
            assert fa.metadata() == fb.metadata() and sorted(fa.keys()) == sorted(fb.keys())
            for k in fa.keys():
                assert torch.equal(fa.get_tensor(k), fb.get_tensor(k)), (name, k)


def test_summary_and_verify(env, tmp_path, capsys):
    assert main(args(env, tmp_path / "c", "--verify", "3", "--stride", "12")) == 0
    out = capsys.readouterr().out
    assert "scored 11 sequences (" in out and "tokens/s" in out
    assert "11 sequences of split 'train', window 16, stride 12, float32; 11 computed now, 0 already cached" in out
    assert "verified 3 sequences against a direct recomputation" in out
    assert main(args(env, tmp_path / "c", "--stride", "12")) == 0  # complete: nothing recomputed
    assert "0 computed now, 11 already cached" in capsys.readouterr().out


def test_config_file_sets_options(env, tmp_path, capsys):
    cfg = tmp_path / "score.yaml"
    cfg.write_text("window: 20\nmax-sequences: 4\n")
    assert main(["score", "--config", str(cfg), *args(env, tmp_path / "c")[1:]]) == 0
    # the flag --window 16 wins over the config's 20; max-sequences comes from the config
    meta = ScoreCache.open(tmp_path / "c").meta
    assert (meta["window"], meta["n_sequences"], meta["stride"]) == (16, 4, 10)


def exits_2_with_one_line(capsys, argv, *needles):
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.startswith("tokenweight: error: ") and err.count("\n") == 1, err
    for s in needles:
        assert s in err, err


def test_bad_input_exits_2_with_one_line(env, tmp_path, capsys):
    out, d = tmp_path / "c", tmp_path / "d"
    compute_scores(out, env["data"], env["scorer"], window=16, shard_size=3)
    stale = "holds scores for window 16 but this run asks for 20: pass --force to recompute it"
    exits_2_with_one_line(capsys, args(env, out, "--window", "20"), stale)
    exits_2_with_one_line(capsys, args(env, out, "--max-sequences", "5"), "n_sequences 11 but this run asks for 5")
    other = make_prepared(tmp_path / "data2", n=40, count=11, seed=1)
    exits_2_with_one_line(
        capsys,
        ["score", "--data", str(other), "--scorer", str(env["scorer"]), "--out", str(out), "--window", "16"],
        "holds scores for data 'data-0-40-11-64' but this run asks for 'data-1-40-11-64'",
    )
    assert main(args(env, out, "--window", "20", "--force")) == 0

    s = ["score", "--data", str(env["data"]), "--scorer", str(env["scorer"]), "--out", str(d)]
    exits_2_with_one_line(capsys, s[:4] + [str(tmp_path / "nope")] + s[5:], "does not exist")
    exits_2_with_one_line(capsys, s[:1] + s[3:], "--data is required")
    exits_2_with_one_line(
        capsys, s + ["--window", "16", "--stride", "16"], "--stride must be an integer in [1, 15] or None, got 16"
    )
    exits_2_with_one_line(capsys, s + ["--window", "1"], "--window must be an integer >= 2, got 1")
    exits_2_with_one_line(capsys, s + ["--batch-size", "0"], "--batch-size must be an integer >= 1 or None, got 0")
    exits_2_with_one_line(capsys, s[:2] + [str(tmp_path / "nodata")] + s[3:], str(tmp_path / "nodata"))
    make_tokenizer(tmp_path / "tok", 64, prefix="v")
    foreign = make_scorer(tmp_path / "foreign", tokenizer=tmp_path / "tok")
    exits_2_with_one_line(
        capsys, s[:4] + [str(foreign)] + s[5:] + ["--align", "never"], "uses a different tokenizer than the data"
    )
    assert not d.exists()


@pytest.mark.slow
def test_resume_after_kill(tmp_path):
    """Kill the CLI after its first shard lands, rerun it: the same cache as an uninterrupted run,
    shards written before the kill untouched, only the rest computed."""
    data = make_prepared(tmp_path / "data", n=128, count=400, seed=3)
    scorer = make_scorer(tmp_path / "scorer", tokenizer=data / "tokenizer", hidden=128, layers=4)
    out = tmp_path / "c"
    argv = [
        "score",
        "--data",
        str(data),
        "--scorer",
        str(scorer),
        "--out",
        str(out),
        "--window",
        "32",
        "--shard-size",
        "40",
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenweight.cli.main", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    first = out / "shards" / "00000.safetensors"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGSTOP)  # freeze, then look: nothing lands between look and kill
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "shards").glob("*.safetensors")}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 1 <= len(before) < 10 and not (out / COMPLETE).exists()

    done = 40 * len(before)
    r = cli(*argv)
    assert r.returncode == 0, r.stderr
    assert f"{400 - done} computed now, {done} already cached" in r.stdout
    for name, (mtime, raw) in before.items():
        p = out / "shards" / name
        assert p.stat().st_mtime_ns == mtime and p.read_bytes() == raw
    assert not list((out / "shards").glob(".*"))  # no temporaries left
    compute_scores(tmp_path / "ref", data, scorer, window=32, shard_size=40, device="cpu")
    assert_same_cache(out, tmp_path / "ref")


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(env, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = cli(*args(env, one))
    assert r1.returncode == 0, r1.stderr
    r2 = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "tokenweight.cli.main",
            *args(env, two),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r2.returncode == 0, r2.stderr
    assert "on 2 processes" in r2.stdout and r2.stdout.count("score cache ") == 1  # rank 0 reports
    assert_same_cache(one, two)  # meta, marker and every shard, bitwise
    assert len(list(two.rglob("*.safetensors"))) == 4
