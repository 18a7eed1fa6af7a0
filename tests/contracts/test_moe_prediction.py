"""Mixture-of-experts models saved with ``output_router_logits=True`` in every stage that only reads
their predictions (:func:`tokenweight.documents.prediction_kwargs`).

A Mixtral or Qwen3-MoE trained for its router loss keeps ``output_router_logits=True`` in its
config, and then computes its load-balancing loss in every forward from the ``attention_mask`` it
is given: with a document-masked 4D mask (packed rows) or a 2D mask covering a KV cache (likelihood
scoring, generation) that fails ("size of tensor a (28) must match the size of tensor b (976)").
Scoring and evaluation pass ``output_router_logits=False``, so such a model gives exactly what the
same weights give with the router logits switched off, and the command line runs end to end.

Cost (2 CPU cores): exactness ~2 s per family, the command line ~6 s per family.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.tiny_models import tiny_bpe, tiny_llama
from tokenweight.documents import prediction_kwargs

W, N = 16, 128  # the scorer's (pretraining) context, the prepared sequences' length
BOS, EOS, PAD = 0, 1, 2  # tiny_bpe's special ids
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, num_experts_per_tok=2)
#: name -> (model_type, config fields): 4 experts, top-2, every layer a sparse one
FAMILIES = {
    "mixtral": ("mixtral", dict(intermediate_size=64, num_local_experts=4)),
    "qwen3_moe": (
        "qwen3_moe",
        dict(
            intermediate_size=64,
            moe_intermediate_size=32,
            num_experts=4,
            head_dim=8,
            decoder_sparse_step=1,
            mlp_only_layers=[],
        ),
    ),
}


def tiny_moe(name: str, vocab: int, seed: int = 0, **overrides):
    """A random MoE causal LM of ``name`` in eval mode (float32, sdpa), trained-for-its-router-loss
    style: ``output_router_logits=True``, ``router_aux_loss_coef=0.5``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type, fields = FAMILIES[name]
    config = AutoConfig.for_model(
        model_type,
        vocab_size=vocab,
        max_position_embeddings=W,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        **{**SMALL, **fields, "output_router_logits": True, "router_aux_loss_coef": 0.5, **overrides},
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").float().eval()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tokenizer that keeps NIAH prompts short (the task fits 128 tokens), a small corpus, and
    every family's tiny MoE saved with it."""
    from tests.data.conftest import make_docs
    from tokenweight.evaluate.tasks import haystack, niah

    root = tmp_path_factory.mktemp("moe")
    docs = make_docs(8, seed=5, lines=(20, 40))
    templates = [niah.TEMPLATE, niah.ANSWER_PREFIX, niah.NEEDLE, haystack.NOISE] * 20
    tok = tiny_bpe(templates + docs, 600, split_digits=True, add_bos=True)
    corpus = root / "corpus"
    corpus.mkdir()
    for i, text in enumerate(docs):
        (corpus / f"doc{i}.txt").write_text(text, encoding="utf-8")
    for name in FAMILIES:
        tiny_moe(name, len(tok)).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return {"root": root, "tokenizer": tok, "corpus": corpus}


def _pair(folder):
    """The saved MoE as it is (router logits on) and with ``output_router_logits=False``."""
    from transformers import AutoModelForCausalLM

    moe = AutoModelForCausalLM.from_pretrained(folder).eval()
    plain = AutoModelForCausalLM.from_pretrained(folder, output_router_logits=False).eval()
    assert moe.config.output_router_logits is True and plain.config.output_router_logits is False
    return moe, plain


def test_prediction_kwargs_only_for_models_with_routers():
    assert prediction_kwargs(tiny_moe("mixtral", 64)) == {"output_router_logits": False}
    assert prediction_kwargs(tiny_moe("qwen3_moe", 64, output_router_logits=False)) == {"output_router_logits": False}
    assert prediction_kwargs(tiny_llama(64)) == {}
    assert prediction_kwargs(object()) == {}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_scoring_equals_the_model_without_router_logits(name, env):
    from tokenweight.documents import model_forward_kwargs
    from tokenweight.scoring import short_context_nll, token_nll, truncated_context_nll

    moe, plain = _pair(env["root"] / name)
    V = len(env["tokenizer"])
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, V, (3, 40), generator=g)
    ids[:, 0] = BOS
    mask = torch.ones_like(ids)
    mask[1, 29:], mask[2, 17:] = 0, 0  # right-padded rows
    docs = [[12, 28], [9, 20], [40]]  # packed rows (the second is padded after 29 tokens)
    with torch.no_grad():  # the model as saved computes its router loss in a plain forward
        assert moe(input_ids=ids, attention_mask=mask).aux_loss is not None
        assert moe(input_ids=ids, **model_forward_kwargs(moe, docs, 40), **prediction_kwargs(moe)).aux_loss is None

    cases = {
        "token_nll padded": lambda m: token_nll(m, ids, mask),
        "token_nll packed": lambda m: token_nll(m, ids, doc_lengths=docs),
        "short padded": lambda m: short_context_nll(m, ids, 8, 5, mask, bos_token_id=BOS),
        "short packed": lambda m: short_context_nll(m, ids, 8, 5, bos_token_id=BOS, doc_lengths=docs),
        "truncated packed": lambda m: truncated_context_nll(m, ids, 6, 4, doc_lengths=docs),
    }
    for case, run in cases.items():
        got, want = run(moe), run(plain)
        assert torch.isfinite(got).all() and got.abs().sum() > 0, case
        assert torch.equal(got, want), case


@pytest.mark.parametrize("name", list(FAMILIES))
def test_likelihood_and_generation_equal_the_model_without_router_logits(name, env):
    """Prompts of different lengths: left padding, and a 2D mask covering the KV cache."""
    from tokenweight.evaluate.tasks import generate_predictions, score_likelihood
    from tokenweight.evaluate.tasks.sample import Sample

    moe, plain = _pair(env["root"] / name)
    tok = env["tokenizer"]
    prefix = " The special magic number is"
    samples = [
        Sample("niah_single_1", text, [gold], 64, 0.5, [gold, "7654321", "2345678"], {}, prefix)
        for text, gold in (
            ("One of the special magic numbers for tree is: 1234567. " * 3, "1234567"),
            ("The grass is green. The sky is blue.", "3141592"),
        )
    ]
    lik = [score_likelihood(m, tok, samples, batch_size=2) for m in (moe, plain)]
    assert lik[0] == lik[1] and len(lik[0]) == 2
    gen = [generate_predictions(m, tok, samples, max_new_tokens=5, batch_size=2) for m in (moe, plain)]
    assert gen[0] == gen[1] and len(gen[0]) == 2


@pytest.mark.filterwarnings("ignore:LongPPL skipped")
@pytest.mark.parametrize("name", list(FAMILIES))
def test_moe_through_the_command_line(name, env, capsys):
    """prepare -> score (the MoE as the frozen scorer) -> train -> eval (likelihood, generation,
    LongPPL, perplexity), eval of the MoE on packed rows with episodes, and the packed heat map."""
    from tokenweight.cli.main import main

    root, model = env["root"] / f"cli_{name}", str(env["root"] / name)
    data, packed, scores, run = (str(root / x) for x in ("data", "packed", "scores", "run"))
    corpus, quiet = str(env["corpus"]), ["--report-to", "none", "--warmup-steps", "0"]
    assert main(["prepare", corpus, "--tokenizer", model, "--n", str(N), "--val-fraction", "0.3", "--out", data]) == 0
    assert main(["prepare", corpus, "--tokenizer", model, "--n", str(N), "--val-fraction", "0.3", "--pack",
                 "--episodes-per-1k", "8", "--out", packed]) == 0  # fmt: skip
    assert main(["score", "--data", data, "--scorer", model, "--window", str(W), "--out", scores]) == 0
    assert main(["train", "--model", model, "--data", data, "--scheme", "dense:0.75", "--scorer", "frozen",
                 "--scores", scores, "--window", str(W), "--max-steps", "2", "--batch-size", "2",
                 "--out", run, *quiet]) == 0  # fmt: skip
    assert json.loads((root / "run" / "model" / "config.json").read_text())["output_router_logits"] is True
    evaluate = ["--window", str(W), "--lengths", str(N), "--tasks", "niah_single_1", "--num-samples", "1",
                "--depths", "0.5", "--max-new-tokens", "4", "--longppl-trunc-len", "12",
                "--longppl-sliding-window", "4"]  # fmt: skip
    argv = ["eval", model, f"{run}/model", "--names", "base,run", "--data", data, *evaluate]
    assert main([*argv, "--out", str(root / "eval")]) == 0
    assert main(["eval", model, "--data", packed, *evaluate, "--out", str(root / "eval_packed")]) == 0
    heat = root / "heat.html"
    assert main(["show", "--model", f"{run}/model", "--scorer", model, "--data", packed, "--out", str(heat)]) == 0
    capsys.readouterr()

    results = json.loads((root / "eval" / "results.json").read_text())
    assert [m["name"] for m in results["models"]] == ["base", "run"]
    for entry in results["models"]:
        (task,) = [t for t in entry["tasks"] if t["length"] == N and t["depth"] is None]  # over depths
        assert task["likelihood"]["num_candidates"] > 1 and task["generation"]["score"] is not None
        assert 1 < entry["perplexity"]["overall"]["ppl"] < 10 * len(env["tokenizer"])
    (entry,) = json.loads((root / "eval_packed" / "results.json").read_text())["models"]
    assert sum(b["episodes"] for b in entry["episodes"]["by_distance"]) > 0
    assert 1 < entry["perplexity"]["overall"]["ppl"] < 10 * len(env["tokenizer"])
    assert heat.stat().st_size > 0
