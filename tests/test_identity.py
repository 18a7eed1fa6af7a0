"""tokenweight.identity: one rule each for "same tokenizer", "same model", "hub id", and the loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokenweight.errors import UsageError
from tokenweight.identity import (
    check_model_tokenizer,
    check_same_tokenizer,
    has_tokenizer,
    is_hub_id,
    load_tokenizer,
    model_digest,
    resolve_local,
    resolve_source,
    special_token_ids,
    tokenizer_digest,
)

TEXTS = [f"def f{i}(x):\n    return x * {i * 37} + {i}\n# note {i}: value = {i * 91}\n" for i in range(60)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The default byte-level BPE (``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2), trained here, saved in HF format."""
    from tokenweight.data.tokenizer import train_tokenizer

    path = tmp_path_factory.mktemp("tok") / "trained"
    train_tokenizer(TEXTS, vocab_size=300).save_pretrained(str(path))
    return path


def _word_level(vocab: dict, **specials):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, **specials)


WORDS = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "a": 4, "b": 5, "c": 6}
SPECIALS = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>")


# ----------------------------------------------------------------------------- tokenizer digest


def test_same_vocabulary_saved_differently_has_the_same_digest(trained, tmp_path):
    a = load_tokenizer(trained)
    # saved again with other settings: truncation and padding in tokenizer.json, another max length,
    # no pad token (pad is not part of the identity): other file bytes, the same tokenizer
    b = load_tokenizer(trained)
    b.backend_tokenizer.enable_truncation(16)
    b.backend_tokenizer.enable_padding(length=16, pad_id=0, pad_token="<pad>")
    b.model_max_length = 77
    b.padding_side = "left"
    b.save_pretrained(tmp_path / "b")
    assert (tmp_path / "b" / "tokenizer.json").read_bytes() != (trained / "tokenizer.json").read_bytes()
    assert tokenizer_digest(load_tokenizer(tmp_path / "b")) == tokenizer_digest(a)
    c = _word_level(dict(reversed(list(WORDS.items()))), **SPECIALS)  # vocabulary given in another order
    c.save_pretrained(tmp_path / "c")
    d = _word_level(WORDS, pad_token="<pad>", **SPECIALS)
    assert tokenizer_digest(load_tokenizer(tmp_path / "c")) == tokenizer_digest(c) == tokenizer_digest(d)
    check_same_tokenizer(c, d, name="c", ref_name="d", fix="fix")
    assert len(tokenizer_digest(a)) == 16 and int(tokenizer_digest(a), 16) >= 0


def test_one_changed_special_token_or_vocab_entry_changes_the_digest():
    base = _word_level(WORDS, **SPECIALS)
    other_eos = _word_level(WORDS, bos_token="<s>", eos_token="<pad>", unk_token="<unk>")
    no_bos = _word_level(WORDS, eos_token="</s>", unk_token="<unk>")
    renamed = _word_level({**{k: v for k, v in WORDS.items() if k != "c"}, "d": 6}, **SPECIALS)
    swapped = _word_level({**WORDS, "a": 5, "b": 4}, **SPECIALS)
    digests = {tokenizer_digest(t) for t in (base, other_eos, no_bos, renamed, swapped)}
    assert len(digests) == 5
    assert special_token_ids(base) == {"bos": 1, "eos": 2, "unk": 3}
    with pytest.raises(
        UsageError, match=r"^x uses a different tokenizer than y \(7 vs 7 entries; e.g. 'c' is None vs 6\)"
    ):
        check_same_tokenizer(renamed, base, name="x", ref_name="y", fix="use y's")
    with pytest.raises(UsageError, match=r"'a' is 5 vs 4\): use y's$"):
        check_same_tokenizer(swapped, base, name="x", ref_name="y", fix="use y's")
    with pytest.raises(UsageError, match=r"^x has special tokens \{'bos': 1, 'eos': 0, 'unk': 3\} but y has"):
        check_same_tokenizer(other_eos, base, name="x", ref_name="y", fix="use y's")
    added = _word_level(WORDS, **SPECIALS)
    added.add_tokens(["<|extra|>"])  # added tokens are part of get_vocab(), hence of the identity
    assert tokenizer_digest(added) != tokenizer_digest(base)


# ----------------------------------------------------------------------------- tokenizer loader


def test_load_tokenizer(trained, tmp_path):
    tok = load_tokenizer(str(trained), require_fast=True)
    assert tok(TEXTS[0])["input_ids"][0] == tok.bos_token_id == 1
    assert tokenizer_digest(load_tokenizer(trained)) == tokenizer_digest(tok)  # str and Path alike
    with pytest.raises(UsageError, match=r"^tokenizer path '.*missing' does not exist: pass an existing folder"):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(UsageError, match="does not exist"):
        load_tokenizer(str(tmp_path / "a" / "b"))  # more than one slash: a path, never a hub id
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        load_tokenizer(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    assert not has_tokenizer(tmp_path / "empty") and has_tokenizer(trained)
    with pytest.raises(UsageError, match="holds no tokenizer files"):
        load_tokenizer(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{")
    with pytest.raises(UsageError, match="^cannot load tokenizer '.*broken' "):
        load_tokenizer(tmp_path / "broken")
    # a hub id that cannot be reached (tests run with HF_HUB_OFFLINE=1): a UsageError, not a traceback
    with pytest.raises(UsageError, match="^cannot load tokenizer 'tokenweight-tests/no-such-repo' "):
        load_tokenizer("tokenweight-tests/no-such-repo")


def test_a_model_is_checked_against_the_data_by_the_tokenizer_it_ships(trained, tmp_path):
    """Identity, never the size: a model saved with the data's tokenizer passes with more
    embeddings than tokens; one saved with another tokenizer of the same size is refused; one
    without a tokenizer is left to the embeddings check."""
    from tests.tiny_models import save_tiny_llama

    data = load_tokenizer(trained)
    shape = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    save_tiny_llama(tmp_path / "same", len(data) + 20, 0, tokenizer=trained, **shape)  # padded embeddings
    check_model_tokenizer(tmp_path / "same", data, ref_name="the data 'D'")
    save_tiny_llama(tmp_path / "bare", 8, 0, **shape)  # no tokenizer: not this check's business
    check_model_tokenizer(tmp_path / "bare", data, ref_name="the data 'D'")
    words = {**WORDS, **{f"x{i}": 7 + i for i in range(len(data) - len(WORDS))}}  # as many tokens, other ones
    other = _word_level(words, **SPECIALS)
    assert len(other) == len(data)
    save_tiny_llama(tmp_path / "other", len(data), 0, tokenizer=other, **shape)
    with pytest.raises(UsageError) as e:
        check_model_tokenizer(tmp_path / "other", data, ref_name="the data 'D'")
    msg = str(e.value)
    assert msg.startswith(f"model {str(tmp_path / 'other')!r} uses a different tokenizer than the data 'D' (")
    assert msg.endswith(
        f"): prepare the data with --tokenizer {tmp_path / 'other'}, or pass a model trained with the data's tokenizer"
    )
    assert "\n" not in msg
    with pytest.raises(UsageError, match="^model path .* does not exist"):
        check_model_tokenizer(tmp_path / "missing", data, ref_name="the data 'D'")


# ----------------------------------------------------------------------------- model digest


def _model(folder: Path) -> Path:
    from tests.tiny_models import save_tiny_llama

    shape = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    save_tiny_llama(folder, 32, 0, **shape, max_position_embeddings=32)
    return folder


def test_model_digest(tmp_path):
    from safetensors.torch import load_file, save_file

    a = _model(tmp_path / "a")
    d0 = model_digest(a)
    assert model_digest(str(a)) == d0 and len(d0) == 16
    # a copy at another path is the same model
    _model(tmp_path / "copy")
    assert model_digest(tmp_path / "copy") == d0
    # volatile config keys and trainer state do not count
    cfg = json.loads((a / "config.json").read_text())
    cfg["_name_or_path"], cfg["transformers_version"] = "/somewhere/else", "0.0.1"
    (a / "config.json").write_text(json.dumps(cfg, indent=1))
    (a / "optimizer.pt").write_bytes(b"state")
    (a / "training_args.bin").write_bytes(b"args")
    assert model_digest(a) == d0
    # one weight changes: another model
    w = a / "model.safetensors"
    tensors = load_file(w)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1e-3
    save_file(tensors, w, metadata={"format": "pt"})
    d1 = model_digest(a)
    assert d1 != d0
    # any other config key does count
    cfg["rms_norm_eps"] = 1e-3
    (a / "config.json").write_text(json.dumps(cfg))
    assert model_digest(a) not in (d0, d1)
    with pytest.raises(UsageError, match="does not exist"):
        model_digest(tmp_path / "missing")
    (tmp_path / "noweights").mkdir()
    with pytest.raises(UsageError, match="has no config.json"):
        model_digest(tmp_path / "noweights")
    (tmp_path / "noweights" / "config.json").write_text("{}")
    with pytest.raises(UsageError, match="holds no weight files"):
        model_digest(tmp_path / "noweights")


# ----------------------------------------------------------------------------- hub ids


@pytest.mark.parametrize("name", ["org/name", "name", "gpt2", "Qwen/Qwen2.5-0.5B", "a_b.c-d/e.f_g-h"])
def test_hub_ids(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing of that name exists here
    assert is_hub_id(name)
    assert resolve_source(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "/abs/path",
        "/org",
        "./org/name",
        "../name",
        "~/name",
        "~name",
        "a/b/c",
        "org/",
        "/org/name",
        "org//name",
        ".hidden",
        "a..b",
        "org/../name",
        "org/-name",
        "my--model",
        "org\\name",
        "with space",
        "",
    ],
)
def test_paths_are_not_hub_ids(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not is_hub_id(name)


def test_existing_paths_and_path_objects_are_not_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    (tmp_path / "plain").write_text("x")
    assert not is_hub_id("org/name") and not is_hub_id("org") and not is_hub_id("plain")
    assert is_hub_id("org/other") and not is_hub_id(Path("org/other")) and not is_hub_id(None)
    # an existing folder named like a hub id resolves to itself; a missing Path is a missing path
    assert resolve_source("org/name") == "org/name" and resolve_local("org/name") == Path("org/name")
    assert resolve_local(tmp_path / "org") == tmp_path / "org"
    with pytest.raises(UsageError, match="^model path 'org/other' does not exist"):
        resolve_source(Path("org/other"))
    with pytest.raises(UsageError, match="^scorer path 'plain' is a file, not a folder"):
        resolve_local("plain", "scorer")


def test_resolve_local_uses_the_cached_snapshot_only(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        if repo_id == "org/cached":
            return str(tmp_path / "snapshot")
        raise huggingface_hub.errors.LocalEntryNotFoundError("not in the cache")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert resolve_local("org/cached") == tmp_path / "snapshot"
    with pytest.raises(UsageError, match="^model 'org/absent' is a hub id that is not in the local Hugging Face cache"):
        resolve_local("org/absent")
    assert calls == [("org/cached", {"local_files_only": True}), ("org/absent", {"local_files_only": True})]
