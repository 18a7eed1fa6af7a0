"""The shipped base model (tokenweight/assets/base-default): its record, when the demo uses it, and
that using it gives exactly what pretraining from scratch gives (docs/TRAINING.md)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from tokenweight.cli.main import build_parser, main, stage_config
from tokenweight.demo import (
    PRETRAIN_FIELDS,
    PROFILES,
    SHIPPED_BASES,
    Demo,
    DemoConfig,
    Profile,
    check_shipped_base,
)
from tokenweight.errors import UsageError

ASSET = SHIPPED_BASES["default"]


@pytest.fixture(scope="module")
def record():
    return json.loads((ASSET / "BASE.json").read_text())


# ----------------------------------------------------------------------------- the shipped asset


def test_shipped_asset_matches_its_record_and_loads(record):
    from tokenweight.identity import load_tokenizer
    from tokenweight.io_utils import check_files
    from tokenweight.models import load_model

    p = PROFILES["default"]
    assert check_shipped_base(ASSET, p) == record  # model, tokenizer and encoder digests, pretraining settings
    check_files(ASSET, record["files"], what="asset file", fix="export it again")
    assert set(record["files"]) == {f.name for f in ASSET.iterdir()} - {"BASE.json"}
    assert (ASSET / "model.safetensors").is_file()
    assert record["bytes"] < 20_000_000  # a few MB of package data
    model, tok = load_model(str(ASSET)), load_tokenizer(ASSET)
    assert model.config.max_position_embeddings == p.window and model.config.vocab_size >= len(tok) == p.vocab_size
    assert record["gate"]["passed"] and record["gate"]["token_accuracy"] >= p.gate
    assert record["tokenizer_check"]["same"]
    assert record["tokenizer_check"]["trained_by_prepare"] == {
        "tokenizer_digest": record["tokenizer_digest"],
        "encoder_digest": record["encoder_digest"],
    }
    assert {"python", "torch"} <= set(record["versions"])


def test_shipped_asset_was_pretrained_with_todays_settings(record):
    """A change to the default profile's pretraining or to a pretraining default needs a new export."""
    demo = Demo(Path("unused"), PROFILES["default"])
    assert record["pretraining"] == demo.pretraining_settings(), (
        f"the shipped base is stale: re-export it with `{record['command']}` (docs/TRAINING.md)"
    )
    args = build_parser("demo").parse_args(record["command"].split()[1:])
    config = stage_config(DemoConfig, args)
    assert config.profile == "default" and Path(config.export_base) == Path("tokenweight/assets/base-default")


def _other(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, tuple):  # an empty one is the runs of Profile.extra_runs: add one
        return (*value, value[-1]) if value else (("extra", "uniform", "none"),)
    return 0.5  # None


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(Profile) if f.name != "name"])
def test_pretrain_fields_are_what_decides_the_base_model(name):
    p = PROFILES["default"]
    before = Demo(Path("unused"), p).pretraining_settings()
    after = Demo(Path("unused"), replace(p, **{name: _other(getattr(p, name))})).pretraining_settings()
    assert (before != after) == (name in PRETRAIN_FIELDS)


@pytest.mark.slow
def test_shipped_tokenizer_is_the_one_prepare_trains(record, tmp_path):
    """prepare on this machine trains exactly the shipped tokenizer, so ids of data prepared with it match."""
    from tokenweight.data.tokenizer import encoder_digest
    from tokenweight.identity import load_tokenizer, tokenizer_digest
    from tokenweight.stages.prepare import prepare

    p = PROFILES["default"]
    pre = Demo(tmp_path, p).prepare_configs()[0]
    assert pre.tokenizer is None
    # the tokenizer learns from the first documents whatever max_tokens cuts off: a small data set will do
    manifest = prepare(replace(pre, out=str(tmp_path / "pre"), max_tokens=p.window)).manifest
    if manifest["inputs"]["fingerprint"] != record["corpus"]["fingerprint"]:
        pytest.skip(f"this Python's standard library is not the one of Python {record['corpus']['python']}")
    tok = load_tokenizer(tmp_path / "pre" / "tokenizer")
    assert tokenizer_digest(tok) == record["tokenizer_digest"]
    assert encoder_digest(tok) == record["encoder_digest"]


# ----------------------------------------------------------------------------- which base a demo uses


def test_default_profile_uses_the_shipped_base_unless_from_scratch(tmp_path):
    assert DemoConfig().shipped_base() == ASSET
    assert DemoConfig(from_scratch=True).shipped_base() is None
    assert DemoConfig(export_base=str(tmp_path / "x")).shipped_base() is None
    assert DemoConfig(profile="quick").shipped_base() is None and DemoConfig(profile="full").shipped_base() is None
    assert stage_config(DemoConfig, build_parser("demo").parse_args(["demo", "--from-scratch"])).from_scratch

    shipped = Demo(tmp_path, PROFILES["default"], shipped_base=ASSET)
    pre, ext = shipped.prepare_configs()
    assert pre.tokenizer == str(ASSET) and ext.tokenizer == str(shipped.pre_data / "tokenizer")
    assert ext.after == str(shipped.pre_data)  # the extension data still comes after the pretraining data
    assert shipped.score_config().scorer == str(tmp_path / "base" / "model")
    assert shipped.train_config("uniform", "uniform", "none", 0).model == str(tmp_path / "base" / "model")
    assert shipped.base_settings()["source"] == "shipped"
    scratch = Demo(tmp_path, PROFILES["default"])
    assert scratch.prepare_configs()[0].tokenizer is None and scratch.base_settings() == {"source": "from_scratch"}
    # everything but the tokenizer is the from-scratch preparation
    assert dataclasses.replace(pre, tokenizer=None) == scratch.prepare_configs()[0]


def test_command_round_trips():
    config = DemoConfig(out="runs/b", export_base="tokenweight/assets/base-default", threads=2)
    line = config.command()
    assert (
        line
        == "tokenweight demo --profile default --out runs/b --threads 2 --export-base tokenweight/assets/base-default"
    )
    assert stage_config(DemoConfig, build_parser("demo").parse_args(line.split()[1:])) == config


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_missing_asset_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(SHIPPED_BASES, "default", tmp_path / "nowhere")
    assert main(["demo", "--out", str(tmp_path / "d")]) == 2
    err = _one_line_error(capsys)
    assert "shipped base model" in err and "missing" in err and "--from-scratch" in err
    assert not (tmp_path / "d").exists()  # refused before anything is written


@pytest.mark.parametrize("part", ["config.json", "BASE.json"])
def test_altered_asset_is_refused(tmp_path, monkeypatch, capsys, part):
    copy = tmp_path / "asset"
    shutil.copytree(ASSET, copy)
    data = json.loads((copy / part).read_text())
    if part == "config.json":
        data["rope_theta"] = 1234.0
    else:
        data["tokenizer_digest"] = "0" * 16
    (copy / part).write_text(json.dumps(data))
    monkeypatch.setitem(SHIPPED_BASES, "default", copy)
    assert main(["demo", "--out", str(tmp_path / "d")]) == 2
    err = _one_line_error(capsys)
    assert "does not match its BASE.json" in err and "--from-scratch" in err
    assert ("model_digest" if part == "config.json" else "tokenizer_digest") in err
    assert not (tmp_path / "d").exists()


def test_pretraining_overrides_need_from_scratch(tmp_path, capsys):
    assert main(["demo", "--pretrain-steps", "5", "--out", str(tmp_path / "d")]) == 2
    err = _one_line_error(capsys)
    assert "pretrain_steps 5 (shipped: 500)" in err and "--from-scratch" in err
    assert not (tmp_path / "d").exists()


# ----------------------------------------------------------------------------- end to end, quick profile


@pytest.fixture(scope="module")
def quick_pair(tmp_path_factory):
    """A quick base exported from scratch (prepare, warm-up, pretraining, gate), then a whole quick demo
    that uses it as its shipped base."""
    root = tmp_path_factory.mktemp("shipped")
    scratch, asset, shipped = root / "scratch", root / "asset", root / "shipped"
    argv = ["demo", "--profile", "quick", "--export-base", str(asset), "--out", str(scratch)]
    assert main(argv) == 0
    Demo(shipped, PROFILES["quick"], shipped_base=asset).run()
    return scratch, asset, shipped


@pytest.mark.slow
def test_export_writes_a_checked_record(quick_pair):
    from tokenweight.identity import model_digest

    scratch, asset, _ = quick_pair
    record = check_shipped_base(asset, PROFILES["quick"])
    assert record["model_digest"] == model_digest(scratch / "base" / "model")
    assert record["gate"] == json.loads((scratch / "gate.json").read_text()) | {"passed": True}
    assert record["command"].startswith("tokenweight demo --profile quick --out ")
    assert record["profile"] == "quick" and record["pretrain_seconds"] > 0
    assert json.loads((scratch / "demo_settings.json").read_text())["base_model"] == {"source": "from_scratch"}
    assert not (scratch / "scores").exists() and not (scratch / "runs").exists()  # export stops after the gate
    assert {"warmup", "pretrain"} <= set(record["pretraining"])


@pytest.mark.slow
def test_shipped_base_gives_what_pretraining_gave(quick_pair):
    from tokenweight.data import load_prepared
    from tokenweight.identity import model_digest

    scratch, asset, shipped = quick_pair
    record = json.loads((asset / "BASE.json").read_text())
    assert model_digest(shipped / "base" / "model") == record["model_digest"]
    assert not (shipped / "warmup").exists()  # nothing was pretrained
    for part in ("pretrain", "extend"):  # the same token ids, pretraining and extension data alike
        a, ma = load_prepared(scratch / "data" / part)
        b, mb = load_prepared(shipped / "data" / part)
        assert ma["selection"]["end"] == mb["selection"]["end"]
        for split in ("train", "validation"):
            rows_a, rows_b = a[split].to_dict(), b[split].to_dict()
            assert rows_a["input_ids"] == rows_b["input_ids"] and rows_a["episodes"] == rows_b["episodes"]
    gate = json.loads((shipped / "gate.json").read_text())
    assert gate == json.loads((scratch / "gate.json").read_text())  # the gate measures the same model
    settings = json.loads((shipped / "demo_settings.json").read_text())["base_model"]
    assert settings["source"] == "shipped" and settings["model_digest"] == record["model_digest"]
    times = json.loads((shipped / "stage_seconds.json").read_text())
    assert "base" in times and "pretrain" not in times
    results = json.loads((shipped / "report" / "results.json").read_text())
    assert results["config"]["base_model"] == settings


@pytest.mark.slow
def test_a_demo_folder_keeps_its_base_source(quick_pair):
    _, _, shipped = quick_pair
    with pytest.raises(UsageError, match="base_model differ"):
        Demo(shipped, PROFILES["quick"]).run()  # from scratch into the folder of a shipped-base demo
