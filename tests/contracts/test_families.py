"""Every common model family, exactly (transformers 5.23).

- The chunked paths are each family's own numbers: the trainer's forward (chunked NLL, logit
  post-processing inside) equals ``model(input_ids, labels=...).loss``, the per-token
  ``F.cross_entropy`` of its logits and its gradients; the scorer's ``token_nll`` equals the
  latter (float32, ~1e-6). Every family of ``tokenweight.logits.LOGIT_POSTPROCESSING`` is here,
  with its post-processing set where it changes the numbers.
- The matrix: tiny random models of ten families saved WITH a tokenizer (a tiny byte-level BPE,
  trained with ``tokenizers``) go through the stages: prepare with ``tokenizer=MODEL_DIR``, score,
  train with frozen and with self scoring (context 16 -> 64), eval.
- Context extension for every RoPE type of ``config.rope_parameters``: the extended config holds
  the right θ/factor, and the model runs at n and equals a model built from its saved config.
- A model that cannot be served is one line naming it and the alternative, before any work.

Cost (2 CPU cores, the whole file ~45 s): exactness ~8 s for 23 families (mostly importing their
modeling modules), the matrix ~25 s (2-4 s per family: prepare, score, two 2-step training runs,
eval; not marked slow), RoPE ~3 s, bad input ~2 s.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tokenweight.context_extension import extend_context, pretrained_context, theta_for_extension
from tokenweight.errors import UsageError
from tokenweight.logits import LOGIT_POSTPROCESSING, logit_postprocessing, output_layer_problem
from tokenweight.loss import weighted_lm_loss, weighted_nll_loss
from tokenweight.scoring import token_nll
from tokenweight.token_weighting import check_trainable, nll_output_layer

W, N = 16, 64  # the matrix's short (pretraining) and long context
PAD, BOS, EOS = 0, 1, 2  # tokenweight.data.tokenizer's special ids
SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
LLAMA3 = {  # Llama-3.1's rope_type, extended 4x from W: the config already holds N
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 4.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": W,
}
LONGROPE = {  # Phi-3's: short factors up to W tokens, long factors beyond
    "rope_type": "longrope",
    "short_factor": [1.0, 1.1, 1.2, 1.5],
    "long_factor": [1.0, 2.0, 4.0, 8.0],
    "original_max_position_embeddings": W,
}
GEMMA3_ROPE = {
    "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
    "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
}

#: the matrix: name -> (model_type, config overrides); max_position_embeddings W unless given
MATRIX = {
    "llama3": ("llama", dict(max_position_embeddings=N, rope_parameters=LLAMA3)),
    "qwen2": ("qwen2", dict(rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    "qwen3": ("qwen3", {}),
    "mistral": ("mistral", {}),
    "gemma2": ("gemma2", dict(sliding_window=8, query_pre_attn_scalar=8)),  # eager attention (auto)
    "gemma3": ("gemma3_text", dict(sliding_window=8, layer_types=["sliding_attention", "full_attention"])),
    "phi3": ("phi3", dict(max_position_embeddings=N, original_max_position_embeddings=W, rope_parameters=LONGROPE)),
    "olmo2": ("olmo2", {}),
    "gpt_neox": ("gpt_neox", dict(rotary_pct=0.5)),  # partial rotary: half of each head
    "granite": ("granite", dict(logits_scaling=4.0)),
}
#: the other families with logit post-processing (values set where they change the numbers)
POSTPROCESSING = {
    "gemma4_text": ("gemma4_text", dict(final_logit_softcapping=2.0, vocab_size_per_layer_input=64)),
    "vaultgemma": ("vaultgemma", dict(final_logit_softcapping=2.0)),
    "nanochat": ("nanochat", dict(final_logit_softcapping=2.0)),
    "beam": ("beam", dict(final_logit_softcapping=2.0)),
    "granite_swa": ("granite_swa", dict(logits_scaling=4.0)),
    "granitemoe": ("granitemoe", dict(logits_scaling=4.0)),
    "granitemoe_swa": ("granitemoe_swa", dict(logits_scaling=4.0)),
    "granitemoeshared": ("granitemoeshared", dict(logits_scaling=4.0)),
    "hyperclovax": ("hyperclovax", dict(logits_scaling=0.25)),
    "cohere": ("cohere", {}),  # logit_scale 0.0625 by default
    "cohere2": ("cohere2", dict(logit_scale=0.5)),
    "cohere2_moe": ("cohere2_moe", dict(logit_scale=0.5)),
    "falcon_h1": (
        "falcon_h1",
        dict(lm_head_multiplier=0.5, mamba_d_ssm=32, mamba_n_heads=4, mamba_d_head=8, mamba_d_state=8),
    ),
}
#: soft-caps that bite on tiny random logits (the real ones, 30, barely change them)
EXACT_OVERRIDES = {"gemma2": dict(final_logit_softcapping=2.0), "gemma3": dict(final_logit_softcapping=2.0)}
EXPECT_POST = {
    "gemma2": "2·tanh(z/2)",
    "gemma3": "2·tanh(z/2)",
    "gemma4_text": "2·tanh(z/2)",
    "vaultgemma": "2·tanh(z/2)",
    "nanochat": "2·tanh(z/2)",
    "beam": "2·tanh(z/2)",
    "granite": "z/4",
    "granite_swa": "z/4",
    "granitemoe": "z/4",
    "granitemoe_swa": "z/4",
    "granitemoeshared": "z/4",
    "hyperclovax": "z·0.25",
    "cohere": "z·0.0625",
    "cohere2": "z·0.5",
    "cohere2_moe": "z·0.5",
    "falcon_h1": "z·0.5",
}
FAMILIES = {**MATRIX, **POSTPROCESSING}


def tiny_config(name: str, vocab: int = 64, **overrides):
    from transformers import AutoConfig

    model_type, kw = FAMILIES[name]
    head = {} if model_type in ("gpt_neox", "phi3") else {"head_dim": 8}
    kw = copy.deepcopy({"max_position_embeddings": W, **SMALL, **head, **kw, **overrides})  # configs own their dicts
    return AutoConfig.for_model(
        model_type, vocab_size=vocab, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, **kw
    )


def tiny_model(name: str, vocab: int = 64, seed: int = 0, **overrides):
    from transformers import AutoModelForCausalLM

    from tokenweight.models import causal_lm_class, choose_attn_implementation

    config = tiny_config(name, vocab, **overrides)
    torch.manual_seed(seed)
    attn = choose_attn_implementation(causal_lm_class(config), "auto", "cpu", "float32")
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn).float()


def rel_err(a, ref) -> float:
    a, ref = a.detach().double(), ref.detach().double()
    return ((a - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def test_every_postprocessing_family_is_tested():
    """Each rule of LOGIT_POSTPROCESSING is checked against its family's own forward below."""
    tested = {FAMILIES[name][0] for name in EXPECT_POST}
    assert set(LOGIT_POSTPROCESSING) == tested


# ------------------------------------------------------------------ exactness, every family
@pytest.mark.parametrize("name", list(FAMILIES))
def test_chunked_loss_and_scorer_equal_the_family_own(name):
    model = tiny_model(name, **EXACT_OVERRIDES.get(name, {})).eval()
    head = model.get_output_embeddings()
    with torch.no_grad():
        head.weight.mul_(8)  # logits of several units, where soft-caps and scales matter
    post = logit_postprocessing(model.config)
    assert post.describe() == EXPECT_POST.get(name, "z")
    assert output_layer_problem(model) is None
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 64, (2, 12), generator=g)
    labels = ids.clone()
    labels[0, 3], labels[1, 7] = -100, -100
    targets = labels[:, 1:]

    seen = []  # what the model feeds its output layer (its own pre-head operations included)
    hook = head.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    out = model(input_ids=ids, labels=labels)
    hook.remove()
    out.loss.backward()
    ref_grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    ref_nll = F.cross_entropy(out.logits[:, :-1].detach().float().transpose(1, 2), targets, reduction="none")

    with nll_output_layer(head, targets, chunk_size=5, model=model):
        nll = model(input_ids=ids).logits  # the trainer's forward: [2, 11] chunked NLL
    loss = weighted_nll_loss(nll, targets != -100)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    assert abs(loss.item() - out.loss.item()) <= 1e-5 * out.loss.item()
    torch.testing.assert_close(nll.detach(), ref_nll, rtol=0, atol=1e-5)
    assert grads.keys() == ref_grads.keys()
    assert max(rel_err(grads[k], ref_grads[k]) for k in grads) <= 1e-4
    assert logit_postprocessing(model.config) == post  # every switched setting restored

    one_call, _ = weighted_lm_loss(seen[0][:, :-1], head, targets, postprocessing=post)
    assert abs(one_call.item() - out.loss.item()) <= 1e-5 * out.loss.item()
    if post:  # the post-processing matters in this test: without it the NLL is another one
        plain = F.cross_entropy(head(seen[0][:, :-1]).transpose(1, 2), targets, reduction="none")
        assert (plain - ref_nll).abs().max() > 1e-2
    # the scorer: token_nll is the per-token cross-entropy of the model's own logits
    with torch.no_grad():
        own = F.cross_entropy(model(input_ids=ids).logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
    torch.testing.assert_close(token_nll(model, ids), own, rtol=0, atol=1e-5)


# ------------------------------------------------------------------ bad input
def _llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=64, max_position_embeddings=W, head_dim=8, **SMALL)


def _scaled_llama():
    """A Llama whose forward halves its logits: a post-processing no rule covers."""
    from transformers import LlamaForCausalLM

    class ScaledLlama(LlamaForCausalLM):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 0.5
            return out

    torch.manual_seed(0)
    return ScaledLlama(_llama_config()).eval()


def test_unknown_postprocessing_is_refused_for_training_and_scored_by_the_model_own_forward():
    model = _scaled_llama()
    problem = output_layer_problem(model)
    assert problem == "it changes its logits after the output layer in a way tokenweight has no rule for"
    with pytest.raises(UsageError, match="cannot be trained.*no rule for.*supported family"):
        check_trainable(model, "scaled")
    ids = torch.randint(3, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        own = F.cross_entropy(model(input_ids=ids).logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
    torch.testing.assert_close(token_nll(model, ids), own, rtol=0, atol=1e-6)  # full logits: still exact


def test_non_linear_output_layer_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    from transformers import LlamaForCausalLM

    from tests.scorecache.test_scorecache import make_prepared
    from tokenweight.cli.main import main

    model = LlamaForCausalLM(_llama_config())
    model.lm_head = nn.Sequential(nn.Linear(32, 64, bias=False))
    with pytest.raises(UsageError, match=r"'odd' \(model type 'llama'\).*output layer is a Sequential, not a linear"):
        check_trainable(model, "odd")

    data = make_prepared(tmp_path / "data", n=32, count=4)
    LlamaForCausalLM(_llama_config()).save_pretrained(tmp_path / "m")
    monkeypatch.setattr(LlamaForCausalLM, "get_output_embeddings", lambda self: nn.Identity())
    out = tmp_path / "run"
    capsys.readouterr()
    argv = ["train", "--model", str(tmp_path / "m"), "--data", str(data), "--out", str(out), "--max-steps", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tokenweight: error: model ")
    assert "output layer is an Identity, not a linear map" in err[0] and "supported family" in err[0]
    assert not (out / "model").exists() and not list(out.glob("checkpoint-*")) and not (out / "log.jsonl").exists()


def test_switched_settings_are_restored_on_error():
    from tokenweight.logits import replaced_output_layer

    for name, attribute in (("gemma2", "final_logit_softcapping"), ("cohere", "logit_scale")):
        model = tiny_model(name)
        owner = model.config if name == "gemma2" else model
        before = getattr(owner, attribute)
        with pytest.raises(RuntimeError, match="boom"):
            with replaced_output_layer(model, lambda h: h, logit_postprocessing(model.config)):
                assert getattr(owner, attribute) in (None, 1.0)
                raise RuntimeError("boom")
        assert getattr(owner, attribute) == before and "forward" not in model.get_output_embeddings().__dict__


# ------------------------------------------------------------------ RoPE: context extension
def _roundtrip(model, tmp_path, n):
    """The extended model runs at n, and exactly as a model built from its saved config."""
    from transformers import AutoModelForCausalLM

    model.eval()
    x = torch.randint(3, 64, (1, n), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(x).logits
    assert out.shape == (1, n, 64) and torch.isfinite(out).all()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation=model.config._attn_implementation)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x).logits, out, rtol=0, atol=0)
    return json.loads((tmp_path / "config.json").read_text())


def test_pretrained_context_per_rope_type():
    assert pretrained_context(tiny_config("llama3")) == W  # original_max_position_embeddings, not 64
    assert pretrained_context(tiny_config("phi3")) == W
    assert pretrained_context(tiny_config("qwen2")) == W  # max_position_embeddings
    assert pretrained_context(tiny_model("gemma3")) == W


@pytest.mark.parametrize("name", ["qwen2", "mistral", "olmo2", "granite", "gemma2"])
def test_plain_rope_theta_rule(name, tmp_path):
    model = tiny_model(name)
    theta = model.config.rope_parameters["rope_theta"]
    extend_context(model, N)
    cfg = _roundtrip(model, tmp_path, N)
    assert cfg["max_position_embeddings"] == N
    assert cfg["rope_parameters"]["rope_theta"] == pytest.approx(theta * 30.6, rel=1e-12)  # 4x: the paper's


def test_partial_rotary_keeps_its_factor(tmp_path):
    model = tiny_model("gpt_neox")
    extend_context(model, N)
    cfg = _roundtrip(model, tmp_path / "a", N)
    assert cfg["rope_parameters"] == {"rope_type": "default", "rope_theta": 306000.0, "partial_rotary_factor": 0.5}
    model = tiny_model("gpt_neox")
    extend_context(model, N, rope_scaling="linear")
    cfg = _roundtrip(model, tmp_path / "b", N)
    assert cfg["rope_parameters"]["factor"] == 4.0 and cfg["rope_parameters"]["partial_rotary_factor"] == 0.5


def test_gemma3_per_layer_type_rope_extends_the_global_layers_only(tmp_path):
    model = tiny_model("gemma3")
    extend_context(model, N)
    rp = _roundtrip(model, tmp_path, N)["rope_parameters"]
    assert rp["sliding_attention"] == {"rope_type": "default", "rope_theta": 10000.0}
    assert rp["full_attention"]["rope_theta"] == pytest.approx(1e6 * 30.6, rel=1e-12)


def test_llama3_scaling_serves_its_capacity_and_gets_theta_beyond(tmp_path):
    model = tiny_model("llama3")
    before = json.dumps(model.config.to_dict(), sort_keys=True, default=str)
    assert extend_context(model, N) is model
    assert json.dumps(model.config.to_dict(), sort_keys=True, default=str) == before  # untouched up to 64
    extend_context(model, 2 * N)
    rp = _roundtrip(model, tmp_path / "a", 2 * N)["rope_parameters"]
    assert rp == {**LLAMA3, "rope_theta": pytest.approx(theta_for_extension(500000.0, 2.0), rel=1e-12)}
    # an explicit scaling type is relative to the pretraining context (16), not to 64
    model = tiny_model("llama3")
    extend_context(model, N, rope_scaling="yarn")
    rp = _roundtrip(model, tmp_path / "b", N)["rope_parameters"]
    assert rp["rope_type"] == "yarn" and rp["factor"] == 4.0 and rp["original_max_position_embeddings"] == W
    assert rp["rope_theta"] == 500000.0 and "low_freq_factor" not in rp


def test_longrope_short_and_long_factors(tmp_path):
    model = tiny_model("phi3")
    assert extend_context(model, N) is model and model.config.rope_parameters.get("factor") is None
    # windows of at most W tokens use the short factors, longer sequences the long ones
    rotary = model.model.rotary_emb
    dim = 8
    base = 1.0 / (10000.0 ** (torch.arange(0, dim, 2).float() / dim))
    rotary(torch.zeros(1), torch.arange(W)[None])
    torch.testing.assert_close(rotary.inv_freq, base / torch.tensor(LONGROPE["short_factor"]))
    rotary(torch.zeros(1), torch.arange(N)[None])
    torch.testing.assert_close(rotary.inv_freq, base / torch.tensor(LONGROPE["long_factor"]))
    # beyond its capacity: θ on top, the implicit factor (64/16) pinned, the original kept
    extend_context(model, 2 * N)
    cfg = _roundtrip(model, tmp_path, 2 * N)
    rp = cfg["rope_parameters"]
    assert rp["factor"] == 4.0 and rp["original_max_position_embeddings"] == W
    assert cfg["original_max_position_embeddings"] == W and cfg["max_position_embeddings"] == 2 * N
    assert rp["short_factor"] == LONGROPE["short_factor"] and rp["long_factor"] == LONGROPE["long_factor"]
    assert rp["rope_theta"] == pytest.approx(theta_for_extension(10000.0, 2.0), rel=1e-12)
    with pytest.raises(ValueError, match="longrope"):  # Phi-3 takes default and longrope only
        extend_context(tiny_model("phi3"), N, rope_scaling="linear")


def test_base_context_of_a_config_that_already_holds_the_long_context(tmp_path):
    model = tiny_model("qwen2", max_position_embeddings=N)  # plain RoPE, but trained at 16
    assert extend_context(model, N) is model and model.config.rope_parameters["rope_theta"] == 1e6
    extend_context(model, N, base_context=W)
    assert _roundtrip(model, tmp_path, N)["rope_parameters"]["rope_theta"] == pytest.approx(30.6e6, rel=1e-12)
    with pytest.raises(ValueError, match="base_context"):
        extend_context(model, N, base_context=1)


def test_train_config_base_context():
    from tokenweight.stages.train import TrainConfig

    with pytest.raises(ValueError, match="base_context"):
        TrainConfig(model="m", data="d", out="o", base_context=1).validate()
    with pytest.raises(ValueError, match="base_context"):
        TrainConfig(init="tiny", data="d", out="o", base_context=16).validate()
    TrainConfig(model="m", data="d", out="o", base_context=16).validate()


# ------------------------------------------------------------------ the matrix, through the stages
@pytest.fixture(scope="module")
def matrix_env(tmp_path_factory):
    from tests.data.conftest import make_docs
    from tokenweight.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("families")
    corpus = root / "corpus"
    corpus.mkdir()
    for i, text in enumerate(make_docs(8, seed=3, lines=(60, 100))):
        (corpus / f"doc{i}.txt").write_text(text, encoding="utf-8")
    return {"root": root, "corpus": corpus, "tokenizer": train_tokenizer(make_docs(30, seed=7), vocab_size=320)}


@pytest.mark.filterwarnings("ignore:LongPPL skipped")  # 64-token texts: nothing beyond its truncation
@pytest.mark.parametrize("name", list(MATRIX))
def test_family_through_the_stages(name, matrix_env):
    from datasets import load_from_disk

    from tokenweight.models import load_model
    from tokenweight.scorecache import ScoreCache
    from tokenweight.scoring import short_context_nll
    from tokenweight.stages import EvalConfig, PrepareConfig, ScoreConfig, TrainConfig
    from tokenweight.stages.evaluate import evaluate
    from tokenweight.stages.prepare import prepare
    from tokenweight.stages.score import score
    from tokenweight.stages.train import train

    root, tok = matrix_env["root"] / name, matrix_env["tokenizer"]
    model_dir = root / "model"
    tiny_model(name, vocab=len(tok) + 16).save_pretrained(model_dir)  # real vocabularies have spare rows
    tok.save_pretrained(model_dir)
    data, scores = root / "data", root / "scores"
    prepare(
        PrepareConfig(
            inputs=[str(matrix_env["corpus"])], tokenizer=str(model_dir), n=N, val_fraction=0.25, out=str(data)
        )
    )
    score(ScoreConfig(data=str(data), scorer=str(model_dir), window=W, out=str(scores), max_sequences=4))

    model = load_model(model_dir)  # the cache holds the family's own short-context NLL
    ids = torch.tensor(load_from_disk(str(data / "train"))["input_ids"][:4])
    cached = ScoreCache.open(scores).read(range(4))
    torch.testing.assert_close(cached, short_context_nll(model, ids, W, 12, bos_token_id=BOS), rtol=0, atol=1e-5)

    common = dict(model=str(model_dir), data=str(data), scheme="dense:0.75", max_train_sequences=4, max_steps=2)
    common.update(batch_size=2, warmup_steps=0, save_steps=100, report_to=["none"])
    runs = {
        "frozen": train(TrainConfig(out=str(root / "frozen"), scorer="frozen", scores=str(scores), **common)),
        "self": train(TrainConfig(out=str(root / "self"), scorer="self", **common)),
    }
    for run in runs.values():
        assert run.summary["steps"] == 2 and 0 < run.summary["final_plain_loss"] < 2 * torch.log(torch.tensor(336.0))
        run_config = json.loads((run.out / "run_config.json").read_text())
        assert run_config["window"] == W and run_config["base_context"] == W
        cfg = json.loads((run.model / "config.json").read_text())
        assert cfg["max_position_embeddings"] == N and cfg["model_type"] == FAMILIES[name][0]
        assert cfg["rope_parameters"] == _expected_rope(name, model.config.rope_parameters)
    result = evaluate(
        EvalConfig(
            models=[str(model_dir), str(runs["self"].model)],
            names=["base", "self"],
            data=str(data),
            window=W,
            tasks=[],
            max_sequences=4,
            generation=False,
            out=str(root / "eval"),
        )
    )
    for entry in result.results["models"]:
        assert 1 < entry["perplexity"]["overall"]["ppl"] < 10 * len(tok)


def _expected_rope(name: str, before: dict) -> dict:
    """The matrix's extension 16 -> 64: θ × 30.6 for plain RoPE; untouched where the config
    already serves 64 (Llama-3.1's llama3 scaling, Phi-3's longrope); Gemma-3's global layers only."""
    before = json.loads(json.dumps(before))
    if name in ("llama3", "phi3"):
        return before
    if name == "gemma3":
        before["full_attention"]["rope_theta"] = pytest.approx(1e6 * 30.6, rel=1e-12)
        return before
    return {**before, "rope_theta": pytest.approx(before["rope_theta"] * 30.6, rel=1e-12)}


@pytest.mark.filterwarnings("ignore:LongPPL skipped")
def test_base_context_flag_through_the_cli(matrix_env, capsys):
    """``--base-context 16`` on a plain-RoPE config that already says 64: the default window is 16
    and θ is raised as for 16 -> 64 (without it the model would serve 64 as it is: no window)."""
    from tokenweight.cli.main import main
    from tokenweight.stages import PrepareConfig
    from tokenweight.stages.prepare import prepare

    root, tok = matrix_env["root"] / "base_context", matrix_env["tokenizer"]
    model_dir = root / "model"
    tiny_model("qwen2", vocab=len(tok) + 16, max_position_embeddings=N).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    prepare(PrepareConfig(inputs=[str(matrix_env["corpus"])], tokenizer=str(model_dir), n=N, out=str(root / "data")))
    argv = ["train", "--model", str(model_dir), "--data", str(root / "data"), "--scheme", "dense:0.75"]
    argv += ["--scorer", "self", "--max-train-sequences", "2", "--max-steps", "1", "--report-to", "none"]
    assert main([*argv, "--out", str(root / "none")]) == 2
    assert "--window is needed" in capsys.readouterr().err
    assert main([*argv, "--out", str(root / "run"), "--base-context", str(W)]) == 0
    run_config = json.loads((root / "run" / "run_config.json").read_text())
    assert run_config["window"] == W and run_config["base_context"] == W and run_config["stride"] == 12
    assert run_config["rope_parameters"]["rope_theta"] == pytest.approx(1e6 * 30.6, rel=1e-12)
