"""Definition-use episodes: exact spans, distances in range, only lines added, deterministic."""

import re

import numpy as np
import pytest

from tokenweight.data.episodes import EpisodeConfig, inject_batch, parse_distance
from tokenweight.data.tokenizer import Encoder
from tokenweight.identity import load_tokenizer

NAME = r"[A-Z]{3,5}_[A-Z]{3,5}"
DEF = re.compile(rf"^[ \t]*({NAME}) = (\d+)\n", re.M)
USE = re.compile(rf"^[ \t]*(?:assert ({NAME}) == (\d+)|print\(({NAME}), (\d+)\))\n", re.M)


def _brute_tokens(offsets, a, b):
    """Indices of the tokens whose characters lie in [a, b) (brute force over all offsets)."""
    return [t for t, (s, e) in enumerate(offsets) if s < b and e > a]


def _check(tok, texts, results, cfg, cap, glued_space=False):
    """Every claim about the injected documents, against independent brute-force references."""
    total = 0
    for text, res in zip(texts, results):
        final = tok.decode(res.ids.tolist())
        # 1. only whole lines were added: removing them gives back the original document
        assert USE.sub("", DEF.sub("", final)) == text
        # 2. the ids are the tokenizer's own tokenization of the final text
        ref = tok(final, add_special_tokens=False, return_offsets_mapping=True)
        assert res.ids.tolist() == ref["input_ids"]
        offs = ref["offset_mapping"]
        defs, uses = {}, {}  # name -> (name start, value start, value)
        for m in DEF.finditer(final):  # style restate: a name's second definition line is its use
            (uses if m.group(1) in defs else defs)[m.group(1)] = (m.start(1), m.start(2), m.group(2))
        for m in USE.finditer(final):
            g = 2 if m.group(2) else 4
            uses[m.group(g - 1)] = (m.start(g - 1), m.start(g), m.group(g))
        assert (cfg.style == "assert") == bool(USE.search(final))  # each style writes its own use lines
        assert set(defs) == set(uses) and len(defs) == len(res.spans) == res.injected
        assert res.injected <= res.planned
        # 3. spans: exactly the value tokens (plus the one space glued to numbers by some tokenizers)
        expect = []
        for name, (name_at, d_at, value) in defs.items():
            _, u_at, u_value = uses[name]
            assert u_value == value and len(value) == cfg.digits
            da, ua = d_at - glued_space, u_at - glued_space
            dt, ut = (
                _brute_tokens(offs, da, da + len(value) + glued_space),
                _brute_tokens(offs, ua, ua + len(value) + glued_space),
            )
            cue = _brute_tokens(offs, name_at, name_at + 1)[0]
            expect.append([cue, dt[0], dt[-1] + 1, ut[0], ut[-1] + 1])
        assert sorted(map(list, res.spans.tolist())) == sorted(expect)
        for cue, d0, d1, u0, u1 in res.spans.tolist():
            assert res.ids[d0:d1].tolist() == res.ids[u0:u1].tolist()
            assert tok.decode(res.ids[d0:d1].tolist()).strip().isdigit()
            assert cfg.min_distance <= u0 - d0 <= (cfg.max_distance or 1 << 30)
            assert cue // cap == (u1 - 1) // cap  # name, value and use inside one sequence
        total += len(res.spans)
    return total


@pytest.fixture
def tok(tiny_tokenizer):
    return load_tokenizer(str(tiny_tokenizer))


@pytest.mark.parametrize("style", ["restate", "assert"])
@pytest.mark.parametrize("distance,cap", [((20, 100), 127), ((60, 80), 127), ((16, None), 255)])
def test_spans_exact_and_distances_in_range(tok, docs_factory, distance, cap, style):
    texts = docs_factory(8, seed=11)
    cfg = EpisodeConfig(per_1k=6.0, min_distance=distance[0], max_distance=distance[1], digits=7, style=style)
    results = inject_batch(texts, Encoder(tok), cfg, cap, None, 1, [[0, i] for i in range(len(texts))])
    assert _check(tok, texts, results, cfg, cap) >= 10


def test_digits_and_kept_tails(tok, docs_factory):
    texts = docs_factory(4, seed=12)
    cfg = EpisodeConfig(per_1k=8.0, min_distance=20, max_distance=90, digits=3)
    results = inject_batch(texts, Encoder(tok), cfg, 127, 40, 1, [[1, i] for i in range(len(texts))])
    assert _check(tok, texts, results, cfg, 127) > 0


def test_verification_catches_a_wrong_plan(tok, docs_factory, monkeypatch):
    """With line costs mis-measured by up to +-6 tokens, the planner misplaces episodes (out of
    range, across sequences); verification must drop exactly those and re-plan the rest."""
    import tokenweight.data.episodes as E

    rng = np.random.default_rng(0)
    measure = E._Meter.__call__

    def noisy(self, line, value, indent):
        pre, length, vlen = measure(self, line, value, indent)
        return pre + int(rng.integers(-6, 7)), length + int(rng.integers(-6, 7)), vlen

    monkeypatch.setattr(E._Meter, "__call__", noisy)
    calls = {"failed": 0}
    verify = E._verify

    def counting(*a, **k):
        spans, failed = verify(*a, **k)
        calls["failed"] += len(failed)
        return spans, failed

    monkeypatch.setattr(E, "_verify", counting)
    texts = docs_factory(8, seed=18)
    cfg = EpisodeConfig(per_1k=8.0, min_distance=30, max_distance=60)
    results = inject_batch(texts, Encoder(tok), cfg, 100, None, 1, [[0, i] for i in range(len(texts))])
    assert calls["failed"] > 0  # the noise did break some plans...
    assert _check(tok, texts, results, cfg, 100) >= 10  # ...and what remains is exact


def test_verify_rejects_each_violation(tok):
    from tokenweight.data.episodes import _verify

    text = "alpha beta\n    ABC_DEFG = 1234567\n    gamma delta = 5\n    assert ABC_DEFG == 1234567\n"
    enc = Encoder(tok)([text])[0]
    name_c, da = text.index("ABC_DEFG"), text.index("1234567")
    ua = text.rindex("1234567")
    chars = [[name_c, da, da + 7, ua, ua + 7]]
    offs = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    d0, u0 = _brute_tokens(offs, da, da + 1)[0], _brute_tokens(offs, ua, ua + 1)[0]
    cue = _brute_tokens(offs, name_c, name_c + 1)[0]
    dist = u0 - d0
    ok = EpisodeConfig(per_1k=1, min_distance=dist, max_distance=dist)
    assert _verify(enc, text, chars, ok, 1000) == ([[cue, d0, d0 + 7, u0, u0 + 7]], [])
    assert _verify(enc, text, chars, EpisodeConfig(per_1k=1, min_distance=dist + 1), 1000) == ([], [0])
    assert _verify(enc, text, chars, EpisodeConfig(per_1k=1, min_distance=1, max_distance=dist - 1), 1000) == ([], [0])
    assert _verify(enc, text, chars, ok, u0 + 6) == ([], [0])  # the use's last token in the next sequence
    assert _verify(enc, text, chars, ok, cue + 1)[1] == [0]  # cue and value in different sequences
    other = text[:ua] + "7654321" + text[ua + 7 :]  # the use does not repeat the value
    assert _verify(Encoder(tok)([other])[0], other, chars, ok, 1000) == ([], [0])


def test_density_is_close_to_the_request(tok, docs_factory):
    texts = docs_factory(30, seed=13, lines=(80, 160))
    cap = 127
    cfg = EpisodeConfig(per_1k=5.0, min_distance=20, max_distance=100)
    results = inject_batch(texts, Encoder(tok), cfg, cap, None, 1, [[0, i] for i in range(len(texts))])
    # episodes live in full sequences only (tails are dropped): count those tokens
    full_tokens = sum((len(r.ids) + 1) // cap * cap for r in results)
    injected, planned = sum(r.injected for r in results), sum(r.planned for r in results)
    assert injected >= 0.9 * planned
    assert 0.7 * 5.0 <= 1000 * injected / full_tokens <= 1.3 * 5.0


def test_deterministic_per_document_seed(tok, docs_factory):
    texts = docs_factory(5, seed=14)
    cfg = EpisodeConfig(per_1k=6.0, min_distance=20, max_distance=100)
    enc = Encoder(tok)
    a = inject_batch(texts, enc, cfg, 127, None, 1, [[0, i] for i in range(5)])
    # a different batching (one document at a time) gives the same documents
    b = [inject_batch([t], enc, cfg, 127, None, 1, [[0, i]])[0] for i, t in enumerate(texts)]
    for x, y in zip(a, b):
        assert np.array_equal(x.ids, y.ids) and np.array_equal(x.spans, y.spans)
    c = inject_batch(texts, enc, cfg, 127, None, 1, [[1, i] for i in range(5)])
    assert any(not np.array_equal(x.ids, y.ids) for x, y in zip(a, c))


def test_no_episodes_is_plain_tokenization(tok, docs_factory):
    texts = docs_factory(3, seed=15)
    enc = Encoder(tok)
    for cfg in (None, EpisodeConfig(per_1k=0.0)):
        out = inject_batch(texts, enc, cfg, 127, None, 1, [0, 1, 2])
        for text, r in zip(texts, out):
            assert r.ids.tolist() == tok(text, add_special_tokens=False)["input_ids"]
            assert r.spans.shape == (0, 5) and r.planned == 0


def test_tokenizer_that_glues_the_space_to_numbers(docs_factory):
    """GPT-2-style pre-tokenization (' 1234567' is one piece): spans include the one space."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    numbers = [" ".join(str(v) for v in range(i, i + 400, 7)) for i in range(20)]
    raw.train_from_iterator(
        docs_factory(10, seed=16) + numbers,
        trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False),
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=raw)
    assert any(t.startswith("Ġ") and t[1:].isdigit() for t in tok.get_vocab())
    texts = docs_factory(6, seed=17)
    cfg = EpisodeConfig(per_1k=6.0, min_distance=20, max_distance=100)
    results = inject_batch(texts, Encoder(tok), cfg, 127, None, 0, [[0, i] for i in range(6)])
    assert _check(tok, texts, results, cfg, 127, glued_space=True) > 0


@pytest.mark.parametrize("spec,expect", [("16:200", (16, 200)), ("16:", (16, None)), (" 5 : 5 ", (5, 5))])
def test_parse_distance(spec, expect):
    assert parse_distance(spec) == expect


@pytest.mark.parametrize("spec", ["16", "a:b", "0:5", "9:3", "-1:4", ":5"])
def test_parse_distance_rejects(spec):
    with pytest.raises(ValueError, match="episode distance"):
        parse_distance(spec)


@pytest.mark.parametrize(
    "kwargs,param",
    [
        (dict(per_1k=-1), "per_1k"),
        (dict(per_1k=21), "per_1k"),
        (dict(per_1k=1, min_distance=0), "min_distance"),
        (dict(per_1k=1, min_distance=9, max_distance=8), "max_distance"),
        (dict(per_1k=1, digits=0), "digits"),
        (dict(per_1k=1, digits=19), "digits"),
        (dict(per_1k=1, style="quote"), "style"),
    ],
)
def test_config_validation(kwargs, param):
    with pytest.raises(ValueError, match=param):
        EpisodeConfig(**kwargs)
