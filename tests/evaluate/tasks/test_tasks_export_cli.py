"""RULER JSONL export and the ``tokenweight tasks`` command (exit codes, resume, config)."""

from __future__ import annotations

import json

import pytest

from tokenweight.cli.main import main
from tokenweight.evaluate.tasks import TASKS, export_jsonl, generate_samples, read_jsonl


def test_export_jsonl_is_ruler_format_and_round_trips(tokenizer, tmp_path):
    samples = generate_samples("niah_multivalue", tokenizer, 300, 2, 0) + generate_samples("cwe", tokenizer, 400, 1, 0)
    path = export_jsonl(samples, tmp_path / "sub" / "validation.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    for i, (line, s) in enumerate(zip(lines, samples)):
        d = json.loads(line)
        assert list(d)[:4] == ["index", "input", "outputs", "length"]
        assert d["index"] == i and d["input"] == s.input and d["outputs"] == s.outputs and d["length"] == s.length
        assert d["task"] == s.task and d["tokens_to_generate"] == TASKS[s.task].tokens_to_generate
    assert read_jsonl(path) == samples
    assert not list(path.parent.glob(".*tmp"))  # atomic: no temporary left behind
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "x", "outputs": ["y"], "length": 3}\n{"input": "no outputs"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="bad.jsonl:2 is not a task sample"):
        read_jsonl(bad)


def _run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_list(capsys):
    rc, out, _ = _run(capsys, "tasks")
    assert rc == 0 and all(name in out for name in TASKS)


def test_cli_export_resume_and_config(capsys, tokenizer_dir, tmp_path):
    out = tmp_path / "out"
    args = [
        "tasks",
        "export",
        "--tokenizer",
        str(tokenizer_dir),
        "--tasks",
        "niah_single_1,fwe",
        "--lengths",
        "300,40",
        "--num-samples",
        "2",
        "--seed",
        "3",
        "--depths",
        "0.25,0.75",
        "--out",
        str(out),
    ]
    rc, stdout, err = _run(capsys, *args)
    assert rc == 0
    assert "skipped niah_single_1 at 40 tokens" in err  # too short for any task: skipped, not fatal
    man = json.loads((out / "manifest.json").read_text())
    assert sorted(man["files"]) == ["300/fwe/validation.jsonl", "300/niah_single_1/validation.jsonl"]
    assert {(s["task"], s["length"]) for s in man["skipped"]} == {("niah_single_1", 40), ("fwe", 40)}
    niah = read_jsonl(out / "300/niah_single_1/validation.jsonl")
    assert [s.depth for s in niah] == [0.25, 0.25, 0.75, 0.75]
    assert len(read_jsonl(out / "300/fwe/validation.jsonl")) == 2
    assert man["files"]["300/fwe/validation.jsonl"]["samples"] == 2

    # rerun with the same settings: nothing is rewritten
    fwe_path = out / "300/fwe/validation.jsonl"
    before, stamp = fwe_path.read_text(), fwe_path.stat().st_mtime_ns
    assert _run(capsys, *args)[0] == 0
    assert fwe_path.stat().st_mtime_ns == stamp
    # another seed: refused with one line, the folder untouched; forced: regenerated, different samples
    rc, _, err = _run(capsys, *[a if a != "3" else "4" for a in args])
    assert rc == 2 and err.count("\n") == 1 and "was exported with seed = 3, this command has seed = 4" in err
    assert fwe_path.stat().st_mtime_ns == stamp
    from tokenweight.evaluate.tasks.export import export_suite
    from tokenweight.identity import load_tokenizer

    man = json.loads((out / "manifest.json").read_text())
    tok = load_tokenizer(tokenizer_dir)
    export_suite(
        out,
        tok,
        ["niah_single_1", "fwe"],
        [40, 300],
        2,
        4,
        depths=[0.25, 0.75],
        identity={"haystack": man["settings"]["haystack"]},
        force=True,
    )
    assert fwe_path.read_text() != before
    assert json.loads((out / "manifest.json").read_text())["settings"]["seed"] == 4
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]  # staging moved, lock gone

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"action: export\ntasks: [vt]\nlengths: [280]\nnum_samples: 1\ntokenizer: {tokenizer_dir}\n")
    rc, _, _ = _run(capsys, "tasks", "--config", str(cfg), "--out", str(tmp_path / "o2"))
    assert rc == 0 and len(read_jsonl(tmp_path / "o2/280/vt/validation.jsonl")) == 1


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--tasks", "niah_single_9"], "unknown task(s) niah_single_9"),
        (["--lengths", "256,abc"], "--lengths has 'abc'"),
        (["--lengths", "0"], "must be positive integers"),
        (["--depths", "0.5,2"], "must lie in [0, 1]"),
        (["--num-samples", "0"], "--num-samples 0"),
        (["--haystack", "/no/such/file"], "neither 'noise' nor an existing file"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(capsys, tokenizer_dir, tmp_path, extra, message):
    rc, _, err = _run(
        capsys, "tasks", "export", "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path / "o"), *extra
    )
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("tokenweight: error: ") and message in err


def test_cli_requires_tokenizer_and_out(capsys, tmp_path):
    rc, _, err = _run(capsys, "tasks", "export", "--out", str(tmp_path))
    assert rc == 2 and "--tokenizer is required" in err
    rc, _, err = _run(capsys, "tasks", "export", "--tokenizer", str(tmp_path / "none"), "--out", str(tmp_path))
    assert rc == 2 and "does not exist" in err


def test_cli_corpus_haystack_from_a_folder(capsys, tokenizer_dir, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.py").write_text("def alpha(x):\n    return x * 2\n" * 30)
    (docs / "b.txt").write_text("Beta gamma delta. " * 40)
    rc, _, _ = _run(
        capsys,
        "tasks",
        "export",
        "--tokenizer",
        str(tokenizer_dir),
        "--tasks",
        "niah_single_2",
        "--lengths",
        "300",
        "--num-samples",
        "2",
        "--haystack",
        str(docs),
        "--out",
        str(tmp_path / "o"),
    )
    assert rc == 0
    ss = read_jsonl(tmp_path / "o/300/niah_single_2/validation.jsonl")
    assert all(s.meta["haystack"] == "corpus" for s in ss)
    assert all("return x * 2" in s.input or "Beta gamma delta." in s.input for s in ss)
