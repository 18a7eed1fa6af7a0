"""tokenweight.evaluate.inputs: the rules the native suite and lm-eval's tasks share (task lengths,
the evaluation's tokenizer and its folder)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tokenweight.errors import UsageError
from tokenweight.evaluate.inputs import resolve_window, task_lengths, tokenizer_folder, tokenizer_source


def test_task_lengths_add_the_window_only_when_no_length_is_inside_it():
    assert task_lengths([1024, 256, 512, 256], 256) == [256, 512, 1024]
    assert task_lengths([1024, 512], 256) == [256, 512, 1024]
    assert task_lengths([64], 256) == [64]


def test_window_from_config_manifest_data_or_lengths():
    cfg = SimpleNamespace(window=None, lengths=[300, 200])
    assert resolve_window(SimpleNamespace(window=32, lengths=[64]), {"window": 8}, 100) == 32
    assert resolve_window(cfg, {"window": 8}, 100) == 8
    assert resolve_window(cfg, {}, 100) == 25
    assert resolve_window(cfg, None, None) == 200


def test_tokenizer_source_and_folder(tmp_path):
    model, data = tmp_path / "model", tmp_path / "data"
    (model).mkdir()
    (model / "tokenizer.json").write_text("{}")
    (data / "tokenizer").mkdir(parents=True)
    models = {"m": str(model), "obj": object()}
    given = SimpleNamespace(name_or_path=str(model))
    assert tokenizer_source(given, data, models) == (given, "the tokenizer given")
    assert tokenizer_folder(given) == str(model)
    assert tokenizer_folder(SimpleNamespace(name_or_path="org/name")) is None  # a hub id: no folder
    assert tokenizer_source(str(model), data, models)[0] == str(model)
    source, where = tokenizer_source(None, data, models)
    assert tokenizer_folder(source) == str(data / "tokenizer") and where == f"the data {str(data)!r}"
    assert tokenizer_source(None, None, models) == (str(model), f"model {str(model)!r}")
    with pytest.raises(UsageError, match="no tokenizer"):
        tokenizer_source(None, None, {"obj": object()})
