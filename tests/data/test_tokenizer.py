"""The default tokenizer (byte-level BPE, single digits, bos/eos/pad) and the batch encoder."""

import json

import numpy as np
import pytest

from tokenweight.data.tokenizer import (
    BOS,
    EOS,
    PAD,
    Encoder,
    check_vocab_size,
    encoder_digest,
    train_tokenizer,
)
from tokenweight.errors import UsageError
from tokenweight.identity import load_tokenizer, tokenizer_digest

SAMPLES = ["x = 1234567\n", "    def f(a, b):\n        return a + 42\n", "café 中文 ☃ emoji 🙂\n", "", "\n\n  \t"]


def test_trained_tokenizer_roundtrips_and_loads_with_autotokenizer(tiny_tokenizer, docs_factory):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer))
    assert len(tok) == 320
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == (PAD, BOS, EOS)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    for text in SAMPLES + docs_factory(3, seed=99):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text  # byte level: lossless on any text
        assert tok(text)["input_ids"] == [tok.bos_token_id] + ids  # BOS first, like Llama tokenizers
    # every digit is its own token, so a value is copyable digit by digit
    ids = tok("v = 9081726354", add_special_tokens=False)["input_ids"]
    pieces = [tok.decode([i]) for i in ids]
    assert pieces[-10:] == list("9081726354")


def test_training_is_deterministic(docs_factory):
    texts = docs_factory(10, seed=3)
    a = train_tokenizer(texts, vocab_size=300).backend_tokenizer.to_str()
    b = train_tokenizer(texts, vocab_size=300).backend_tokenizer.to_str()
    assert a == b
    assert json.loads(a)["model"]["type"] == "BPE"


@pytest.mark.parametrize("bad", [0, 258, 1 << 21, 3.5])
def test_vocab_size_range(bad):
    with pytest.raises(ValueError, match="vocab_size"):
        check_vocab_size(bad)


def test_load_tokenizer_errors(tmp_path, tiny_tokenizer):
    with pytest.raises(UsageError, match="does not exist"):
        load_tokenizer(str(tmp_path / "missing" / "tok"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no tokenizer files"):
        load_tokenizer(str(tmp_path / "empty"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
    with pytest.raises(UsageError, match="cannot load tokenizer"):
        load_tokenizer(str(tmp_path / "broken"))
    assert load_tokenizer(str(tiny_tokenizer), require_fast=True).backend_tokenizer is not None


def test_encoder_offsets_and_lookups_match_brute_force(tiny_tokenizer, docs_factory):
    tok = load_tokenizer(str(tiny_tokenizer))
    texts = docs_factory(3, seed=5) + SAMPLES
    for parallel in (True, False):
        for text, enc in zip(texts, Encoder(tok, parallel=parallel)(texts)):
            ref = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            assert enc.ids.tolist() == ref["input_ids"]
            offs = ref["offset_mapping"]
            assert [tuple(x) for x in zip(enc.starts.tolist(), enc.ends.tolist())] == [tuple(o) for o in offs]
            for c in range(0, len(text) + 1, 7):
                assert enc.token_at(c) == next((t for t, o in enumerate(offs) if o[1] > c), len(offs))
                assert enc.first_from([c])[0] == next((t for t, o in enumerate(offs) if o[0] >= c), len(offs))


def test_encoder_ignores_saved_truncation(tiny_tokenizer, docs_factory):
    tok = load_tokenizer(str(tiny_tokenizer))
    tok.backend_tokenizer.enable_truncation(8)
    text = docs_factory(1, seed=2)[0]
    enc = Encoder(tok)([text, text])[0]
    assert len(enc.ids) > 8
    assert tok.decode(enc.ids.tolist()) == text


def test_digests_change_with_the_tokenizer(tiny_tokenizer, docs_factory):
    a = load_tokenizer(str(tiny_tokenizer))
    b = train_tokenizer(docs_factory(10, seed=4), vocab_size=300)
    for digest in (tokenizer_digest, encoder_digest):
        assert digest(a) == digest(load_tokenizer(str(tiny_tokenizer)))
        assert digest(a) != digest(b)
    # the same vocabulary with another pre-tokenizer encodes other ids: the encoder digest sees it
    from tokenizers import pre_tokenizers

    c = load_tokenizer(str(tiny_tokenizer))
    c.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    assert tokenizer_digest(c) == tokenizer_digest(a) and encoder_digest(c) != encoder_digest(a)


def test_encoder_pickles(tiny_tokenizer):
    import pickle

    enc = Encoder(load_tokenizer(str(tiny_tokenizer)), parallel=False)
    copy = pickle.loads(pickle.dumps(enc))
    text = "alpha = 12\n"
    assert np.array_equal(enc([text])[0].ids, copy([text])[0].ids)
    assert copy.parallel is False
