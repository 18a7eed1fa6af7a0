"""The README's Python example runs as written (model paths swapped for tiny local models), and with
``"uniform"`` it is exactly ``model(**batch).loss`` (labels of -100, padding) for a Llama, a
Gemma-2 (soft-capped logits) and a Mixtral (router loss included)."""

import re
from pathlib import Path

import pytest
import torch

from tests.tiny_models import save_tiny_llama, tiny_mixtral

README = Path(__file__).resolve().parents[2] / "README.md"
VOCAB = 300
TINY = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
)


def save_family(path: Path, family: str) -> None:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(1)
    if family == "llama":
        save_tiny_llama(path, VOCAB, 1, max_position_embeddings=1024)
        return
    if family == "gemma2":  # eager attention (Gemma-2 refuses sdpa), logits soft-capped at 2
        config = Gemma2Config(
            **TINY,
            head_dim=8,
            query_pre_attn_scalar=8,
            final_logit_softcapping=2.0,
            attn_implementation="eager",
            initializer_range=0.5,  # logits of several units, so that the cap matters
        )
        Gemma2ForCausalLM(config).save_pretrained(path)
    else:  # the router loss is part of model(labels=...).loss
        tiny_mixtral(VOCAB, None, max_position_embeddings=1024).save_pretrained(path)


def readme_code(tmp_path: Path, family: str) -> str:
    save_family(tmp_path / "model", family)
    save_tiny_llama(tmp_path / "short", VOCAB, 2, max_position_embeddings=1024)
    code = re.search(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S).group(1)
    return code.replace("path/to/model", str(tmp_path / "model")).replace(
        "path/to/short-model", str(tmp_path / "short")
    )


def test_readme_example_runs_as_written(tmp_path):
    scope: dict = {}
    exec(compile(readme_code(tmp_path, "llama"), str(README), "exec"), scope)
    out, batch = scope["out"], scope["batch"]
    assert out.nll.shape == out.weights.shape == (2, 1023) and torch.isfinite(out.loss())
    mask = batch["labels"][:, 1:] != -100
    assert torch.equal(out.mask, mask) and out.count.item() == (1023 - 299) + (
        699 - 299
    )  # prompts and padding excluded
    for row in range(2):  # dense: mean weight 1 over the scored tokens of every row, 0 elsewhere
        assert out.weights[row][mask[row]].mean().item() == pytest.approx(1.0, abs=1e-5)
    assert out.weights[~mask].eq(0).all() and out.weights[mask].std() > 0.01
    assert all(p.grad is not None for p in scope["model"].parameters() if p.requires_grad)


@pytest.mark.parametrize("family", ["llama", "gemma2", "mixtral"])
def test_readme_example_under_uniform_is_the_models_own_loss(tmp_path, family):
    code = readme_code(tmp_path, family).replace('"dense:0.75"', '"uniform"')
    assert code.count('"uniform"') == 1
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    model, batch, out = scope["model"], scope["batch"], scope["out"]
    with torch.no_grad():
        own = model(**batch)
    assert out.loss().item() == pytest.approx(own.loss.item(), rel=1e-6, abs=1e-6)
    if family == "mixtral":
        assert out.aux_loss.item() == pytest.approx(0.5 * own.aux_loss.item(), rel=1e-6) and out.aux_loss > 0
    if family == "gemma2":  # the soft-cap is applied: without it the CE differs
        logits = model.lm_head(model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0])
        raw = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch["labels"][:, 1:])
        assert abs(raw.item() - own.loss.item()) > 1e-3
