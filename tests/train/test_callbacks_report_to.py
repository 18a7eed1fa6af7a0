"""``--report-to``: the trackers are HF's own integrations (TensorBoard in OUT/tensorboard, one
writer, the weighted-loss scalars equal to log.jsonl's), ``none`` writes only log.jsonl, and the
setting does not change the run's identity."""

from __future__ import annotations

import json

import pytest

from tests.train.train_helpers import make_prepared
from tokenweight.errors import UsageError
from tokenweight.stages.runs import RunConfig
from tokenweight.stages.train import TrainConfig, train
from tokenweight.train.recipe import training_arguments
from tokenweight.train.runner import RESUMABLE_CHANGES


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("report_to") / "data", n=32, count=6)


def run(data, out, report_to):
    config = TrainConfig(
        init="tiny",
        data=str(data),
        out=str(out),
        scheme="dense:0.75",
        scorer="self",
        window=8,
        max_steps=2,
        batch_size=2,
        save_steps=2,
        report_to=report_to,
    )
    return train(config)


def test_tensorboard_through_hf_integration(data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    run(data, out, ["tensorboard"])
    events = sorted((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1  # one writer: HF's callback, no second one of ours
    assert not (out / "runs").exists()  # HF's time-stamped default folder is not used
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    logged = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logged] == [1, 2]
    for key in ("weighted_loss", "plain_loss", "weight_std"):
        scalars = acc.Scalars(f"train/{key}")
        assert [s.step for s in scalars] == [1, 2]
        assert [s.value for s in scalars] == pytest.approx([x[key] for x in logged], rel=1e-6)
    assert logged[0]["weighted_loss"] != logged[0]["plain_loss"]  # dense weights: two different numbers


def test_none_writes_only_the_jsonl_log(data, tmp_path):
    out = tmp_path / "none"
    run(data, out, ["none"])
    assert not (out / "tensorboard").exists() and not (out / "runs").exists()
    assert len((out / "log.jsonl").read_text().splitlines()) == 2
    # report_to is not part of the run's identity: the finished run is found done with another tracker
    assert run(data, out, ["tensorboard"]).already_done
    assert "report_to" in RESUMABLE_CHANGES and "report_to" not in TrainConfig(data="d", out="o").settings()


def test_report_to_arguments(tmp_path):
    assert training_arguments(RunConfig(), tmp_path).report_to == ["tensorboard"]
    assert training_arguments(RunConfig(report_to=["none"]), tmp_path).report_to == []
    for bad in (["neptune"], [], ["none", "tensorboard"]):
        with pytest.raises(ValueError, match="report_to"):
            RunConfig(data="d", out="o", init="tiny", report_to=bad).validate()


def test_missing_tracker_package_is_one_line(tmp_path):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    with pytest.raises(UsageError, match="--report-to wandb needs the wandb package"):
        training_arguments(RunConfig(report_to=["wandb"]), tmp_path)
