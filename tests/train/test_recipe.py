"""Run configs -> TrainingArguments, DeepSpeed configs, and the shipped YAML configs (valid stage
configs, the paper's numbers, the demo's defaults)."""

from __future__ import annotations

import json

import pytest
import yaml

from tokenweight.cli.main import load_yaml as load_config
from tokenweight.context_extension import theta_for_extension
from tokenweight.demo import render_default_configs
from tokenweight.errors import UsageError
from tokenweight.stages.pretrain import PretrainConfig
from tokenweight.stages.runs import RunConfig
from tokenweight.stages.train import TrainConfig
from tokenweight.train.recipe import CONFIG_DIR, load_deepspeed_config, training_arguments


def test_training_arguments_from_recipe(tmp_path):
    r = RunConfig(max_steps=7, batch_size=3, grad_accum=2, lr=2e-5, warmup_steps=20, save_steps=5, seed=4)
    a = training_arguments(r, tmp_path)
    assert (a.max_steps, a.per_device_train_batch_size, a.gradient_accumulation_steps) == (7, 3, 2)
    assert (a.learning_rate, a.warmup_steps, a.adam_beta1, a.adam_beta2, a.weight_decay) == (2e-5, 20, 0.9, 0.95, 0.01)
    assert a.lr_scheduler_type == "constant_with_warmup" and a.seed == a.data_seed == 4
    assert not a.remove_unused_columns and a.average_tokens_across_devices
    assert a.include_num_input_tokens_seen == "non_padding" and a.save_steps == 5 and a.logging_steps == 1
    assert a.output_dir == str(tmp_path) and a.report_to == ["tensorboard"]


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_steps", 0),
        ("lr", 0.0),
        ("adam_beta2", 1.0),
        ("lr_scheduler", "wsd"),
        ("save_total_limit", 0),
        ("grad_accum", 1.5),
    ],
)
def test_recipe_validation(field, value):
    with pytest.raises(ValueError, match=field):
        RunConfig(data="d", out="o", init="tiny", **{field: value}).validate()


def test_deepspeed_configs(tmp_path):
    z3 = load_deepspeed_config("zero3")
    assert z3["zero_optimization"]["stage"] == 3 and z3["bf16"]["enabled"] == "auto"
    assert z3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    assert load_deepspeed_config(tmp_path / "ds.json") == {"zero_optimization": {"stage": 2}}
    with pytest.raises(UsageError, match="zero3"):
        load_deepspeed_config("zero9")


@pytest.mark.parametrize(
    "name, cls",
    [
        ("demo_warmup", PretrainConfig),
        ("demo_pretrain", PretrainConfig),
        ("demo_train", TrainConfig),
        ("paper_llama3_8b_32k", TrainConfig),
        ("paper_llama3_8b_128k_sp", TrainConfig),
    ],
)
def test_shipped_configs_are_valid_stage_configs(name, cls):
    values = load_config(CONFIG_DIR / f"{name}.yaml")  # unknown keys raise ValueError
    start = {} if "init" in values or "model" in values else {"init": "tiny"}
    scores = {"scores": "s"} if values.get("scorer") == "frozen" else {}
    runtime = {"attn_implementation": "auto"}  # flash_attention_2 is refused where it is not installed
    config = cls.from_dict({**values, **start, **scores, **runtime, "data": "d", "out": "o"})
    config.validate()
    assert config.data == "d"


def test_demo_configs_are_the_default_profile():
    """The shipped demo_*.yaml are exactly what the default profile's stage configs hold."""
    for name, text in render_default_configs().items():
        assert (CONFIG_DIR / name).read_text(encoding="utf-8") == text, f"regenerate {name}: see docs/TRAINING.md"


def test_paper_recipe_numbers():
    c = load_config(CONFIG_DIR / "paper_llama3_8b_32k.yaml")
    assert (c["n"], c["window"], c["stride"]) == (32768, 8192, 6144)
    assert (c["lr"], c["warmup_steps"], c["lr_scheduler"]) == (2e-5, 20, "constant_with_warmup")
    assert (c["adam_beta1"], c["adam_beta2"], c["weight_decay"]) == (0.9, 0.95, 0.01)
    assert (c["batch_size"], c["grad_accum"], c["max_steps"], c["dtype"], c["gradient_checkpointing"]) == (
        1,
        16,
        240,
        "bfloat16",
        True,
    )
    assert c["deepspeed"] == "zero3" and c["rope_theta"] == pytest.approx(theta_for_extension(500_000, 4), rel=1e-12)


def test_sequence_parallel_recipe_and_its_rules():
    c = load_config(CONFIG_DIR / "paper_llama3_8b_128k_sp.yaml")
    assert (c["n"], c["sp_size"], c["scorer"], c["deepspeed"]) == (131072, 8, "frozen", "zero3")
    assert c["n"] % c["sp_size"] == 0
    base = dict(data="d", out="o", model="m", scheme="dense:0.5", sp_size=2)
    with pytest.raises(ValueError, match="sp_size: sequence parallelism runs on DeepSpeed's Ulysses: pass --deepspeed"):
        TrainConfig(**base, scorer="frozen", scores="s").validate()
    with pytest.raises(ValueError, match="sp_size: self-scoring under sequence parallelism is not supported"):
        TrainConfig(**base, scorer="self", deepspeed="zero3").validate()
    TrainConfig(**base, scorer="frozen", scores="s", deepspeed="zero3").validate()


def test_accelerate_configs():
    fsdp = yaml.safe_load((CONFIG_DIR / "accelerate" / "fsdp.yaml").read_text())
    assert fsdp["distributed_type"] == "FSDP" and fsdp["fsdp_config"]["fsdp_version"] == 2
    assert fsdp["fsdp_config"]["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    ddp = yaml.safe_load((CONFIG_DIR / "accelerate" / "ddp.yaml").read_text())
    assert ddp["distributed_type"] == "MULTI_GPU"
