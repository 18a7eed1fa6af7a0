"""heatmap_html (escaping, one span per token, colour order) and compute_heatmap vs the library."""

import math
import re
from html.parser import HTMLParser

import pytest
import torch

from tokenweight.report.heatmap import compute_heatmap, heatmap_html, token_pieces
from tokenweight.windows import default_stride


class _Panels(HTMLParser):
    """Per panel (``data-scheme``): the tokens' text, background alpha and title."""

    def __init__(self):
        super().__init__()
        self.panels, self._cur, self._span = {}, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self._cur = self.panels.setdefault(a["data-scheme"], [])
        elif tag == "span" and a.get("class") == "tw-tok":
            m = re.search(r"rgba\((\d+),(\d+),(\d+),([\d.]+)\)", a.get("style", ""))
            self._span = {
                "alpha": float(m.group(4)) if m else None,
                "rgb": m.groups()[:3] if m else None,
                "title": a["title"],
                "text": "",
            }
            self._cur.append(self._span)

    def handle_endtag(self, tag):
        if tag == "span":
            self._span = None

    def handle_data(self, data):
        if self._span is not None:
            self._span["text"] += data


def parse(fragment):
    p = _Panels()
    p.feed(fragment)
    p.close()
    return p.panels


TOKENS = ["<s>", "<script>alert(1)</script>", " a&b", "\n    ", '"q"', " z"]
LONG = [None, 8.75, 0.20, 0.58, 7.82, 1.32]
SHORT = [None, 8.49, 0.21, 0.64, 8.82, 1.03]


def test_escaping_spans_and_whitespace():
    weights = {"w<1>": [None, 0.5, 1.0, 2.0, 0.0, 1.5]}
    frag = heatmap_html(TOKENS, LONG, SHORT, weights)
    assert "<script>" not in frag and "&lt;script&gt;alert(1)&lt;/script&gt;" in frag
    assert 'data-scheme="w&lt;1&gt;"' in frag
    panels = parse(frag)
    assert list(panels) == ["d", "w<1>"]
    for spans in panels.values():
        assert [s["text"] for s in spans] == TOKENS  # one span per token, text (and newline) kept exactly
    assert "white-space:pre-wrap" in frag
    first = panels["w<1>"][0]
    assert first["alpha"] is None and "not scored" in first["title"]
    t = panels["w<1>"][1]["title"]
    assert "L_long 8.750" in t and "L_short 8.490" in t and "d +0.260" in t and "weight (w<1>) 0.500" in t


def test_colour_intensity_follows_weight():
    weights = {"dense": [None, 0.5, 1.0, 2.0, 0.0, 1.5], "flat": [None, 1.0, 1.0, 1.0, 1.0, 1.0]}
    panels = parse(heatmap_html(TOKENS, LONG, SHORT, weights))
    alphas = [s["alpha"] for s in panels["dense"][1:]]
    assert alphas == pytest.approx([0.25, 0.5, 1.0, 0.0, 0.75], abs=1e-3)  # weight / max weight
    order = sorted(range(5), key=lambda i: weights["dense"][i + 1])
    assert sorted(range(5), key=lambda i: alphas[i]) == order
    assert {s["alpha"] for s in panels["flat"][1:]} == {1.0}
    # d panel: blue for d < 0 (long context helped), red for d > 0; intensity |d| / max |d|
    d = [a - b for a, b in zip(LONG[1:], SHORT[1:])]
    dp = panels["d"][1:]
    for s, x in zip(dp, d):
        assert s["rgb"] == (("33", "102", "172") if x < 0 else ("178", "24", "43"))
        assert s["alpha"] == pytest.approx(abs(x) / max(map(abs, d)), abs=1e-3)


def test_nan_and_length_checks():
    frag = heatmap_html(["a", "b"], [None, float("nan")], [None, 1.0], {"u": [None, float("nan")]})
    assert all(s["alpha"] is None for p in parse(frag).values() for s in p)
    with pytest.raises(ValueError, match="long_nll"):
        heatmap_html(["a", "b"], [None], [None, 1.0], {})
    with pytest.raises(ValueError, match="weights_by_scheme"):
        heatmap_html(["a", "b"], [None, 1.0], [None, 1.0], {"x": [1.0]})


def test_default_stride():
    assert default_stride(32768, 8192) == 6144  # the paper's setting
    assert default_stride(1024, 256) == 192
    assert default_stride(100, 256) == 1  # one window covers the sequence: the stride is irrelevant


def test_compute_heatmap_matches_library(tiny_tokenizer, tiny_llama):
    from tokenweight.scoring import short_context_nll, token_nll
    from tokenweight.weighting import WeightingScheme

    text = "def f(x):\n    return x + 1  # é\n" * 4
    model, scorer = tiny_llama(0), tiny_llama(1)
    s = compute_heatmap(model, scorer, tiny_tokenizer, text, ["dense:0.75", "sparse:0.5"], window=8, max_tokens=40)
    ids = s["token_ids"]
    assert ids[0] == tiny_tokenizer.bos_token_id and len(ids) == 40
    assert "".join(s["tokens"]) == tiny_tokenizer.decode(ids)
    assert s["stride"] == default_stride(40, 8) == 6 and not s["self_scored"]
    x = torch.tensor([ids])
    long = token_nll(model, x)[0]
    short = short_context_nll(scorer, x, 8, 6, bos_token_id=tiny_tokenizer.bos_token_id)[0]
    assert s["long_nll"][0] is None and s["long_nll"][1:] == pytest.approx(long.tolist(), abs=1e-6)
    assert s["short_nll"][1:] == pytest.approx(short.tolist(), abs=1e-6)
    w = WeightingScheme.parse("sparse:0.5")(long[None], short[None])[0].tolist()
    assert s["weights"]["sparse:0.5"][1:] == w and sum(x == 0 for x in w) == 39 - math.floor(0.5 * 39)
    # self-scoring: the first window is the long pass itself
    t = compute_heatmap(model, None, tiny_tokenizer, text, ["uniform"], window=8, stride=4, max_tokens=40)
    ref = short_context_nll(model, x, 8, 4, bos_token_id=tiny_tokenizer.bos_token_id)[0]
    assert t["self_scored"] and t["short_nll"][1:] == pytest.approx(ref.tolist(), abs=1e-5)
    assert t["weights"]["uniform"][1:] == [1.0] * 39
    # exposure balancing: its tail defaults to the window, target j's effective context is j + 1
    e = compute_heatmap(model, scorer, tiny_tokenizer, text, ["exact:0.5"], window=8, max_tokens=40)
    want = WeightingScheme.parse("exact:0.5:8")(long[None], None, prefix=torch.arange(1, 40)[None])[0].tolist()
    assert e["weights"]["exact:0.5"][1:] == pytest.approx(want) and want[0] < want[-1]


def test_token_pieces_keep_spaces_and_multibyte(tiny_tokenizer):
    text = "  x\n\té  y🙂z"  # the emoji never occurs in training: four byte tokens
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = token_pieces(tiny_tokenizer, ids)
    assert len(pieces) == len(ids) and "".join(pieces) == tiny_tokenizer.decode(ids) == text
    assert pieces[-5:] == ["", "", "", "🙂", "z"]  # the character goes to the token that completes it


def test_token_pieces_sentencepiece_style():
    """Metaspace + byte fallback (a Llama-2-style tokenizer): leading spaces and byte tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator(
        ["hello world def f(x): return x"] * 10,
        trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", unk_token="<unk>")
    ids = [fast.bos_token_id] + fast("hello world  x\n\ty ü🙂 z", add_special_tokens=False)["input_ids"]
    pieces = token_pieces(fast, ids)
    assert "".join(pieces) == fast.decode(ids) and pieces[:3] == ["<s>", " hello", " world"]
    assert pieces[-7:] == ["ü", "", "", "", "🙂", " ", "z"]
