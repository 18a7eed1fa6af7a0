"""The runtime options (--device, --dtype, --attn-implementation) on every stage that runs a model:
each reaches the model it loads, and a combination that cannot run here is one line and exit 2
before any work starts. Tiny local Llama models (~6 s on 2 CPU cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.scorecache.test_scorecache import make_prepared, make_scorer
from tokenweight import models as M
from tokenweight.cli.main import main

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the messages are those of a CPU-only machine")

FLASH_ON_CPU = (
    "tokenweight: error: --attn-implementation flash_attention_2 needs a CUDA device, got device cpu: use "
    "--attn-implementation sdpa (or auto), or --device cuda"
)
RUNTIME = ["--device", "cpu", "--dtype", "bfloat16", "--attn-implementation", "eager"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime")
    data = make_prepared(root / "data", n=24, count=4)
    model = make_scorer(root / "model", tokenizer=data / "tokenizer")
    (root / "text.txt").write_text(" ".join(f"w{i % 50}" for i in range(40)), encoding="utf-8")
    return root, data, model


@pytest.fixture
def loads(monkeypatch):
    """Every model a stage loads: what it was asked for and what it got."""
    seen, real = [], M.load_model

    def spy(*args, **kwargs):
        model = real(*args, **kwargs)
        seen.append(
            {
                "dtype": {str(p.dtype) for p in model.parameters()},
                "device": {p.device.type for p in model.parameters()},
                "attn": model.config._attn_implementation,
            }
        )
        return model

    monkeypatch.setattr(M, "load_model", spy)
    return seen


def _argv(stage: str, env, out: Path) -> list[str]:
    root, data, model = env
    return {
        "score": ["score", "--data", str(data), "--scorer", str(model), "--out", str(out), "--window", "8"],
        "eval": ["eval", str(model), "--data", str(data), "--tasks", "none", "--window", "8", "--out", str(out)],
        "pretrain": ["pretrain", "--init", "tiny", "--data", str(data), "--out", str(out), "--window", "8"],
        "train": ["train", "--model", str(model), "--data", str(data), "--out", str(out)],
        "show": ["show", "--model", str(model), "--text", str(root / "text.txt"), "--window", "8", "--out", str(out)],
        "demo": ["demo", "--profile", "quick", "--out", str(out)],
    }[stage]


@pytest.mark.parametrize("stage", ["score", "eval", "pretrain", "train", "show", "demo"])
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--attn-implementation", "flash_attention_2"], FLASH_ON_CPU),
        (["--device", "cuda:3"], "tokenweight: error: --device 'cuda:3': no CUDA device is available here"),
        (["--device", "gpu"], "tokenweight: error: --device 'gpu' is not a device: use auto, cpu, cuda or cuda:N"),
    ],
)
def test_bad_combinations_exit_2_with_one_line_before_any_work(env, stage, extra, message, capsys, tmp_path):
    out = tmp_path / "out"
    assert main([*_argv(stage, env, out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
    assert not out.exists()


@pytest.mark.parametrize("stage", ["pretrain", "train", "demo"])
def test_float16_training_on_cpu_is_refused(env, stage, capsys, tmp_path):
    assert main([*_argv(stage, env, tmp_path / "out"), "--dtype", "float16"]) == 2
    assert capsys.readouterr().err.strip() == (
        "tokenweight: error: --dtype float16 training needs a GPU (on CPU accelerate runs float16 mixed precision "
        "without autocast, i.e. in float32): use --dtype bfloat16 or float32"
    )


def test_score_runs_with_the_options(env, loads, tmp_path):
    assert main([*_argv("score", env, tmp_path / "s"), *RUNTIME]) == 0
    assert loads == [{"dtype": {"torch.bfloat16"}, "device": {"cpu"}, "attn": "eager"}]
    assert json.loads((tmp_path / "s" / "meta.json").read_text())["dtype"] == "bfloat16"


def test_eval_runs_with_the_options(env, loads, tmp_path):
    assert main([*_argv("eval", env, tmp_path / "e"), *RUNTIME]) == 0
    assert loads and all(x == {"dtype": {"torch.bfloat16"}, "device": {"cpu"}, "attn": "eager"} for x in loads)
    results = json.loads((tmp_path / "e" / "results.json").read_text())
    assert results["models"][0]["runtime"] == {"device": "cpu", "dtype": "bfloat16", "attn_implementation": "eager"}
    assert (results["config"]["device"], results["config"]["dtype"]) == ("cpu", "bfloat16")


def test_show_runs_with_the_options(env, loads, tmp_path):
    assert main([*_argv("show", env, tmp_path / "h.html"), *RUNTIME]) == 0
    assert loads == [{"dtype": {"torch.bfloat16"}, "device": {"cpu"}, "attn": "eager"}]
    assert (tmp_path / "h.html").is_file()


def test_training_models_get_the_attention_and_float32_weights(env):
    """Both training stages build their model with the run's attention; weights stay float32 (the
    Trainer autocasts: ``dtype`` is mixed precision), and ``dtype`` becomes the TrainingArguments flags."""
    from tokenweight.identity import load_tokenizer
    from tokenweight.stages.pretrain import PretrainConfig
    from tokenweight.stages.train import TrainConfig
    from tokenweight.train.recipe import training_arguments
    from tokenweight.train.setup import build_model

    _, data, model = env
    tok = load_tokenizer(data / "tokenizer")
    pre = PretrainConfig(init="tiny", data=str(data), out="o", attn_implementation="eager", dtype="bfloat16")
    train = TrainConfig(model=str(model), data=str(data), out="o", attn_implementation="eager")
    for config in (pre, train):
        config.validate()
        m = build_model(config, tok, 32, None)
        assert m.config._attn_implementation == "eager" and {p.dtype for p in m.parameters()} == {torch.float32}
    assert build_model(train.replace(attn_implementation="auto"), tok, 32, None).config._attn_implementation == "sdpa"
    args = training_arguments(pre, "o")
    assert (args.bf16, args.fp16, args.use_cpu) == (True, False, True)
    args = training_arguments(train, "o")
    assert (args.bf16, args.fp16, args.use_cpu) == (False, False, True)


def test_demo_passes_the_options_to_every_stage():
    from tokenweight.demo import PROFILES, Demo, DemoConfig

    config = DemoConfig(dtype="bfloat16", attn_implementation="eager", device="cpu")
    config.validate()
    demo = Demo(Path("unused"), PROFILES["default"], runtime=config.runtime_options())
    stages = [
        demo.warmup_config(),
        demo.pretrain_config(),
        demo.score_config(),
        demo.train_config("dense", "dense:0.75", "self", 0),
        demo.eval_config(),
    ]
    for c in stages:
        assert (c.device, c.dtype, c.attn_implementation) == ("cpu", "bfloat16", "eager"), type(c).__name__
    plain = Demo(Path("unused"), PROFILES["default"])
    assert plain.score_config().device == "auto" and plain.eval_config().attn_implementation == "auto"
