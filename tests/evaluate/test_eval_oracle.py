"""Oracle check: a model trained to copy beats a random-init model on NIAH at short length.

A tiny Llama trained for a few hundred steps on repeated random token sequences learns to copy
(induction heads); the needle's value then becomes predictable from its earlier occurrence, so
the likelihood metric (teacher-forced token accuracy of the answer) must separate it clearly from
a random-init model. This checks the whole path: sample generation, likelihood scoring, runner
aggregation by depth.
"""

import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
from test_eval_runner import make_tokenizer  # noqa: E402

from tokenweight.evaluate.runner import EvalConfig, evaluate_models  # noqa: E402


def tiny_llama(vocab: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                      bos_token_id=0, eos_token_id=1, pad_token_id=2)
    return LlamaForCausalLM(cfg)


def train_copier(vocab: int, steps: int = 250, half: int = 64, batch: int = 8) -> LlamaForCausalLM:
    """Train on ``[BOS, x, x]`` with random ``x`` (loss on the second copy only)."""
    model = tiny_llama(vocab, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        x = torch.randint(3, vocab, (batch, half), generator=g)
        ids = torch.cat([torch.zeros(batch, 1, dtype=torch.long), x, x], dim=1)
        labels = ids.clone()
        labels[:, : half + 1] = -100
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5, f"the copier did not learn to copy (loss {loss.item():.3f})"
    return model.eval()


@pytest.mark.slow
def test_copying_model_beats_random_on_niah(tmp_path):
    tok = make_tokenizer(tmp_path / "tok")
    copier = train_copier(len(tok))
    rand = tiny_llama(len(tok), seed=1).eval()
    cfg = EvalConfig(tasks=["niah_single_1"], lengths=[128], window=128, num_samples=4,
                     depths=[0.25, 0.75], generation=False, batch_size=8)
    res = evaluate_models({"random": rand, "copier": copier}, tokenizer=tok, config=cfg)
    pooled = {m["name"]: next(r for r in m["tasks"] if r["depth"] is None) for m in res["models"]}
    acc = {k: v["likelihood"]["token_accuracy"] for k, v in pooled.items()}
    assert pooled["copier"]["samples"] == 8
    assert acc["random"] < 0.2
    assert acc["copier"] > acc["random"] + 0.5, acc
    # by depth rows exist for both depths
    assert sorted(r["depth"] for r in res["models"][1]["tasks"] if r["depth"] is not None) == [0.25, 0.75]
