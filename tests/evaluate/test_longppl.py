"""LongPPL's parts (tokenweight.evaluate.longppl, scoring.truncated_*): key-token rule, Fang et al.'s
windows, character spans and the key-token file, each against a hand computation, a transcription
of the original loop, or a brute-force per-token reference. About 3 s."""

import pytest
import torch

from tests.evaluate.longppl_helpers import bpe_tokenizer, corpus, nll_of_last, tiny_llama
from tokenweight.errors import UsageError
from tokenweight.evaluate.longppl import (
    decode_offsets,
    encode,
    key_token_mask,
    load_key_spans,
    merge_spans,
    save_key_spans,
    spans_to_targets,
)
from tokenweight.scoring import token_nll, truncated_context_nll
from tokenweight.windows import truncated_windows


def test_key_token_selection_by_hand():
    # entry j scores position j+1; trunc_len 3 -> entries 0, 1 (positions 1, 2) are never key tokens
    long = torch.tensor([[0.1, 0.1, 0.5, 1.9, 2.1, 0.5, 0.0, 1.0]])
    short = torch.tensor([[9.0, 9.0, 2.6, 4.0, 9.0, 2.5, 2.5, 3.0]])
    # LSD = short - long: [8.9, 8.9, 2.1, 2.1, 6.9, 2.0, 2.5, 2.0]; LCL = -long
    # j=2: key; j=3: LCL -1.9 > -2 -> key; j=4: LCL -2.1 -> not; j=5: LSD 2.0 not > 2; j=6: key; j=7: not
    key = key_token_mask(long, short, trunc_len=3)
    assert key.tolist() == [[False, False, True, True, False, False, True, False]]
    key = key_token_mask(long, short, trunc_len=3, alpha=1.0, beta=-3.0)
    assert key.tolist() == [[False, False, True, True, True, True, True, True]]
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    key = key_token_mask(long, short, trunc_len=3, mask=mask)
    assert key.tolist() == [[False, False, True, True, False, False, False, False]]
    key = key_token_mask(long, short, trunc_len=1, beta=-3.0)  # trunc_len 1 excludes nothing
    assert key.tolist() == [[True, True, True, True, True, False, True, False]]
    with pytest.raises(ValueError, match="equal shape"):
        key_token_mask(torch.zeros(1, 3), torch.zeros(1, 4), trunc_len=2)
    with pytest.raises(ValueError, match="trunc_len"):
        key_token_mask(torch.zeros(1, 3), torch.zeros(1, 3), trunc_len=0)


def original_windows(max_len, trunc_len, sliding_window):
    """PKU-ML/LongPPL find_key_token's loop (and finetune.py's loss_weight), transcribed:
    (start, first scored, end) of every short window."""
    out = []
    for start_token in range(0, max_len - trunc_len, sliding_window):
        if start_token + trunc_len + sliding_window > max_len:
            sliding_window = max_len - start_token - trunc_len
        out.append((start_token, start_token + trunc_len, start_token + trunc_len + sliding_window))
    return out


@pytest.mark.parametrize("n", [1, 5, 16, 17, 24, 25, 31, 32, 33, 40, 41, 100])
@pytest.mark.parametrize("trunc_len,sliding_window", [(16, 8), (5, 3), (1, 1), (7, 20)])
def test_truncated_windows_are_the_original_loop(n, trunc_len, sliding_window):
    assert truncated_windows(n, trunc_len, sliding_window) == original_windows(n, trunc_len, sliding_window)


def test_truncated_windows_check_arguments():
    with pytest.raises(ValueError, match="trunc_len"):
        truncated_windows(10, 0, 4)
    with pytest.raises(ValueError, match="sliding_window"):
        truncated_windows(10, 4, 0)


@pytest.fixture(scope="module")
def model():
    return tiny_llama(97, seed=0)


@pytest.mark.parametrize("with_long", [True, False])
def test_truncated_context_nll_equals_per_token_windows(model, with_long):
    """Each token's own short context, one forward pass per token; padding; a last window of one
    token (length 41 = 16 + 3·8 + 1); tokens before trunc_len get their full-context NLL."""
    g = torch.Generator().manual_seed(1)
    lengths = [41, 30]
    ids = torch.randint(3, 97, (2, 41), generator=g)
    mask = torch.zeros(2, 41, dtype=torch.long)
    for r, n in enumerate(lengths):
        mask[r, :n] = 1
    long = token_nll(model, ids, mask) if with_long else None
    got = truncated_context_nll(model, ids, 16, 8, attention_mask=mask, long_nll=long, batch_size=3)
    for r, n in enumerate(lengths):
        row = ids[r, :n].tolist()
        for p in range(1, n):
            start = 0 if p < 16 else ((p - 16) // 8) * 8
            assert got[r, p - 1].item() == pytest.approx(nll_of_last(model, row[start : p + 1]), abs=2e-5), (r, p)
        assert (got[r, n - 1 :] == 0).all()


def test_spans_merge_and_map_back_by_hand():
    # key tokens' offsets in token order: (4, 7) and (7, 9) touch -> one span; (12, 13) apart
    assert merge_spans([(4, 7), (7, 9), (12, 13)]) == [(4, 9), (12, 13)]
    assert merge_spans([]) == []
    # another tokenization of the same text: tokens inside a span are key (entry = token index - 1)
    offsets = [(0, 4), (4, 6), (6, 9), (9, 12), (12, 13), (13, 15)]
    assert spans_to_targets(offsets, [(4, 9), (12, 13)]) == [0, 1, 3]
    # a token straddling a span's end is not key; one at character 0 has no NLL entry
    assert spans_to_targets([(0, 2), (2, 5), (5, 8)], [(0, 4)]) == []
    assert spans_to_targets([(0, 2), (2, 5), (5, 8)], [(0, 5)]) == [0]  # token 1 only


def test_decode_offsets_is_the_fast_tokenizers_offsets_on_plain_text():
    tok = bpe_tokenizer(300)
    text = corpus(40, seed=5)
    ids, offsets = encode(tok, text, add_special_tokens=True)
    assert ids[0] == tok.bos_token_id and offsets[0] == (0, 0)
    assert decode_offsets(tok, ids) == offsets  # BOS takes no characters

    class NoOffsets:  # a tokenizer without a fast backend: offsets come from decoding
        is_fast = False

        def __call__(self, text, add_special_tokens=True):
            return tok(text, add_special_tokens=add_special_tokens)

        def decode(self, ids, skip_special_tokens=False):
            return tok.decode(ids, skip_special_tokens=skip_special_tokens)

    assert encode(NoOffsets(), text, add_special_tokens=False) == encode(tok, text, add_special_tokens=False)


def test_key_span_file_round_trip_and_refusals(tmp_path):
    text = "one two three four five six"
    path = tmp_path / "keys.txt"
    save_key_spans(path, [(4, 7), (14, 18)], text)
    first, second = path.read_text().splitlines()
    assert first == "[4, 7];[14, 18]"  # the original's format, which its load_key_token reads
    assert second.startswith("# tokenweight LongPPL key spans: sha256=")
    assert load_key_spans(path, text) == [(4, 7), (14, 18)]
    with pytest.raises(UsageError, match="was saved for another text") as e:
        load_key_spans(path, text + " seven")
    assert "\n" not in str(e.value)
    # a file of the original (first line only) is read; a span beyond the text is refused
    (tmp_path / "orig.txt").write_text("[4, 7];[14, 18]")
    assert load_key_spans(tmp_path / "orig.txt", text) == [(4, 7), (14, 18)]
    with pytest.raises(UsageError, match="another text"):
        load_key_spans(tmp_path / "orig.txt", "one two")
    (tmp_path / "empty.txt").write_text("")
    assert load_key_spans(tmp_path / "empty.txt", text) is None
    save_key_spans(tmp_path / "none.txt", [], text)
    assert load_key_spans(tmp_path / "none.txt", text) is None
    (tmp_path / "bad.txt").write_text("hello")
    with pytest.raises(UsageError, match="not a LongPPL key-token file"):
        load_key_spans(tmp_path / "bad.txt", text)
    with pytest.raises(UsageError, match="does not exist"):
        load_key_spans(tmp_path / "missing.txt", text)
