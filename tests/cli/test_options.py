"""CLI flags derived from stage configs: names, help, defaults, YAML + flags, one-line errors."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from tokenweight.cli.main import build_parser, main, stage_config
from tokenweight.cli.options import config_from_args, flag, flag_message
from tokenweight.demo import DemoConfig
from tokenweight.errors import UsageError
from tokenweight.stages.evaluate import EvalConfig
from tokenweight.stages.prepare import PrepareConfig
from tokenweight.stages.pretrain import PretrainConfig
from tokenweight.stages.report import ReportConfig
from tokenweight.stages.score import ScoreConfig
from tokenweight.stages.train import TrainConfig

STAGES = {
    "prepare": PrepareConfig,
    "score": ScoreConfig,
    "pretrain": PretrainConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "report": ReportConfig,
    "demo": DemoConfig,
}


def parse(command: str, argv: list[str]):
    return build_parser(command).parse_args([command, *argv])


@pytest.mark.parametrize("command", sorted(STAGES))
def test_every_field_is_one_flag_with_the_same_name(command):
    cls = STAGES[command]
    parser = build_parser(command)
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    dests = {a.dest for a in sub._actions} - {"help", "config"}
    cli = {f.name for f in dataclasses.fields(cls) if f.metadata.get("cli", True)}
    assert dests == cli
    for a in sub._actions:
        if a.dest in cli and a.option_strings:
            assert flag(a.dest) in a.option_strings


@pytest.mark.parametrize("command", sorted(STAGES))
def test_defaults_come_from_the_config_class(command):
    cls = STAGES[command]
    args = parse(command, [])
    got = config_from_args(cls, args)
    assert got == cls()


def test_yaml_fills_fields_and_flags_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"max-steps": 7, "lr": 0.01, "scheme": "dense:0.5", "scorer": "self"}))
    args = parse("train", ["--config", str(cfg), "--lr", "0.02", "--data", "d", "--out", "o", "--init", "tiny"])
    c = stage_config(TrainConfig, args)
    assert (c.max_steps, c.lr, c.scheme, c.scorer, c.data) == (7, 0.02, "dense:0.5", "self", "d")


def test_unknown_yaml_key_is_refused(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_stepz: 3\n")
    args = parse("train", ["--config", str(cfg)])
    with pytest.raises(UsageError, match="unknown option.*max_stepz"):
        stage_config(TrainConfig, args)


def test_list_and_optional_flags():
    args = parse("eval", ["m1", "m2", "--lengths", "64,128", "--max-sequences", "none", "--no-generation"])
    c = stage_config(EvalConfig, args)
    assert (c.models, c.lengths, c.max_sequences, c.generation) == (["m1", "m2"], [64, 128], None, False)


def test_validation_error_is_one_line_with_the_flag(capsys):
    assert main(["train", "--data", "d", "--out", "o", "--init", "tiny", "--max-steps", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tokenweight: error: --max-steps must be an integer >= 1, got 0"]


def test_flag_message_only_rewrites_a_leading_field_name():
    assert flag_message("max_steps must be >= 1", TrainConfig) == "--max-steps must be >= 1"
    assert flag_message("pass n = 3", TrainConfig) == "pass n = 3"


def test_help_lists_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--max-steps INT" in out and "(default 100)" in out
    assert "--gradient-checkpointing, --no-gradient-checkpointing" in out
    assert "--dtype TEXT" in out and "--attn-implementation TEXT" in out and "--device TEXT" in out


def test_top_level_help_loads_no_stage_module():
    import subprocess
    import sys

    code = (
        "import sys; from tokenweight.cli.main import build_parser; build_parser(None).format_help(); "
        "print(sorted(m for m in sys.modules if m.startswith(('torch', 'transformers', 'tokenweight.stages'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
