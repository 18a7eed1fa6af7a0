"""Reading training logs and summaries for the report."""

import json

import pytest

from tokenweight.errors import UsageError
from tokenweight.report.training import decimate, read_log, summary_value


def _write(path, records, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_read_log_fields_order_and_robustness(tmp_path):
    log = tmp_path / "log.jsonl"
    _write(
        log,
        [
            {
                "step": 2,
                "loss": 4.1,
                "weighted_loss": 4.0,
                "plain_loss": 4.2,
                "weight_std": 0.5,
                "learning_rate": 1e-3,
                "tokens_per_s": 900.0,
                "grad_norm": 1.0,
            },
            {"step": 1, "loss": 5.0, "plain_loss": 5.2},  # a plain HF log: loss stands for the weighted loss
            {"step": 3, "weighted_loss": "nan", "plain_loss": 3.0},  # JsonlLogger writes non-finite as strings
            {"step": 2, "weighted_loss": 3.9, "plain_loss": 4.1},  # step 2 logged again after a resume: later wins
            {"step": 4, "eval_loss": 2.0},  # no training loss: skipped
            "not a dict",
        ],
        tail='{"step": 5, "weighted_lo',
    )  # the last line cut by a kill
    recs = read_log(log)
    assert [r["step"] for r in recs] == [1, 2, 3]
    assert recs[0] == {"step": 1, "weighted_loss": 5.0, "plain_loss": 5.2}
    assert recs[1] == {"step": 2, "weighted_loss": 3.9, "plain_loss": 4.1}
    assert recs[2] == {"step": 3, "plain_loss": 3.0}


def test_read_log_errors(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        read_log(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1, "loss": 1}\n{oops\n{"step": 2, "loss": 1}\n')
    with pytest.raises(UsageError, match="line 2 is not JSON"):
        read_log(bad)


def test_decimate_keeps_ends_and_spacing():
    recs = [{"step": i} for i in range(10)]
    assert decimate(recs, 20) == recs
    assert [r["step"] for r in decimate(recs, 4)] == [0, 3, 6, 9]
    assert [r["step"] for r in decimate([{"step": i} for i in range(2001)], 1000)][:3] == [0, 2, 4]
    with pytest.raises(ValueError, match="max_points"):
        decimate(recs, 1)


def test_summary_value():
    s = {"wall_time_s": 12.5, "tokens_per_s": 800, "steps": 40, "train_runtime": 99.0}
    assert summary_value(s, "wall_time_s") == 12.5 and summary_value(s, "tokens_per_s") == 800.0
    assert summary_value({"train_runtime": 7.0}, "wall_time_s") == 7.0
    assert summary_value(None, "tokens") is None and summary_value({"tokens": True}, "tokens") is None
    with pytest.raises(ValueError, match="field"):
        summary_value(s, "speed")
