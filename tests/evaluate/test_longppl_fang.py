"""compute_longppl, the drop-in for PKU-ML/LongPPL's: against a brute-force LongPPL written from the
definition (tests.evaluate.longppl_helpers), with one tokenizer and with two (byte-level BPE of 300
and 600 tokens, trained here); saved key spans reused without the evaluator. About 6 s."""

import inspect
import math

import numpy as np
import pytest
import torch

from tests.evaluate.longppl_helpers import (
    bpe_tokenizer,
    brute_key_positions,
    brute_key_targets,
    brute_longppl,
    corpus,
    tiny_llama,
)
from tokenweight.errors import UsageError
from tokenweight.evaluate import compute_longppl
from tokenweight.evaluate.longppl import encode, evaluator_key_mask, spans_to_targets
from tokenweight.evaluate.longppl_fang import find_key_spans

T, S, ALPHA, BETA = 16, 8, 2.0, -8.0  # Fang's alpha; beta lowered for random models (their NLLs are high)


@pytest.fixture(scope="module")
def setup():
    small, large = bpe_tokenizer(300), bpe_tokenizer(600)
    return {
        "small": small,
        "large": large,
        "evaluator": tiny_llama(len(small), seed=0),
        "model_small": tiny_llama(len(small), seed=1),
        "model_large": tiny_llama(len(large), seed=2),
        "text": corpus(45, seed=123),
    }


def test_signature_and_defaults_are_the_originals():
    params = inspect.signature(compute_longppl).parameters
    assert list(params) == [
        "text",
        "model",
        "evaluator_model",
        "tokenizer",
        "evaluator_tokenizer",
        "save_path",
        "trunc_len",
        "sliding_window",
        "alpha",
        "beta",
    ]
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    assert defaults == {
        "tokenizer": None,
        "evaluator_tokenizer": None,
        "save_path": None,
        "trunc_len": 4096,
        "sliding_window": 1024,
        "alpha": 2,
        "beta": -2,
    }


def brute(setup, model_key, tok_key):
    """(key positions of the evaluator, key entries of the evaluated model, LongPPL, PPL, n_token)."""
    text, ev_tok, tok = setup["text"], setup["small"], setup[tok_key]
    ev = ev_tok(text, return_offsets_mapping=True)
    keys, margins = brute_key_positions(setup["evaluator"], ev["input_ids"], T, S, ALPHA, BETA)
    assert min(margins) > 1e-3  # no decision is a tie that float rounding could flip
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    targets = brute_key_targets(ev["offset_mapping"], keys, enc["offset_mapping"])
    longppl, ppl = brute_longppl(setup[model_key], enc["input_ids"], targets)
    return keys, ev["offset_mapping"], targets, longppl, ppl, len(enc["input_ids"])


@pytest.mark.parametrize("model_key,tok_key", [("model_small", "small"), ("model_large", "large")])
def test_equals_brute_force(setup, model_key, tok_key):
    keys, ev_offsets, targets, longppl, ppl, n = brute(setup, model_key, tok_key)
    candidates = len(setup["small"](setup["text"])["input_ids"]) - T
    assert 0 < len(keys) < candidates / 2  # a real selection
    ev_ids = setup["small"](setup["text"])["input_ids"]
    key, _ = evaluator_key_mask(
        setup["evaluator"], torch.tensor([ev_ids]), trunc_len=T, sliding_window=S, alpha=ALPHA, beta=BETA
    )
    assert (key[0].nonzero().flatten() + 1).tolist() == keys  # the same key tokens, exactly
    spans = find_key_spans(setup["text"], setup["evaluator"], setup["small"], T, S, ALPHA, BETA)
    chars = {c for a, b in spans for c in range(a, b)}
    assert chars == {c for p in keys for c in range(*ev_offsets[p])}  # and the same characters
    _, offsets = encode(setup[tok_key], setup["text"], add_special_tokens=False)
    assert spans_to_targets(offsets, spans) == targets  # the same key tokens of the evaluated model
    out = compute_longppl(
        setup["text"], setup[model_key], setup["evaluator"], setup[tok_key], setup["small"], None, T, S, ALPHA, BETA
    )
    assert set(out) == {"longppl", "n_key_token", "ppl", "n_token"}
    assert out["n_key_token"] == len(targets) > 0
    assert isinstance(out["longppl"], np.float32) and isinstance(out["ppl"], np.float32)
    assert out["longppl"] == pytest.approx(longppl, rel=1e-5)
    assert out["ppl"] == pytest.approx(ppl, rel=1e-5)
    assert out["n_token"] == n


def test_two_tokenizers_map_through_characters(setup):
    """With the 600-token tokenizer the evaluated tokens are longer: fewer of them are key tokens
    than the evaluator's, and each lies inside the evaluator's key characters."""
    keys, _, targets, _, _, _ = brute(setup, "model_large", "large")
    assert 0 < len(targets) < len(keys)


def test_saved_spans_reload_without_evaluator(setup, tmp_path):
    text, path = setup["text"], tmp_path / "slice_0.txt"
    args = dict(trunc_len=T, sliding_window=S, alpha=ALPHA, beta=BETA)
    first = compute_longppl(
        text, setup["model_large"], setup["evaluator"], setup["large"], setup["small"], path, **args
    )
    again = compute_longppl(text, setup["model_large"], None, setup["large"], save_path=path)
    assert again == first  # bitwise: the same spans and the same pass of the evaluated model
    path.write_text(path.read_text().splitlines()[0])  # the original's file: its first line only
    assert compute_longppl(text, setup["model_large"], None, setup["large"], save_path=path) == first
    save = tmp_path / "other.txt"
    compute_longppl(text, setup["model_small"], setup["evaluator"], setup["small"], setup["small"], save, **args)
    with pytest.raises(UsageError, match="was saved for another text") as e:
        compute_longppl(text + " More.", setup["model_small"], None, setup["small"], save_path=save)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="save_path"):
        compute_longppl(text, setup["model_small"], None, setup["small"])


def test_no_key_tokens_gives_none_as_the_original(setup):
    out = compute_longppl(
        setup["text"], setup["model_small"], setup["evaluator"], setup["small"], setup["small"], trunc_len=T, alpha=1e9
    )
    assert out["longppl"] is None and out["n_key_token"] is None
    assert math.isfinite(out["ppl"]) and out["n_token"] > 0


def test_models_and_tokenizers_from_folders(setup, tmp_path):
    for name, model, tok in (("ev", "evaluator", "small"), ("m", "model_large", "large")):
        setup[model].save_pretrained(tmp_path / name)
        setup[tok].save_pretrained(tmp_path / name)
    args = dict(trunc_len=T, sliding_window=S, alpha=ALPHA, beta=BETA)
    want = compute_longppl(
        setup["text"], setup["model_large"], setup["evaluator"], setup["large"], setup["small"], **args
    )
    got = compute_longppl(setup["text"], str(tmp_path / "m"), str(tmp_path / "ev"), **args)
    assert got["n_key_token"] == want["n_key_token"] and got["n_token"] == want["n_token"]
    assert got["longppl"] == pytest.approx(want["longppl"], rel=1e-6)
