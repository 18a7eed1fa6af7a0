"""docs/INTEGRATION.md's three recipes run as written (model paths swapped for tiny local models with
a tokenizer): the own loop, a Trainer subclass with the mixin and a short_nll column, TRL's SFTTrainer."""

import re
from pathlib import Path

import pytest
import torch

from tests.tiny_models import save_tiny_llama, tiny_bpe

DOC = Path(__file__).resolve().parents[2] / "docs" / "INTEGRATION.md"
TEXTS = [
    f"def f{i}(x):\n    return x * {i} + {i * i}\nclass C{i}:\n    value = {i}\n# task {i}: add\n" for i in range(40)
]


def recipes() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("integration")
    tok = tiny_bpe(TEXTS, 300)
    for name, seed in (("model", 0), ("short", 1)):
        save_tiny_llama(root / name, len(tok), seed, tokenizer=tok, max_position_embeddings=512, pad_token_id=2)
    return root


def test_there_are_three_recipes():
    assert len(recipes()) == 3


@pytest.mark.parametrize("k", [0, 1, 2])
def test_recipe_runs_as_written(models, tmp_path, monkeypatch, k):
    monkeypatch.chdir(tmp_path)  # the recipes write runs/...
    code = recipes()[k].replace("path/to/model", str(models / "model"))
    code = code.replace("path/to/short-model", str(models / "short"))
    scope: dict = {"__name__": "__recipe__"}
    exec(compile(code, f"{DOC}#recipe{k + 1}", "exec"), scope)
    if k == 0:
        assert torch.isfinite(scope["out"].loss()) and scope["out"].weights is not None
    else:
        trainer = scope["trainer"]
        assert trainer.state.global_step == 4
        logged = [h for h in trainer.state.log_history if "weighted_loss" in h]
        assert logged and all(h["weight_mean"] == pytest.approx(1.0, abs=1e-4) for h in logged)
    if k == 1:
        assert "short_nll" in scope["data"].column_names
        metrics = trainer.evaluate()
        assert {"eval_loss", "eval_weighted_loss", "eval_plain_loss"} <= set(metrics)
