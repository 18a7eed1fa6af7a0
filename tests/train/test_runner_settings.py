"""Options added later (OMITTED_AT_DEFAULT): an older run folder, made before the option existed,
stays the same run at the option's default, and only there."""

import json

import pytest

from tokenweight.errors import UsageError
from tokenweight.stages.train import TrainConfig
from tokenweight.train.runner import OMITTED_AT_DEFAULT, SETTINGS, plan_run


def _started(folder, settings):
    folder.mkdir()
    (folder / SETTINGS).write_text(json.dumps(settings))


def test_weight_norm_is_omitted_at_its_default_only():
    assert "weight_norm" in OMITTED_AT_DEFAULT
    base = dict(model="m", data="d", out="o", scheme="dense:0.75", scorer="self")
    assert "weight_norm" not in TrainConfig(**base).settings()
    assert TrainConfig(**base, weight_norm="document").settings()["weight_norm"] == "document"


def test_an_older_folder_is_the_same_run_at_the_default(tmp_path):
    old = {"scheme": "dense:0.75", "lr": 0.001}  # written before weight_norm existed
    _started(tmp_path / "run", old)
    assert plan_run(tmp_path / "run", dict(old)).state == "fresh"  # no checkpoint yet: starts over, not refused
    with pytest.raises(UsageError, match="weight_norm = None, this command has weight_norm = 'document'"):
        plan_run(tmp_path / "run", {**old, "weight_norm": "document"})


def test_a_recorded_non_default_is_not_dropped_by_a_default_command(tmp_path):
    old = {"scheme": "dense:0.75", "weight_norm": "document"}
    _started(tmp_path / "run", old)
    with pytest.raises(UsageError, match="weight_norm = 'document', this command has weight_norm = 'its default'"):
        plan_run(tmp_path / "run", {"scheme": "dense:0.75"})
