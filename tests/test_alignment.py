"""A frozen scorer with another tokenizer (tokenweight.alignment, ``score --align``).

Pure span rules against hand-computed numbers (shared characters, straddling tokens, zero-width
tokens, the first window), the aligned short-context NLL against a brute-force reference (one
forward per scorer token, character overlaps by loops) with two byte-level BPE tokenizers of
different vocabulary sizes trained here, in both directions; the same tokenizer gives exactly
``short_context_nll``'s result (function and cache, bitwise); the cache records its alignment, is
verified, trains like any frozen cache; bad scorers are refused in one line. About 15 s on 2 cores.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from tests.scorecache.test_scorecache import make_scorer
from tokenweight.alignment import (
    aligned_short_nll,
    aligned_windows,
    owners,
    split_shared,
    token_spans,
    transfer,
)
from tokenweight.cli.main import main
from tokenweight.scoring import short_context_nll

WORDS = ["alpha", "beta", "gamma", "délta", "naïve", "日本語", "x = 12", "def f(a):", "  return a+1", "\n", "ñandú"]
N, W, S = 48, 12, 8


# ----------------------------------------------------------------------------- pure span rules


def test_split_shared_cuts_a_shared_character_into_equal_parts():
    # char 1 covered by three tokens (the pieces of one character), char 4 by "cdE" and "Efg"
    spans = [(0, 1), (1, 2), (1, 2), (1, 3), (3, 3), (3, 5), (4, 7)]
    got = split_shared(spans).tolist()
    assert got == [[0, 1], [1, 1 + 1 / 3], [1 + 1 / 3, 1 + 2 / 3], [1 + 2 / 3, 3], [3, 3], [3, 4.5], [4.5, 7]]
    assert split_shared([(0, 0), (0, 3), (3, 5)]).tolist() == [[0, 0], [0, 3], [3, 5]]  # unchanged, exactly


def test_owners_take_the_data_token_holding_the_first_character():
    data = torch.tensor([(0, 0), (0, 3), (3, 5), (7, 9)], dtype=torch.float64)  # BOS, "abc", "de", gap, "hi"
    scorer = torch.tensor([(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)], dtype=torch.float64)
    assert owners(scorer, data).tolist() == [1, 1, 2, 2, 3]  # (4, 6) starts in "de"; (6, 8) in the gap -> "de"


def test_transfer_by_character_overlap_with_straddling_tokens():
    data = [(0, 0), (0, 3), (3, 5), (5, 9)]  # BOS, "abc", "de", "fghi"
    scorer = [(0, 2), (2, 4), (4, 9), (9, 9)]  # "ab", "cd" (straddles), "efghi" (straddles), zero-width
    got = transfer(torch.tensor([1.0, 2.0, 5.0, 0.5]), scorer, data).tolist()
    # "ab" -> abc; "cd": c -> abc, d -> de; "efghi": e -> de, fghi -> fghi (4/5); zero-width -> its owner fghi
    assert got == [0.0, 1.0 + 1.0, 1.0 + 1.0, 4.0 + 0.5]
    assert sum(got) == 8.5


def _brute_transfer(values, src, dst, fallback):
    out = [0.0] * len(dst)
    for v, (a, b), f in zip(values, src, fallback):
        shares = [max(0.0, min(b, d) - max(a, c)) for c, d in dst]
        total = sum(shares)
        for j, x in enumerate(shares):
            out[j] += v * x / total if total else 0.0
        if not total:
            out[f] += v
    return out


def _random_spans(rng: random.Random, length: int, zero_every: int) -> list[tuple[int, int]]:
    cuts = sorted(rng.sample(range(1, length), rng.randint(3, length // 2)))
    spans = [(a, b) for a, b in zip([0, *cuts], [*cuts, length])]
    out = []
    for i, s in enumerate(spans):
        out.append(s)
        if zero_every and i % zero_every == 0:
            out.append((s[1], s[1]))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_transfer_conserves_the_total_against_brute_force(seed):
    rng = random.Random(seed)
    src, dst = _random_spans(rng, 40, 4), _random_spans(rng, 40, 3)
    values = torch.rand(len(src), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    own = owners(torch.tensor(src, dtype=torch.float64), torch.tensor(dst, dtype=torch.float64))
    got = transfer(values, src, dst)
    torch.testing.assert_close(
        got, torch.tensor(_brute_transfer(values.tolist(), src, dst, own.tolist()), dtype=torch.float64)
    )
    assert float(got.sum()) == pytest.approx(float(values.sum()), abs=1e-12)


def test_aligned_windows_first_window_and_boundaries():
    # data: BOS + 6 tokens of 2 characters; scorer: BOS + 4 tokens of 3 characters (two straddle)
    data = torch.tensor([(0, 0)] + [(2 * i, 2 * i + 2) for i in range(6)], dtype=torch.float64)
    scorer = torch.tensor([(0, 0)] + [(3 * i, 3 * i + 3) for i in range(4)], dtype=torch.float64)
    # owners of scorer tokens 1..4 (starts 0, 3, 6, 9): data tokens 1, 2, 4, 5
    data_windows = [(0, 1, 4), (2, 4, 6), (3, 6, 7)]  # window 4, stride 2 over 7 tokens: 0..3, 2..5, 3..6
    assert aligned_windows(data, scorer, data_windows, True) == [(0, 1, 3), (2, 3, 5)]
    # window 0 scores the scorer tokens owned by data 1..3; window 1 starts at the first scorer token owned
    # by data 2 or later (2) and scores those owned by 4, 5; window 2 (data target 6) has nothing to score.
    tight = [(0, 1, 2), (1, 2, 4), (3, 4, 7)]  # data window 1 starts at token 1: scorer token 1 is its context
    assert aligned_windows(data, scorer, tight, True) == [(0, 1, 2), (1, 2, 3), (2, 3, 5)]
    # window 2 starts at data token 3, owned by no scorer token start: it starts one token before its target


# ----------------------------------------------------------------------------- tokenizers, data, scorers


@pytest.fixture(scope="module")
def toks():
    from tokenweight.data.tokenizer import train_tokenizer

    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(40)) for _ in range(120)]
    return {"small": train_tokenizer(texts, 300), "large": train_tokenizer(texts, 520), "texts": texts}


def data_rows(tok, texts, n=N, count=6):
    """BOS + n-1 tokens cut from the token stream of the texts (cuts fall inside words), and a row
    that starts inside a character (its round trip is not exact: spans by decoding token by token)."""
    stream = [x for t in texts for x in tok(t, add_special_tokens=False)["input_ids"]]
    rows = [[tok.bos_token_id] + stream[i * (n - 1) : (i + 1) * (n - 1)] for i in range(count - 1)]
    stars = tok(" ★★ naïve ★ délta", add_special_tokens=False)["input_ids"]  # ★: 3 byte tokens, unseen in training
    rows.append([tok.bos_token_id] + stars[2:])
    return rows


def brute_force_aligned(model, data_tok, scorer_tok, row, window, stride):
    """docs/SCORING.md's rule with loops: one forward per scored scorer token, shares by character loops."""
    from tokenweight.report.heatmap import token_pieces

    special = set(data_tok.all_special_ids)
    content = [x for x in row if x not in special]
    text = data_tok.decode(content, clean_up_tokenization_spaces=False)
    enc = data_tok(text, add_special_tokens=False, return_offsets_mapping=True)
    if enc["input_ids"] == content:
        spans = [tuple(o) for o in enc["offset_mapping"]]
    else:
        pos, spans = 0, []
        for p in token_pieces(data_tok, content):
            spans.append((pos, pos + len(p)))
            pos += len(p)
    it, dspans, end = iter(spans), [], 0
    for x in row:
        dspans.append((end, end) if x in special else next(it))
        end = dspans[-1][1]
    se = scorer_tok(text, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True)
    bos = scorer_tok.bos_token_id
    sids, sspans = [bos, *se["input_ids"]], [(0, 0), *[tuple(o) for o in se["offset_mapping"]]]

    def parts(spans):  # token -> {character: its part of it}: a character of k tokens is cut in k, in order
        covering: dict[int, list[int]] = {}
        for t, (a, b) in enumerate(spans):
            for c in range(a, b):
                covering.setdefault(c, []).append(t)
        out = [{} for _ in spans]
        for c, ts in covering.items():
            for m, t in enumerate(ts):
                out[t][c] = (c + m / len(ts), c + (m + 1) / len(ts))
        return out

    dparts, sparts = parts(dspans), parts(sspans)
    sstart = [min((lo for lo, _ in p.values()), default=a) for p, (a, _) in zip(sparts, sspans)]
    dstart = [min((lo for lo, _ in p.values()), default=a) for p, (a, _) in zip(dparts, dspans)]
    own = [0] + [max(j for j in range(len(dspans)) if dstart[j] <= sstart[i]) for i in range(1, len(sids))]
    length = len(row)
    starts = [0] if length <= window else list(range(0, length - window + 1, stride))
    if length > window and starts[-1] != length - window:
        starts.append(length - window)
    windows, prev = [], 0
    for k, t in enumerate(starts):
        end = min(t + window, length)
        windows.append((t, 1 if k == 0 else prev, end))
        prev = end
    short, scored = {}, 0.0
    for k, (t, first, end) in enumerate(windows):
        targets = [i for i in range(1, len(sids)) if first <= own[i] < end]
        if not targets:
            continue
        u = 0 if k == 0 else min(min(i for i in range(len(sids)) if own[i] >= t), targets[0] - 1)
        for i in targets:
            ctx = sids[u:i]
            if u > 0:
                ctx = [bos, *ctx[1:]]
            logits = model(torch.tensor([ctx])).logits[0, -1]
            short[i] = float(torch.nn.functional.cross_entropy(logits[None], torch.tensor([sids[i]])))
            scored += short[i]
    out = [0.0] * length
    for i, v in short.items():
        shares = [
            sum(max(0.0, min(p[1], q[c][1]) - max(p[0], q[c][0])) for c, p in sparts[i].items() if c in q)
            for q in dparts
        ]
        total = sum(shares)
        for j, x in enumerate(shares):
            out[j] += v * x / total if total else 0.0
        if not total:
            out[own[i]] += v
    out[1] += out[0]
    return out[1:], scored


@pytest.mark.parametrize("data_name,scorer_name", [("small", "large"), ("large", "small")])
def test_aligned_short_nll_equals_brute_force_and_conserves_the_total(toks, data_name, scorer_name):
    data_tok, scorer_tok = toks[data_name], toks[scorer_name]
    rows = data_rows(data_tok, toks["texts"])
    model = make_model(len(scorer_tok), seed=1)
    got = aligned_short_nll(model, rows, data_tok, scorer_tok, W, S, n=N)
    assert got.nll.shape == (len(rows), N - 1) and got.decoded_per_token == 1  # the row cut inside a character
    assert [t.exact for t in token_spans(data_tok, rows)] == [True] * (len(rows) - 1) + [False]
    with torch.no_grad():
        for r, row in enumerate(rows):
            ref, total = brute_force_aligned(model, data_tok, scorer_tok, row, W, S)
            torch.testing.assert_close(
                got.nll[r, : len(row) - 1], torch.tensor(ref, dtype=torch.float32), atol=2e-5, rtol=0
            )
            assert float(got.nll[r].double().sum()) == pytest.approx(total, abs=1e-4)
            assert got.nll[r, len(row) - 1 :].abs().sum() == 0


def make_model(vocab: int, seed: int = 0):
    from tests.tiny_models import tiny_llama

    return tiny_llama(
        vocab, seed, hidden_size=16, intermediate_size=32, num_attention_heads=2, max_position_embeddings=256
    )


def test_same_tokenizer_gives_exactly_short_context_nll(toks):
    tok = toks["small"]
    rows = data_rows(tok, toks["texts"])[:-1]  # exact round trips: the scorer sees the data's own tokens
    rows[2] = rows[2][:30]  # a shorter row
    model = make_model(len(tok))
    ids = torch.zeros(len(rows), N, dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
    mask = (torch.arange(N)[None] < torch.tensor([len(r) for r in rows])[:, None]).long()
    expect = short_context_nll(model, ids, W, S, attention_mask=mask, bos_token_id=tok.bos_token_id)
    assert torch.equal(aligned_short_nll(model, rows, tok, tok, W, S, n=N).nll, expect)


# ----------------------------------------------------------------------------- the score cache


def make_text_prepared(folder: Path, tok, rows: list[list[int]]) -> Path:
    from datasets import Dataset, Features, List, Value

    feats = Features(
        {"input_ids": List(Value("int32")), "doc_id": Value("int64"), "episodes": List(List(Value("int32")))}
    )
    for split, part in (("train", rows), ("validation", rows[:2])):
        Dataset.from_dict(
            {"input_ids": part, "doc_id": list(range(len(part))), "episodes": [[] for _ in part]}, features=feats
        ).save_to_disk(str(folder / split))
    tok.save_pretrained(folder / "tokenizer")
    manifest = {"n": N, "tokenizer": "tokenizer", "counts": {"train": len(rows)}, "fingerprint": "text-data"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def env(toks, tmp_path_factory):
    root = tmp_path_factory.mktemp("aligned")
    data = make_text_prepared(root / "data", toks["small"], data_rows(toks["small"], toks["texts"], count=8))
    large = make_scorer(root / "large", vocab=len(toks["large"]), seed=1)
    toks["large"].save_pretrained(large)
    same = make_scorer(root / "same", vocab=len(toks["small"]), seed=2)
    toks["small"].save_pretrained(same)
    return {"root": root, "data": data, "large": large, "same": same}


def score_argv(env, scorer, out, *extra):
    argv = ["score", "--data", str(env["data"]), "--scorer", str(scorer), "--out", str(out)]
    return [*argv, "--window", str(W), "--stride", str(S), "--shard-size", "3", "--device", "cpu", *extra]


def test_same_tokenizer_cache_aligned_always_equals_the_plain_cache(env):
    from tokenweight.scorecache import ScoreCache

    assert main(score_argv(env, env["same"], env["root"] / "plain")) == 0
    assert main(score_argv(env, env["same"], env["root"] / "always", "--align", "always")) == 0
    plain, always = ScoreCache.open(env["root"] / "plain"), ScoreCache.open(env["root"] / "always")
    assert "scorer_tokenizer" not in plain.meta and always.meta["alignment"] == "characters-1"
    # bitwise; row 7 starts inside a character: its text re-encodes to other tokens, so it may differ
    assert torch.equal(plain.read(range(7)), always.read(range(7)))


def test_cache_with_another_tokenizer_is_recorded_verified_and_trains(env, toks, capsys):
    from tokenweight.identity import tokenizer_digest
    from tokenweight.scorecache import ScoreCache

    out = env["root"] / "aligned"
    assert main(score_argv(env, env["large"], out, "--verify", "3")) == 0
    text = capsys.readouterr().out
    assert "verified 3 sequences" in text
    assert "its NLL was moved onto the data's tokens by characters (1 of 8 by decoding token by token)" in text
    meta = ScoreCache.open(out).meta
    assert meta["alignment"] == "characters-1" and meta["scorer_tokenizer"] == tokenizer_digest(toks["large"])
    assert meta["tokenizer"] == tokenizer_digest(toks["small"]) and meta["window"] == W
    model = make_model_from(env["large"])
    rows = data_rows(toks["small"], toks["texts"], count=8)
    expect = aligned_short_nll(model, rows, toks["small"], toks["large"], W, S, n=N).nll
    torch.testing.assert_close(ScoreCache.open(out).read(range(8)), expect, atol=1e-6, rtol=0)

    run = env["root"] / "run"
    argv = ["train", "--init", "tiny", "--data", str(env["data"]), "--out", str(run), "--batch-size", "2"]
    assert main([*argv, "--scheme", "dense:0.75", "--scorer", "frozen", "--scores", str(out), "--max-steps", "2"]) == 0
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(x["weight_std"] > 0 and math.isfinite(x["loss"]) for x in lines)


def make_model_from(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).eval()


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tokenweight: error: "), err
    return err[0]


def test_bad_scorers_are_refused_in_one_line(env, toks, capsys):
    from transformers import ByT5Tokenizer

    slow = make_scorer(env["root"] / "slow", vocab=400)
    ByT5Tokenizer().save_pretrained(slow)
    assert main(score_argv(env, slow, env["root"] / "c1")) == 2
    assert "has a tokenizer without character offsets (ByT5Tokenizer, not a fast tokenizer)" in one_line_error(capsys)
    bare = make_scorer(env["root"] / "bare", vocab=len(toks["small"]))
    assert main(score_argv(env, bare, env["root"] / "c2", "--align", "always")) == 2
    assert "has no saved tokenizer, so its tokens cannot be aligned" in one_line_error(capsys)
    assert main(score_argv(env, env["large"], env["root"] / "c3", "--align", "never")) == 2
    assert "uses a different tokenizer than the data" in one_line_error(capsys)
    small = make_scorer(env["root"] / "small-vocab", vocab=300)
    toks["large"].save_pretrained(small)
    assert main(score_argv(env, small, env["root"] / "c4")) == 2
    assert f"has a vocabulary of 300 tokens but its tokenizer has {len(toks['large'])}" in one_line_error(capsys)
    assert not any((env["root"] / f"c{i}").exists() for i in range(1, 5))


def test_heat_map_and_show_align_a_scorer_with_another_tokenizer(env, toks, tmp_path):
    from tokenweight.report.heatmap import compute_heatmap

    text = " ".join(toks["texts"][:2])
    model, scorer = make_model(len(toks["small"])), make_model_from(env["large"])
    sample = compute_heatmap(
        model, scorer, toks["small"], text, ["dense:0.75"], window=W, scorer_tokenizer=toks["large"]
    )
    short = aligned_short_nll(scorer, [sample["token_ids"]], toks["small"], toks["large"], W, sample["stride"]).nll
    assert sample["short_nll"][1:] == short[0].tolist()
    (tmp_path / "t.txt").write_text(text)
    argv = ["show", "--model", str(env["same"]), "--scorer", str(env["large"]), "--text", str(tmp_path / "t.txt")]
    assert main([*argv, "--window", str(W), "--out", str(tmp_path / "h.html"), "--device", "cpu"]) == 0
    assert "dense:0.75" in (tmp_path / "h.html").read_text()
