"""Rho-1 from the CLI: a reference model's full-context cache (``score --window N`` with N >= n) and
``train --scheme rho1:<κ> --scorer frozen --scores CACHE``.

Checked: the cache holds the reference model's full-context NLL; training runs end to end and
keeps ⌊κ·T⌋ tokens of every sequence; the weights of a batch equal a brute-force top-κ of
``L_long - L_ref`` per sequence (weight T/k on the kept tokens, Rho-1's 1/(N·k%) normalisation); a
reference cache of other data is refused in one line, and self-scoring still needs w < n.
About 5 s on 2 CPU cores (two score caches, one 2-step training run of a tiny model).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.train.train_helpers import make_prepared, tiny_model
from tokenweight.cli.main import main

N = 32
KAPPA = 0.6


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("rho1")
    data = make_prepared(root / "data", n=N, count=6)
    tiny_model(n=N, seed=0).save_pretrained(root / "start")
    tiny_model(n=N, seed=1).save_pretrained(root / "ref")
    cache = root / "ref-scores"
    argv = ["score", "--data", str(data), "--scorer", str(root / "ref"), "--window", str(N), "--out", str(cache)]
    assert main([*argv, "--device", "cpu"]) == 0
    return {"root": root, "data": data, "start": root / "start", "ref": root / "ref", "cache": cache}


def _rows(data):
    from datasets import load_from_disk

    return load_from_disk(str(data / "train"))["input_ids"]


def test_reference_cache_holds_the_full_context_nll(env):
    from tokenweight.scorecache import ScoreCache
    from tokenweight.scoring import token_nll

    cache = ScoreCache.open(env["cache"])
    assert (cache.meta["window"], cache.meta["stride"], cache.n) == (N, 1, N)
    ref = token_nll(tiny_model(n=N, seed=1).eval(), torch.tensor(_rows(env["data"])))
    torch.testing.assert_close(cache.read(range(6)), ref, rtol=0, atol=1e-5)


def brute_force_rho1(long: list[float], ref: list[float], kappa: float) -> list[float]:
    """Rho-1 on one sequence: the top ⌊κ·T⌋ tokens by L_long - L_ref get T/k, the others 0."""
    t = len(long)
    k = math.floor(round(kappa * 100) * t / 100)
    order = sorted(range(t), key=lambda j: long[j] - ref[j], reverse=True)
    weight = float(torch.tensor(float(t), dtype=torch.float32) / k)
    keep = set(order[:k])
    return [weight if j in keep else 0.0 for j in range(t)]


def test_weights_are_a_top_kappa_of_the_excess_loss_per_sequence(env):
    from tokenweight.data import load_prepared
    from tokenweight.scorecache import ScoreCache
    from tokenweight.scoring import token_nll
    from tokenweight.train.collate import PadCollator, TrainSequences
    from tokenweight.weighting import WeightingScheme

    model = tiny_model(n=N, seed=0).eval()
    rows = _rows(env["data"])
    index = torch.tensor([4, 1, 3])
    ids = torch.tensor([rows[i] for i in index.tolist()])
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0  # one shorter row: its own T
    long = token_nll(model, ids, mask)
    examples = TrainSequences(load_prepared(env["data"])[0]["train"], scores=ScoreCache.open(env["cache"]))
    column = PadCollator(0)([examples[i] for i in index.tolist()])["short_nll"]  # the training path's column
    ref = torch.where(mask[:, 1:].bool(), column[:, 1:], 0.0)
    scored = mask[:, 1:].bool()
    weights = WeightingScheme.parse(f"rho1:{KAPPA}")(long, ref, scored)
    for r in range(3):
        t = int(scored[r].sum())
        expect = brute_force_rho1(long[r, :t].tolist(), ref[r, :t].tolist(), KAPPA)
        assert weights[r, :t].tolist() == expect
        assert weights[r, t:].abs().sum() == 0
    assert int((weights[1] > 0).sum()) == math.floor(KAPPA * 19)  # 18 tokens (19 targets) -> 11 kept


def test_train_rho1_end_to_end(env, capsys):
    out = env["root"] / "rho1"
    argv = ["train", "--model", str(env["start"]), "--data", str(env["data"]), "--out", str(out)]
    argv += ["--scheme", f"rho1:{KAPPA}", "--scorer", "frozen", "--scores", str(env["cache"])]
    assert main([*argv, "--max-steps", "2", "--batch-size", "2", "--lr", "1e-3", "--warmup-steps", "1"]) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    run = json.loads((out / "run_config.json").read_text())
    assert (run["scheme"], run["scorer"], run["window"], run["n"]) == (f"rho1:{KAPPA}", "frozen", N, N)
    t = N - 1
    k = math.floor(KAPPA * t)
    for line in (json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()):
        assert line["weight_zero_share"] == pytest.approx((t - k) / t, abs=1e-9)
        assert line["weight_max"] == pytest.approx(t / k, rel=1e-6)
        assert line["weight_mean"] == pytest.approx(1.0, rel=1e-6)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tokenweight: error: "), err
    return err[0]


def test_reference_cache_of_other_data_is_refused_in_one_line(env, capsys):
    other = make_prepared(env["root"] / "other", n=N, count=6, seed=1)
    foreign = env["root"] / "other-scores"
    assert (
        main(["score", "--data", str(other), "--scorer", str(env["ref"]), "--window", str(N)] + ["--out", str(foreign)])
        == 0
    )
    capsys.readouterr()
    argv = ["train", "--model", str(env["start"]), "--data", str(env["data"]), "--out", str(env["root"] / "x")]
    assert main([*argv, "--scheme", "rho1:0.6", "--scorer", "frozen", "--scores", str(foreign)]) == 2
    assert "was computed for data 'train-test-1-32-6' but training asks for 'train-test-0-32-6'" in one_line_error(
        capsys
    )
    assert main([*argv, "--scheme", "rho1:0.6", "--scorer", "self", "--window", str(N)]) == 2
    assert "must be longer than the short context w = 32" in one_line_error(capsys)
