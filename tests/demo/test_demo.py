"""`tokenweight demo --profile quick` end to end: every report file exists and is well-formed."""

from __future__ import annotations

import json
import re
import time
from html.parser import HTMLParser

import pytest

from tokenweight.cli.main import main
from tokenweight.demo import SCHEMES, Demo
from tokenweight.demo.profiles import PROFILES, SMALL_SCORER_SCHEME
from tokenweight.errors import UsageError
from tokenweight.report.schema import validate_results

#: the quick demo of these tests also runs the smaller-scorer run of --full (mini scorer)
RUNS = (*SCHEMES, SMALL_SCORER_SCHEME)


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.hrefs, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        d = dict(attrs)
        if "src" in d:
            self.srcs.append(d["src"])
        if "href" in d:
            self.hrefs.append(d["href"])


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--profile", "quick", "--small-scorer", "mini", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_report_files(demo_dir):
    report = demo_dir / "report"
    for name in (
        "report.md",
        "index.html",
        "results.json",
        "training_curves.png",
        "weight_histograms.png",
        "ppl_by_position.png",
        "episodes_by_distance.png",
    ):
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name
    for png in report.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_results_json_follows_schema(demo_dir):
    results = json.loads((demo_dir / "report" / "results.json").read_text())
    validate_results(results)
    assert [r["label"] for r in results["runs"]] == [name for name, _, _ in RUNS]
    assert {r["scheme"] for r in results["runs"]} == {s for _, s, _ in RUNS}
    for run in results["runs"]:
        assert run["train_summary"]["steps"] == results["config"]["extend_steps"]
        assert run["eval"]["perplexity"]["overall"]["ppl"] > 1
        assert run["curve"], "training curve read from log.jsonl"
    assert results["base"]["eval"]["episodes"] is not None
    assert set(results["aggregate"]) and results["verdict"]["text"]


@pytest.mark.slow
def test_stage_seconds_are_kept_across_invocations(demo_dir):
    kept = json.loads((demo_dir / "stage_seconds.json").read_text())
    assert set(kept) == {"prepare", "pretrain", "pretrain_small", "score", "train", "eval"}
    assert all(v > 0 for v in kept.values())
    results = json.loads((demo_dir / "report" / "results.json").read_text())
    assert results["config"]["stage_seconds"] == kept


@pytest.mark.slow
def test_base_model_recipe_copy_warmup_then_mixed_rows(demo_dir):
    """The profile's copy settings reach the two pretraining commands (warm-up, then mixed rows)."""
    from tokenweight.demo import PROFILES

    p = PROFILES["quick"]
    warm = json.loads((demo_dir / "warmup" / "run_config.json").read_text())
    base = json.loads((demo_dir / "base" / "run_config.json").read_text())
    assert (warm["task"], warm["copy_length"], warm["batch_size"], warm["max_steps"], warm["lr"]) == (
        "copy",
        p.copy_length,
        p.copy_batch,
        p.copy_steps,
        p.copy_lr,
    )
    assert (base["task"], base["copy_fraction"], base["copy_length"]) == ("lm", p.copy_fraction, p.copy_length)
    assert base["model"].endswith("warmup/model") and warm["init"] == p.preset


@pytest.mark.slow
def test_quick_profile_pretrains_from_scratch(demo_dir):
    """Only the default profile ships a base model (tests/demo/test_base.py): quick pretrains its own."""
    assert json.loads((demo_dir / "demo_settings.json").read_text())["base_model"] == {"source": "from_scratch"}
    results = json.loads((demo_dir / "report" / "results.json").read_text())
    assert results["config"]["base_model"] == {"source": "from_scratch"}


@pytest.mark.slow
def test_html_is_self_contained(demo_dir):
    html = (demo_dir / "report" / "index.html").read_text()
    parser = _Collect()
    parser.feed(html)
    assert "img" in parser.tags
    assert all(s.startswith("data:image/png;base64,") for s in parser.srcs)
    assert not [h for h in parser.hrefs if not h.startswith("#")]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<script" not in html.lower()


@pytest.mark.slow
def test_heatmap_in_report(demo_dir):
    results = json.loads((demo_dir / "report" / "results.json").read_text())
    sample = results["sample"]
    n = results["config"]["n"]
    assert len(sample["tokens"]) == len(sample["long_nll"]) == len(sample["short_nll"]) == n
    assert set(sample["weights"]) == {s for _, s, _ in RUNS}
    for w in sample["weights"].values():
        assert len(w) == n
    html = (demo_dir / "report" / "index.html").read_text()
    assert "title=" in html  # long/short NLL on hover


@pytest.mark.slow
def test_rerun_is_cached(demo_dir, capsys):
    t = time.perf_counter()
    assert main(["demo", "--profile", "quick", "--small-scorer", "mini", "--out", str(demo_dir)]) == 0
    assert time.perf_counter() - t < 60
    assert "up to date" in capsys.readouterr().out


def test_bad_seeds(tmp_path, capsys):
    assert main(["demo", "--profile", "quick", "--seeds", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seeds" in err[0]


@pytest.mark.parametrize(
    "flag,value,low", [("--copy-steps", "-1", 0), ("--pretrain-steps", "0", 1), ("--extend-steps", "0", 1)]
)
def test_bad_step_overrides(tmp_path, capsys, flag, value, low):
    assert main(["demo", "--profile", "quick", flag, value, "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{flag} must be an integer >= {low} or None, got {value}" in err[0]
    assert not (tmp_path / "d").exists()  # refused before anything is written


@pytest.mark.slow
def test_gate_stops_a_weak_base_model(demo_dir, tmp_path):
    """A base model below the gate stops the demo before scoring, with the gate's numbers kept."""
    import shutil
    from dataclasses import replace

    from tokenweight.demo import PROFILES, Demo
    from tokenweight.errors import UsageError

    out = tmp_path / "gated"
    for part in ("data", "warmup", "base"):  # reuse the finished stages: only the gate runs
        shutil.copytree(demo_dir / part, out / part)
    with pytest.raises(UsageError, match="the base model is too weak: it recalls 0.[0-9]{3} of the injected"):
        Demo(out, replace(PROFILES["quick"], gate=1.01)).run()
    gate = json.loads((out / "gate.json").read_text())
    assert gate["threshold"] == 1.01 and gate["episodes"] > 0 and 0 <= gate["token_accuracy"] <= 1
    assert not (out / "scores").exists() and not (out / "runs").exists()


@pytest.mark.slow
def test_small_scorer_run(demo_dir):
    """dense-frozen-small trains on the frozen scores of the mini scorer, >= 4x smaller, pretrained
    the same way, and the report compares it with dense-frozen, paired by seed."""
    results = json.loads((demo_dir / "report" / "results.json").read_text())
    small = results["config"]["small_scorer"]
    assert small["preset"] == "mini" and small["ratio"] >= 4 and small["parameters"] * small["ratio"] > 1
    assert results["config"]["compare"] == [["dense-frozen-small", "dense-frozen"]]
    (c,) = results["aggregate"]["comparisons"]
    assert (c["label"], c["against"]) == ("dense-frozen-small", "dense-frozen")
    assert "dense-frozen-small vs dense-frozen (paired by seed, 1 seed(s))" in results["verdict"]["text"]
    run = json.loads((demo_dir / "runs" / "dense-frozen-small-seed0" / "run_config.json").read_text())
    assert run["scorer"] == "frozen" and run["scores"] == str(demo_dir / "scores-small")
    meta = {k: json.loads((demo_dir / k / "meta.json").read_text()) for k in ("scores", "scores-small")}
    assert meta["scores-small"]["scorer_path"] == str(demo_dir / "small-scorer" / "base" / "model")
    assert meta["scores-small"]["scorer"] != meta["scores"]["scorer"]
    # the same recipe: warm-up then pretraining, with the small preset
    warm = json.loads((demo_dir / "small-scorer" / "warmup" / "run_config.json").read_text())
    assert warm["init"] == "mini" and warm["task"] == "copy"


def test_the_full_profile_compares_its_new_runs_with_dense_frozen(tmp_path):
    """Beyond "vs uniform": the small scorer against the full-size one, every run beyond the paper's
    (and exact) against dense frozen, and a protected run against its unprotected one too."""
    assert Demo(tmp_path, PROFILES["full"]).comparisons() == [
        "dense-frozen-small:dense-frozen",
        "exact:dense-frozen",
        "dense-frozen-exact:dense-frozen",
        "dense-frozen-protect:dense-frozen",
        "sparse-frozen-protect:dense-frozen",
        "sparse-frozen-protect:sparse-frozen",
        "longce-self-protect:dense-frozen",
        "longce-self-protect:longce-self",
        "uniform-selected:dense-frozen",
    ]
    assert Demo(tmp_path, PROFILES["default"]).comparisons() == []


def test_a_folder_continues_with_more_seeds_and_runs_and_refuses_other_settings(tmp_path, capsys):
    """More seeds, or runs added to the profile, continue a demo folder (the runs made are the ones a
    fresh folder would make); any other setting is refused in one line, and the folder keeps its own."""
    from tokenweight.demo.profiles import COMPOSITIONS, make_profile

    settings = tmp_path / "demo_settings.json"
    Demo(tmp_path, make_profile("quick", extra_runs=COMPOSITIONS[:2], select_keep=0.5))._check_settings()
    Demo(tmp_path, make_profile("quick", extra_runs=COMPOSITIONS, select_keep=0.5, seeds=3))._check_settings()
    saved = json.loads(settings.read_text())
    assert saved["profile"]["seeds"] == 3 and len(saved["profile"]["extra_runs"]) == len(COMPOSITIONS)
    assert [s[0] for s in saved["schemes"][-3:]] == [COMPOSITIONS[2][0], COMPOSITIONS[3][0], "uniform-selected"]
    assert "continuing" in capsys.readouterr().out
    for profile in (
        make_profile("quick", extra_runs=COMPOSITIONS[1:], select_keep=0.5, seeds=3),  # a run dropped
        make_profile("quick", extra_runs=COMPOSITIONS, select_keep=0.5, extend_steps=7),  # another recipe
        make_profile("quick", extra_runs=COMPOSITIONS[::-1], select_keep=0.5, seeds=3),  # reordered
    ):
        with pytest.raises(UsageError, match=r"holds a demo made with other settings \(.*differ\)"):
            Demo(tmp_path, profile)._check_settings()
    assert json.loads(settings.read_text()) == saved


def test_small_scorer_must_be_4x_smaller(tmp_path, capsys):
    # the quick profile's base preset is tiny: a tiny scorer is not smaller at all
    assert main(["demo", "--profile", "quick", "--small-scorer", "tiny", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--small-scorer tiny" in err and "1.00x smaller" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # refused before any work


def test_a_corpus_of_ones_own_replaces_the_stdlib_and_the_shipped_base(tmp_path):
    from tokenweight.demo import DemoConfig

    corpus = tmp_path / "texts"
    corpus.mkdir()
    (corpus / "a.txt").write_text("x = 1\n" * 50, encoding="utf-8")
    config = DemoConfig(profile="default", corpus=str(corpus), out=str(tmp_path / "d"))
    assert DemoConfig(profile="default").shipped_base() is not None and config.shipped_base() is None
    demo = Demo(tmp_path / "d", PROFILES["default"], shipped_base=config.shipped_base(), corpus=config.corpus)
    for prepared in demo.prepare_configs():
        assert (
            prepared.inputs == [str(corpus)]
            and prepared.corpus is None
            and prepared.tokenizer
            in (
                None,
                str(demo.pre_data / "tokenizer"),
            )
        )
        assert prepared.episodes_per_1k == PROFILES["default"].episodes_per_1k  # the same probe of recall
    stdlib = Demo(tmp_path / "s", PROFILES["default"]).prepare_configs()
    assert [c.corpus for c in stdlib] == ["stdlib", "stdlib"]


def test_a_missing_corpus_is_one_line(tmp_path, capsys):
    assert main(["demo", "--corpus", str(tmp_path / "nope"), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--corpus" in err[0] and "does not exist" in err[0]
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_the_quick_demo_runs_on_another_corpus(tmp_path):
    """`demo --corpus DIR` end to end on a folder of synthetic text files (not the stdlib)."""
    from tests.data.conftest import make_docs

    corpus = tmp_path / "texts"
    corpus.mkdir()
    for i, text in enumerate(make_docs(400, seed=3, lines=(40, 160))):
        (corpus / f"doc{i:03d}.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "demo"
    assert main(["demo", "--profile", "quick", "--corpus", str(corpus), "--skip-gate", "--out", str(out)]) == 0
    results = json.loads((out / "report" / "results.json").read_text())
    assert results["config"]["corpus"] == str(corpus)
    manifest = json.loads((out / "data" / "extend" / "manifest.json").read_text())
    assert manifest["inputs"]["description"] == str(corpus)


@pytest.mark.slow
def test_compositions_and_the_selected_run(tmp_path):
    """The full profile's extra runs on the quick profile: dense × exposure, first-window protection
    (dense, sparse, LongCE with self-scoring), and plain CE on the data LongFilter selects (scored by
    the uniform run of seed 0)."""
    from tokenweight.demo.profiles import COMPOSITIONS, SELECTED_SCHEME, make_profile

    profile = make_profile("quick", extra_runs=COMPOSITIONS, select_keep=0.5)
    demo = Demo(tmp_path / "demo", profile)
    extra = [name for name, _, _ in COMPOSITIONS]
    assert extra == ["dense-frozen-exact", "dense-frozen-protect", "sparse-frozen-protect", "longce-self-protect"]
    assert [s[0] for s in demo.schemes[-5:]] == [*extra, SELECTED_SCHEME[0]]
    demo.run()
    selection = json.loads((demo.selected_data / "selection.json").read_text())
    assert selection["selected"]["keep"] == 0.5 and selection["selected"]["method"] == "longfilter"
    run = json.loads((demo.run_dir(SELECTED_SCHEME[0], 0) / "run_config.json").read_text())
    assert run["data"] == str(demo.selected_data)
    results = json.loads((tmp_path / "demo" / "report" / "results.json").read_text())
    labels = [g["label"] for g in results["aggregate"]["groups"]]
    assert {*extra, SELECTED_SCHEME[0]} <= set(labels)
    against = {(c["label"], c["against"]) for c in results["aggregate"]["comparisons"]}
    assert ("longce-self-protect", "longce-self") in against and ("uniform-selected", "dense-frozen") in against
    assert (tmp_path / "demo" / "report" / "frontier.png").is_file()
    sel = results["selection"]
    assert sel["label"] == "selected" and sel["kept"]["units"] + sel["dropped"]["units"] == len(selection["units"])
    assert (
        "Selection selected: longfilter, keep 0.5 of the documents"
        in (tmp_path / "demo" / "report" / "report.md").read_text()
    )


@pytest.mark.slow
def test_the_packed_variant(tmp_path):
    """`demo --pack`: the extension data packed, every run weighing each document on its own, the
    evaluation per document; exposure balancing's histogram from the packed rows."""
    out = tmp_path / "demo"
    assert main(["demo", "--profile", "quick", "--pack", "--out", str(out)]) == 0
    manifest = json.loads((out / "data" / "extend" / "manifest.json").read_text())
    assert manifest["options"]["pack"] is True and "documents_per_row" in manifest["counts"]["train"]
    run = json.loads((out / "runs" / "exact-seed0" / "run_config.json").read_text())
    assert run["weight_norm"] == "document" and run["packed"] is True
    results = json.loads((out / "report" / "results.json").read_text())
    assert results["exposure"]["tail_share"] < 1 and results["config"]["pack"] is True
