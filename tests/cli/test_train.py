"""``tokenweight pretrain`` / ``train`` end to end on tiny models and hand-built data: outputs
(HF model, logs, TensorBoard, summary), context extension, frozen scoring, resume after an
interruption == uninterrupted run, NaN guard, bad input -> exit 2 with one line, torchrun (2 procs)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.train.train_helpers import BOS, make_prepared, tiny_model  # noqa: E402
from tokenweight.cli.main import main  # noqa: E402
from tokenweight.context_extension import THETA_EXPONENT  # noqa: E402

N, W = 64, 16
TINY = ["--init", "tiny", "--batch-size", "2", "--lr", "3e-3", "--warmup-steps", "1"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_train")
    return {"root": root, "data": make_prepared(root / "data", n=N, count=10, short_every=4)}


def train(env, out, *extra, command="train"):
    return main([command, "--data", str(env["data"]), "--out", str(out), *extra])


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def log_lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tokenweight: error: "), err
    return err[0]


def test_pretrain_then_weighted_extension(env, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pre = env["root"] / "pre"
    assert train(env, pre, *TINY, "--window", str(W), "--max-steps", "4", "--save-steps", "2", command="pretrain") == 0
    assert "pretrained 4 steps" in capsys.readouterr().out
    model = AutoModelForCausalLM.from_pretrained(pre / "model")
    assert model.config.max_position_embeddings == W and model.config.bos_token_id == BOS
    assert AutoTokenizer.from_pretrained(pre / "model").bos_token_id == BOS
    assert (pre / "checkpoint-4" / "model.safetensors").is_file()
    assert list((pre / "tensorboard").glob("events.out.tfevents.*"))
    lines = log_lines(pre)
    assert [x["step"] for x in lines] == [1, 2, 3, 4]
    assert all(x["weight_std"] == 0 and x["weight_mean"] == 1 and x["weighted_loss"] == x["plain_loss"] for x in lines)
    summary = json.loads((pre / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["tokens"] == sum(x["tokens"] for x in lines) > 0

    out = env["root"] / "dense"
    assert (
        train(
            env,
            out,
            "--model",
            str(pre / "model"),
            "--scheme",
            "dense:0.75",
            "--scorer",
            "self",
            "--max-steps",
            "3",
            "--batch-size",
            "2",
        )
        == 0
    )
    assert "trained 3 steps" in capsys.readouterr().out
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["max_position_embeddings"] == N
    assert config["rope_parameters"]["rope_theta"] == pytest.approx(10000 * (N / W) ** THETA_EXPONENT, rel=1e-9)
    run = json.loads((out / "run_config.json").read_text())
    assert (run["window"], run["stride"], run["n"], run["scheme"]) == (W, 12, N, "dense:0.75")
    lines = log_lines(out)
    assert len(lines) == 3 and all(x["weight_std"] > 0 and abs(x["weight_mean"] - 1) < 1e-6 for x in lines)
    assert all(math.isfinite(x["loss"]) and x["tokens_per_s"] > 0 for x in lines)


def test_exposure_balancing_trains_without_a_scorer(env, capsys):
    """``--scheme exact:<α>`` (EXACT's exposure balancing): no scorer, the tail τ defaults to the
    window; the weights average 1 and are not uniform (targets past w get the extra mass)."""
    out = env["root"] / "exact"
    extra = ["--scheme", "exact:0.5", "--window", str(W), "--max-steps", "2"]
    assert train(env, out, *TINY, *extra) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    lines = log_lines(out)
    assert all(abs(x["weight_mean"] - 1) < 1e-6 and x["weight_std"] > 0.1 for x in lines)
    assert json.loads((out / "run_config.json").read_text())["scheme"] == "exact:0.5"


def test_frozen_scorer_and_its_cache_checks(env, capsys):
    from tokenweight.scorecache import compute_scores

    scorer = env["root"] / "scorer"
    tiny_model(n=N).save_pretrained(scorer)
    cache = env["root"] / "scores"
    compute_scores(cache, env["data"], scorer, window=W, device="cpu")
    out = env["root"] / "frozen"
    assert (
        train(
            env, out, *TINY, "--scheme", "sparse:0.5", "--scorer", "frozen", "--scores", str(cache), "--max-steps", "2"
        )
        == 0
    )
    lines = log_lines(out)
    assert all(x["weight_zero_share"] > 0.3 for x in lines)  # sparse: about half the tokens get 0
    capsys.readouterr()
    assert (
        train(
            env,
            env["root"] / "f2",
            *TINY,
            "--scheme",
            "dense:0.5",
            "--scorer",
            "frozen",
            "--scores",
            str(cache),
            "--window",
            "32",
        )
        == 2
    )
    assert "was computed for window 16 but training asks for 32" in one_line_error(capsys)


def test_resume_after_interruption_equals_uninterrupted_run(env, monkeypatch, capsys):
    from tokenweight.train.trainer import WeightedTrainer

    args = [
        *TINY,
        "--scheme",
        "sparse:0.5",
        "--scorer",
        "self",
        "--window",
        str(W),
        "--max-steps",
        "6",
        "--save-steps",
        "2",
        "--seed",
        "1",
    ]  # 5 batches per epoch: the resumed run crosses into epoch 2
    full = env["root"] / "full"
    assert train(env, full, *args) == 0

    part = env["root"] / "part"
    original = WeightedTrainer.training_step
    calls = {"n": 0}

    def interrupted(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 6:  # during step 6: checkpoint-4 exists, steps 1-5 are logged
            raise KeyboardInterrupt
        return original(self, *a, **kw)

    monkeypatch.setattr(WeightedTrainer, "training_step", interrupted)
    assert train(env, part, *args) == 130
    monkeypatch.setattr(WeightedTrainer, "training_step", original)
    assert (part / "checkpoint-4").is_dir() and not (part / "model").exists()
    assert [x["step"] for x in log_lines(part)] == list(range(1, 6))  # step 5 is redone after resuming
    assert train(env, part, *args) == 0  # the same command continues
    assert "resumed from checkpoint-4" in capsys.readouterr().out

    a, b = weights(full / "model"), weights(part / "model")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
    la, lb = log_lines(full), log_lines(part)
    assert [x["step"] for x in lb] == list(range(1, 7))
    for x, y in zip(la, lb):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5) and y["weight_zero_share"] == x["weight_zero_share"]
    assert (
        json.loads((part / "summary.json").read_text())["tokens"]
        == json.loads((full / "summary.json").read_text())["tokens"]
    )


def test_nan_guard_exits_2_naming_step_and_sequences(env, capsys):
    from datasets import load_from_disk

    rows = load_from_disk(str(env["data"] / "train"))["input_ids"]
    counts = {}
    for i, r in enumerate(rows):
        for t in set(r[1:]):
            counts.setdefault(t, set()).add(i)
    token, seqs = min(counts.items(), key=lambda kv: len(kv[1]))  # the rarest token and its sequences
    model = tiny_model(n=N, tie=False)
    with torch.no_grad():
        model.get_input_embeddings().weight[token] = math.nan
    bad = env["root"] / "nan-model"
    model.save_pretrained(bad)
    capsys.readouterr()
    assert train(env, env["root"] / "nan", "--model", str(bad), "--batch-size", "10", "--max-steps", "2") == 2
    line = one_line_error(capsys)
    rows = re.search(r"non-finite training loss \(nan\) at step 1 in rows (\[[\d, ]*\]) of the micro-batch", line)
    assert rows and len(json.loads(rows.group(1))) == len(seqs)  # the rows that hold the poisoned token


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--init", "tiny", "--model", "x"], "pass exactly one of --model"),
        (["--init", "huge"], "--init must be one of tiny, small, shallow, mini, narrow, base, large"),
        (["--model", "/no/such/model"], "model path '/no/such/model' does not exist"),
        (["--init", "tiny", "--scheme", "dense:0.5"], "needs short-context NLL: pass --scorer self"),
        (["--init", "tiny", "--scheme", "dense:2"], "--scheme: invalid weighting spec"),
        (
            ["--init", "tiny", "--scheme", "dense:0.5", "--scorer", "self", "--window", "64"],
            "long context n = 64 must be longer than the short context w = 64",
        ),
        (["--init", "tiny", "--scheme", "dense:0.5", "--scorer", "self"], "--window is needed"),
        (["--init", "tiny", "--scheme", "dense:0.5", "--scorer", "frozen"], "--scorer frozen needs --scores"),
        (
            ["--init", "tiny", "--scheme", "dense:0.5", "--scorer", "frozen", "--scores", "/nope"],
            "is not a score cache",
        ),
        (["--init", "tiny", "--n", "128"], "--n 128 is longer than the data's sequences"),
        (["--init", "tiny", "--max-steps", "0"], "--max-steps must be an integer >= 1, got 0"),
        (["--init", "tiny", "--lr-scheduler", "wsd"], "--lr-scheduler must be one of constant_with_warmup,"),
    ],
)
def test_bad_input_exits_2_with_one_line(env, capsys, extra, message):
    assert train(env, env["root"] / "bad", *extra) == 2
    assert message in one_line_error(capsys)


def test_model_with_another_tokenizer_is_refused_in_one_line(env, capsys):
    """A model that ships a tokenizer must ship the data's: compared by identity (vocabulary and
    BOS/EOS/UNK), not size. A larger tokenizer (600 tokens over the data's 64, the reported case)
    and one of the same size with other words are refused before the model is loaded; the data's
    own tokenizer with embeddings padded beyond it trains; a model without a tokenizer is accepted
    when its embeddings cover the data's (refused in one line otherwise)."""
    from tests.scorecache.test_scorecache import make_tokenizer as word_tokenizer
    from tests.tiny_models import save_tiny_llama
    from tests.train.train_helpers import make_tokenizer

    root = env["root"] / "tokenizers"
    shape = dict(hidden_size=32, num_attention_heads=2, max_position_embeddings=N, bos_token_id=BOS, eos_token_id=2)
    make_tokenizer(root / "tok600", 600)  # the data's 64 words and 536 more
    word_tokenizer(root / "same-size", 64, prefix="v")  # 64 tokens, other words
    steps = ["--batch-size", "2", "--max-steps", "1", "--lr", "3e-3", "--warmup-steps", "1"]
    data = str(env["data"])
    capsys.readouterr()
    for name, vocab, entries in (("tok600", 600, "600 vs 64 entries"), ("same-size", 64, "64 vs 64 entries")):
        model = root / f"model-{name}"
        save_tiny_llama(model, vocab, tokenizer=root / name, **shape)
        capsys.readouterr()
        for command in ("train", "pretrain"):
            extra = ["--window", str(W)] if command == "pretrain" else []
            assert train(env, root / "run", "--model", str(model), *steps, *extra, command=command) == 2
            line = one_line_error(capsys)
            assert line.startswith(
                f"tokenweight: error: model {str(model)!r} uses a different tokenizer than the data {data!r} ({entries}"
            )
            assert line.endswith(
                f": prepare the data with --tokenizer {model}, or pass a model trained with the data's tokenizer"
            )
    padded = root / "model-padded"  # the data's tokenizer, 96 embeddings for its 64 tokens
    save_tiny_llama(padded, 96, tokenizer=env["data"] / "tokenizer", **shape)
    assert train(env, root / "padded-run", "--model", str(padded), *steps) == 0
    bare = root / "model-bare"  # no tokenizer, too few embeddings
    save_tiny_llama(bare, 32, **shape)
    capsys.readouterr()
    assert train(env, root / "run", "--model", str(bare), *steps) == 2
    assert "has a vocabulary of 32 tokens but the data's tokenizer has 64" in one_line_error(capsys)


def test_score_cache_of_other_data_is_refused_without_force(env, capsys):
    """`train --scores` with the cache of other data names the cache and the data it was made for,
    and says to score this data into another folder, not to overwrite the other data's scores."""
    from tests.train.train_helpers import tiny_model as scorer_model
    from tokenweight.scorecache import compute_scores

    root = env["root"] / "other-data"
    other = make_prepared(root / "data", n=N, count=6, seed=3)
    scorer_model(n=N).save_pretrained(root / "scorer")
    foreign = root / "scores"
    compute_scores(foreign, other, root / "scorer", window=W, device="cpu")
    argv = ["--init", "tiny", "--scheme", "dense:0.5", "--scorer", "frozen", "--scores", str(foreign)]
    capsys.readouterr()
    assert train(env, root / "run", *argv) == 2
    line = one_line_error(capsys)
    assert line.startswith(f"tokenweight: error: score cache {str(foreign)!r} was computed for data ")
    assert f"it holds the scores of --data {str(other.resolve())!r} (split 'train'), not of " in line
    assert "score this data into another folder (`tokenweight score --data " in line and "--force" not in line


def test_pretrain_copy_task_trains_on_the_repeat_only(env, capsys):
    out = env["root"] / "copy"
    assert train(env, out, *TINY, "--window", str(W), "--max-steps", "3", "--task", "copy", command="pretrain") == 0
    from tokenweight.identity import load_tokenizer
    from tokenweight.train.copytask import CopyTask

    tok = load_tokenizer(str(env["data"] / "tokenizer"))
    rows = CopyTask(3 * 2, W, len(tok), special_ids=tok.all_special_ids, bos_token_id=tok.bos_token_id, seed=0)
    # 3 steps x 2 rows = every row once, in some order: exactly the repeated tokens are scored
    lines = log_lines(out)
    assert sum(x["scored_tokens"] for x in lines) == sum(int((rows[i]["labels"] != -100).sum()) for i in range(6))
    assert json.loads((out / "run_config.json").read_text())["task"] == "copy"
    assert train(env, env["root"] / "copy-bad", *TINY, "--window", "3", "--task", "copy", command="pretrain") == 2
    assert "copy rows need 4 to --window (3) tokens" in one_line_error(capsys)
    assert (
        train(
            env,
            env["root"] / "copy-bad",
            *TINY,
            "--window",
            str(W),
            "--copy-length",
            str(W + 1),
            "--task",
            "copy",
            command="pretrain",
        )
        == 2
    )
    assert f"copy rows need 4 to --window ({W}) tokens (BOS and a token to copy, twice), got {W + 1}" in one_line_error(
        capsys
    )
    assert train(env, env["root"] / "copy-bad", *TINY, "--copy-fraction", "1", command="pretrain") == 2
    assert "--copy-fraction must be in [0, 1)" in one_line_error(capsys)


def test_pretrain_with_copy_rows(env):
    out = env["root"] / "mixed"
    assert (
        train(env, out, *TINY, "--window", str(W), "--max-steps", "2", "--copy-fraction", "0.5", command="pretrain")
        == 0
    )
    assert json.loads((out / "summary.json").read_text())["steps"] == 2


def test_pretrain_copy_rows_of_copy_length(env):
    """--copy-length L: copy rows of L tokens (shorter than the window), scored on their repeats only."""
    out, length = env["root"] / "copy-short", 8
    assert (
        train(
            env,
            out,
            *TINY,
            "--window",
            str(W),
            "--copy-length",
            str(length),
            "--max-steps",
            "3",
            "--task",
            "copy",
            command="pretrain",
        )
        == 0
    )
    from tokenweight.identity import load_tokenizer
    from tokenweight.train.copytask import CopyTask

    tok = load_tokenizer(str(env["data"] / "tokenizer"))
    rows = CopyTask(6, length, len(tok), special_ids=tok.all_special_ids, bos_token_id=tok.bos_token_id, seed=0)
    lines = log_lines(out)
    assert sum(x["tokens"] for x in lines) == 6 * length  # 3 steps x 2 rows, no padding to the window
    assert sum(x["scored_tokens"] for x in lines) == sum(int((rows[i]["labels"] != -100).sum()) for i in range(6))


def test_bf16_and_gradient_checkpointing_flags(env, capsys):
    """--dtype bfloat16 is bf16 mixed precision (float32 master weights)."""
    out = env["root"] / "bf16"
    assert (
        train(
            env,
            out,
            *TINY,
            "--window",
            str(W),
            "--max-steps",
            "2",
            "--dtype",
            "bfloat16",
            "--gradient-checkpointing",
            command="pretrain",
        )
        == 0
    )
    targs = torch.load(out / "checkpoint-2" / "training_args.bin", weights_only=False)
    assert targs.bf16 and not targs.fp16 and targs.activation_checkpointing and targs.use_cpu
    assert all(t.dtype == torch.float32 for t in weights(out / "model").values())  # float32 master weights
    assert all(math.isfinite(x["loss"]) for x in log_lines(out))


def test_run_folder_protection(env, capsys):
    out = env["root"] / "protect"
    assert train(env, out, *TINY, "--max-steps", "2", "--save-steps", "1") == 0
    before = weights(out / "model")
    capsys.readouterr()
    assert train(env, out, *TINY, "--max-steps", "2", "--save-steps", "1") == 0  # finished: a no-op
    assert "nothing to do" in capsys.readouterr().out
    after = weights(out / "model")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert train(env, out, *TINY, "--max-steps", "2", "--lr", "1e-2") == 2
    assert "with lr = 0.003, this command has lr = 0.01" in one_line_error(capsys)
    assert (
        main(["pretrain", "--data", str(env["root"] / "nodata"), "--out", str(env["root"] / "x"), "--init", "tiny"])
        == 2
    )
    assert "nodata' does not exist" in one_line_error(capsys)


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process_with_accumulation(env):
    """2 processes × batch 2 == 1 process × batch 2 × accumulation 2 (same global batches and weights)."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    common = [
        "train",
        "--data",
        str(env["data"]),
        "--init",
        "tiny",
        "--scheme",
        "dense:0.5",
        "--scorer",
        "self",
        "--window",
        str(W),
        "--max-steps",
        "3",
        "--batch-size",
        "2",
        "--save-steps",
        "100",
        "--lr",
        "3e-3",
        "--max-train-sequences",
        "8",
    ]  # 4 micro-batches per epoch: no uneven last step
    envv = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    two = env["root"] / "ddp2"
    run = subprocess.run(
        [
            torchrun,
            "--nproc_per_node",
            "2",
            "--master_port",
            "29533",
            "-m",
            "tokenweight.cli.main",
            *common,
            "--out",
            str(two),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=envv,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "trained 3 steps" in run.stdout
    one = env["root"] / "ddp1"
    assert main([*common, "--out", str(one), "--grad-accum", "2"]) == 0
    assert json.loads((two / "summary.json").read_text())["world_size"] == 2
    a, b = weights(one / "model"), weights(two / "model")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=2e-6, msg=k)
    la, lb = log_lines(one), log_lines(two)
    for x, y in zip(la, lb):
        for k in ("loss", "weighted_loss", "plain_loss", "weight_std", "weight_max", "tokens", "scored_tokens"):
            assert y[k] == pytest.approx(x[k], rel=1e-5), k
