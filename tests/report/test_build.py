"""build_report end to end on the synthetic results: files, numbers in report.md, results.json, index.html."""

import copy
import json
import re
from html.parser import HTMLParser

import pytest

from tests.report.report_fixtures import make_results
from tokenweight.report import build_report, complete_results, validate_results
from tokenweight.report.heatmap import heatmap_html
from tokenweight.report.tables import all_tables, tables_markdown

SAMPLE = {
    "tokens": ["<s>", "def", " f", "(x", "):\n", "    return", " x"],
    "long_nll": [None, 3.0, 2.0, 1.0, 0.5, 2.5, 0.1],
    "short_nll": [None, 3.0, 2.5, 1.0, 0.4, 4.0, 0.2],
    "weights": {"dense:0.75": [None, 0.8, 1.1, 0.8, 0.9, 1.6, 0.9], "sparse:0.5": [None, 0, 2, 0, 2, 2, 0]},
    "window": 4,
    "stride": 2,
    "self_scored": True,
}


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.urls, self.tags, self.tables = [], [], [], 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.tables += tag == "table"
        for k, v in attrs:
            if k in ("src", "href") and v is not None:
                (self.imgs if tag == "img" else self.urls).append(v)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("build")
    results = make_results(tmp_path)
    before = copy.deepcopy(results)
    out = tmp_path / "report"
    build_report(results, out, sample=SAMPLE)
    assert results == before  # the input is not modified
    return out


def _row(md: str, title: str, label: str) -> list[str]:
    section = md.split(f"### {title}\n")[1].split("###")[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in table {title!r}")


def _cell(md: str, title: str, row: str, column: str) -> str:
    """A cell of a table whose rows are metrics and whose columns are models."""
    head = _row(md, title, "metric")
    return dict(zip(head, _row(md, title, row)))[column]


def test_files(report):
    names = {p.name for p in report.iterdir()}
    assert {
        "report.md",
        "index.html",
        "results.json",
        "training_curves.png",
        "weight_histograms.png",
        "ppl_by_position.png",
        "episodes_by_distance.png",
        "tasks_by_length.png",
        "heatmap_niah.png",
    } <= names
    assert not [n for n in names if n.startswith(".")]  # no temporary files left behind
    for png in report.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_numbers(report):
    md = (report / "report.md").read_text()
    assert _row(md, "Comparison", "metric") == ["metric", "base", "uniform", "dense:0.75 (frozen)"]
    rows = [line.split("|")[1].strip() for line in md.split("### Comparison\n")[1].split("*")[0].splitlines()[4:-1]]
    assert rows[:4] == ["recall d≥256", "recall d<256", "tasks@1024", "tasks@1024 gen %"]  # metrics as rows
    dense = lambda metric, title="Comparison": _cell(md, title, metric, "dense:0.75 (frozen)")  # noqa: E731
    uni = lambda metric: _cell(md, "Comparison", metric, "uniform")  # noqa: E731
    base = lambda metric: _cell(md, "Comparison", metric, "base")  # noqa: E731
    assert uni("recall d≥256") == "0.475 ± 0.177"  # (.35, .60)
    assert dense("recall d≥256") == "0.650 ± 0.071"  # (.70, .60)
    assert dense("tasks@1024") == "0.650 ± 0.071" and uni("tasks@1024") == "0.450 ± 0.071"
    assert dense("ppl<256") == "12.00 ± 1.41" and dense("seeds") == "2"
    assert dense("train s") == "120 ± 14" and uni("tok/s") == "4500 ± 707"
    assert base("recall d≥256") == "0.000" and base("ppl<256") == "9.00" and base("train s") == "–"
    assert _row(md, "Difference vs uniform", "metric") == ["metric", "dense:0.75 (frozen)"]
    assert dense("recall d≥256", "Difference vs uniform") == "+0.175 ± 0.247 (n=2)"
    assert dense("tasks@1024", "Difference vs uniform") == "+0.200 ± 0.141 (n=2)"
    assert dense("ppl<256", "Difference vs uniform") == "+1.00 ± 0.00 (n=2)"
    assert dense("niah@1024", "Tasks at length 1024") == "0.850 ± 0.071"
    assert dense("kv@1024", "Tasks at length 1024") == "0.450 ± 0.071"
    runs = dict(zip(_row(md, "Runs", "run"), _row(md, "Runs", "uniform_s0")))  # runs as rows
    assert runs["recall d≥256"] == "0.350" and runs["seed"] == "0"
    assert "## Verdict" in md and "dense:0.75 (frozen): recall d≥256 +0.175 ± 0.247 (within noise)" in md
    assert "ppl<256 +1.00 ± 0.00 (clearly worse)" in md
    assert "![training_curves](training_curves.png)" in md


def test_results_json(report, results):
    # ``results`` is a fresh copy of the input the module's report was built from
    data = json.loads((report / "results.json").read_text())
    assert validate_results(data) is data
    assert data["schema_version"] == 1
    assert data["runs"][0]["eval"] == results["runs"][0]["eval"]
    curve = data["runs"][0]["curve"]
    assert len(curve) == 20 and curve[0]["step"] == 1 and curve[-1]["plain_loss"] == pytest.approx(5.0 - 1.6)
    assert data["aggregate"]["reference"] == "uniform"
    assert data["verdict"]["auto"] is True
    assert data["sample"]["tokens"] == SAMPLE["tokens"]
    # round trip: completing the written results again changes nothing, and gives the same tables
    again = complete_results({k: v for k, v in data.items() if k != "sample"}, data["sample"])
    assert again == data
    md = (report / "report.md").read_text()
    assert tables_markdown(all_tables(again, again["aggregate"])) in md


def test_index_html_self_contained(report):
    text = (report / "index.html").read_text()
    p = _Collect()
    p.feed(text)
    p.close()
    assert p.tags[0] == "html" and p.tables >= 4
    assert len(p.imgs) == len(list(report.glob("*.png")))
    assert all(src.startswith("data:image/png;base64,") for src in p.imgs)
    assert p.urls == []
    assert not re.search(r"https?://|src=\"//|url\(", text)
    assert "<script" not in text.lower() and "<link" not in text.lower()
    assert heatmap_html(SAMPLE["tokens"], SAMPLE["long_nll"], SAMPLE["short_nll"], SAMPLE["weights"]) in text
    assert 'class="worse"' in text  # ppl<256 difference is marked


def test_bad_results_write_nothing(results, tmp_path):
    results["runs"][0]["seed"] = "zero"
    with pytest.raises(ValueError, match=r"runs\[0\]\.seed"):
        build_report(results, tmp_path / "r")
    assert not list((tmp_path / "r").iterdir())


def test_caller_verdict_and_no_base(results, tmp_path):
    results["verdict"] = {"text": "Dense wins <b>clearly</b>."}
    results["base"] = None
    for r in results["runs"]:
        r["log_path"] = None
    build_report(results, tmp_path / "r")
    text = (tmp_path / "r" / "index.html").read_text()
    assert "Dense wins &lt;b&gt;clearly&lt;/b&gt;." in text
    assert not (tmp_path / "r" / "training_curves.png").exists()
    assert not (tmp_path / "r" / "weight_histograms.png").exists()
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| base |" not in md
