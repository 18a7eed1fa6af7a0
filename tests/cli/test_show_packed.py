"""The heat map of a packed row (``tokenweight show --data``): document-masked long pass, short
windows per document, first tokens unscored, boundaries drawn; equal to its documents run alone."""

import re

import pytest
import torch

from tests.evaluate.packed_helpers import documents, pack, save_prepared
from tests.evaluate.test_runner import make_model, make_tokenizer
from tokenweight.cli.main import main
from tokenweight.report.heatmap import compute_heatmap_ids, heatmap_html, sample_html
from tokenweight.scoring import self_scored_short_nll, short_context_nll, token_nll
from tokenweight.weighting import WeightingScheme

LENGTHS = (14, 5, 20, 2, 9)
SCHEMES = ["dense:0.75", "sparse:0.5", "longce:5"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("packed_show")
    tok = make_tokenizer(tmp / "tok")
    model, scorer = make_model(tmp / "model", len(tok), 0), make_model(tmp / "scorer", len(tok), 1)
    docs = documents(tok, LENGTHS, seed=1)
    (tmp / "data").mkdir()
    save_prepared(tmp / "data", tok, pack(docs, 64), 64)
    return tmp, tok, model, scorer, docs


def _brute_force(model, scorer, tok, docs, window, stride):
    """Row-aligned ``[1, n-1]`` long/short NLL and target mask from every document run alone."""
    long, short, mask = [], [], []
    for k, d in enumerate(docs):
        x = torch.tensor([d["input_ids"]])
        lo = token_nll(model, x)
        if scorer is None:
            sh = self_scored_short_nll(model, x, lo, window, stride, bos_token_id=tok.bos_token_id)
        else:
            sh = short_context_nll(scorer, x, window, stride, bos_token_id=tok.bos_token_id)
        head = [] if k == 0 else [0.0]  # the entry of the document's first token: not a target
        long += head + lo[0].tolist()
        short += head + sh[0].tolist()
        mask += ([] if k == 0 else [False]) + [True] * lo.shape[1]
    return torch.tensor([long]), torch.tensor([short]), torch.tensor([mask])


@pytest.mark.parametrize("self_scored", [False, True])
def test_packed_heatmap_equals_documents_alone(setup, self_scored):
    tmp, tok, model, scorer, docs = setup
    scorer = None if self_scored else scorer
    ids = [t for d in docs for t in d["input_ids"]]
    s = compute_heatmap_ids(model, scorer, tok, ids, SCHEMES, 8, 3, doc_lengths=list(LENGTHS))
    assert s["doc_starts"] == [0, 14, 19, 39, 41] and s["self_scored"] == self_scored
    long, short, mask = _brute_force(model, scorer, tok, docs, 8, 3)
    unscored = [0] + [j + 1 for j, ok in enumerate(mask[0].tolist()) if not ok]
    assert [i for i, x in enumerate(s["long_nll"]) if x is None] == unscored
    assert [i for i, x in enumerate(s["short_nll"]) if x is None] == unscored
    kept = [j + 1 for j, ok in enumerate(mask[0].tolist()) if ok]
    assert [s["long_nll"][i] for i in kept] == pytest.approx(long[0, mask[0]].tolist(), abs=2e-6)
    assert [s["short_nll"][i] for i in kept] == pytest.approx(short[0, mask[0]].tolist(), abs=2e-6)
    for spec in SCHEMES:
        want = WeightingScheme.parse(spec)(long, short, mask=mask)[0]
        got = s["weights"][spec]
        assert [i for i, x in enumerate(got) if x is None] == unscored
        assert [got[i] for i in kept] == pytest.approx(want[mask[0]].tolist(), abs=1e-5)
    # a document within the window has no long-range tokens: self-scored, its short NLL is its long one
    if self_scored:
        assert s["short_nll"][15:19] == s["long_nll"][15:19]


def test_unpacked_ids_unchanged_and_boundaries_drawn(setup):
    tmp, tok, model, scorer, docs = setup
    ids = docs[2]["input_ids"]
    plain = compute_heatmap_ids(model, scorer, tok, ids, SCHEMES, 8, 3)
    one = compute_heatmap_ids(model, scorer, tok, ids, SCHEMES, 8, 3, doc_lengths=[len(ids)])
    assert "doc_starts" not in plain and one["doc_starts"] == [0]
    assert "tw-doc" not in sample_html(plain)
    assert one["long_nll"][1:] == pytest.approx(plain["long_nll"][1:], abs=2e-6)
    assert one["short_nll"][1:] == pytest.approx(plain["short_nll"][1:], abs=2e-6)
    frag = heatmap_html(["a", "b", "c"], [None, 1.0, None], [None, 2.0, None], {"u": [None, 1.0, None]}, [0, 2])
    assert frag.count('class="tw-doc"') == 2  # one bar per panel, before token 2
    assert "document 2 of 2 starts at token 2" in frag
    with pytest.raises(ValueError, match="must sum to the 3 ids"):
        compute_heatmap_ids(model, scorer, tok, ids[:3], SCHEMES, 8, 3, doc_lengths=[2])


def test_show_a_packed_row(setup, capsys):
    tmp, tok, model, scorer, docs = setup
    out = tmp / "row.html"
    base = ["show", "--model", str(tmp / "model"), "--window", "8", "--out", str(out)]
    assert main(base + ["--data", str(tmp / "data"), "--row", "0", "--scorer", str(tmp / "scorer")]) == 0
    page = out.read_text(encoding="utf-8")
    panels = 1 + 3  # d and the default schemes
    assert page.count('class="tw-tok"') == panels * sum(LENGTHS)
    assert page.count('class="tw-doc"') == panels * (len(LENGTHS) - 1)
    assert "row 0, 5 documents (packed), 50 tokens" in page
    # --max-tokens cuts the row inside its third document
    assert main(base + ["--data", str(tmp / "data"), "--max-tokens", "25"]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.count('class="tw-tok"') == panels * 25 and page.count('class="tw-doc"') == panels * 2
    capsys.readouterr()
    assert main(base + ["--data", str(tmp / "data"), "--row", "7"]) == 2
    assert re.search(r"--row 7 is not a row of validation \(1 rows\)", capsys.readouterr().err)
    assert main(base + ["--data", str(tmp / "data"), "--text", str(tmp / "row.html")]) == 2
    assert "both --text and --data" in capsys.readouterr().err


def test_data_haystack_of_a_packed_folder_is_its_documents(setup):
    tmp, tok, model, scorer, docs = setup
    from tokenweight.evaluate.tasks.sources import _decode_validation

    want = tok.batch_decode([d["input_ids"] for d in docs], skip_special_tokens=True)
    assert _decode_validation(tmp / "data", tok) == want
