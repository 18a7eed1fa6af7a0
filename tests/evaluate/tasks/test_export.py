"""RULER JSONL export and the ``tokenweight tasks`` command (exit codes, resume, config), and a
transcription of what RULER's own scripts read from the files. Module cost: ~8 s."""

from __future__ import annotations

import json

import pytest

from tokenweight.cli.main import main
from tokenweight.evaluate.tasks import TASKS, export_jsonl, generate_samples, read_jsonl

#: RULER's fields, in the order its generators write them (scripts/data/synthetic/niah.py, ...)
RULER_KEYS = ["index", "input", "outputs", "length", "length_w_model_temp", "answer_prefix"]
#: the first 10 characters of RULER's answer prefixes (scripts/data/synthetic/constants.py), which
#: RULER uses to split the prefix off the prompt
RULER_PREFIX_HEADS = {
    "niah": " The speci",
    "vt": " Answer: A",
    "cwe": " Answer: T",
    "fwe": " Answer: A",
    "qa": " Answer:",
}


def test_export_jsonl_is_ruler_format_and_round_trips(tokenizer, tmp_path):
    samples = generate_samples("niah_multivalue", tokenizer, 430, 2, 0) + generate_samples("cwe", tokenizer, 520, 1, 0)
    path = export_jsonl(samples, tmp_path / "sub" / "validation.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and all(line.isascii() for line in lines)  # RULER's write_manifest: ensure_ascii
    for i, (line, s) in enumerate(zip(lines, samples)):
        d = json.loads(line)
        niah = TASKS[s.task].family == "niah"
        assert list(d)[:7] == RULER_KEYS + (["token_position_answer"] if niah else ["task"])
        assert d["index"] == i and d["input"] == s.input and d["outputs"] == s.outputs and d["length"] == s.length
        assert d["answer_prefix"] == s.answer_prefix and d["length_w_model_temp"] == s.length
        assert d["task"] == s.task and d["tokens_to_generate"] == TASKS[s.task].tokens_to_generate
        assert "token_position_answer" not in d["meta"]
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
        "430,40",
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
    assert sorted(man["files"]) == ["430/fwe/validation.jsonl", "430/niah_single_1/validation.jsonl"]
    assert {(s["task"], s["length"]) for s in man["skipped"]} == {("niah_single_1", 40), ("fwe", 40)}
    niah = read_jsonl(out / "430/niah_single_1/validation.jsonl")
    assert [s.depth for s in niah] == [0.25, 0.25, 0.75, 0.75]
    assert len(read_jsonl(out / "430/fwe/validation.jsonl")) == 2
    assert man["files"]["430/fwe/validation.jsonl"]["samples"] == 2

    # rerun with the same settings: nothing is rewritten
    fwe_path = out / "430/fwe/validation.jsonl"
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
        [40, 430],
        2,
        4,
        depths=[0.25, 0.75],
        identity={"haystack": man["settings"]["haystack"]},
        haystack=None,
        force=True,
    )
    assert fwe_path.read_text() != before
    assert json.loads((out / "manifest.json").read_text())["settings"]["seed"] == 4
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]  # staging moved, lock gone

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"action: export\ntasks: [vt]\nlengths: [310]\nnum_samples: 1\ntokenizer: {tokenizer_dir}\n")
    rc, _, _ = _run(capsys, "tasks", "--config", str(cfg), "--out", str(tmp_path / "o2"))
    assert rc == 0 and len(read_jsonl(tmp_path / "o2/310/vt/validation.jsonl")) == 1


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--tasks", "niah_single_9"], "unknown task(s) niah_single_9"),
        (["--lengths", "256,abc"], "--lengths has 'abc'"),
        (["--lengths", "0"], "must be positive integers"),
        (["--depths", "0.5,2"], "must lie in [0, 1]"),
        (["--num-samples", "0"], "--num-samples 0"),
        (["--haystack", "/no/such/file"], "neither essay, noise, data nor an existing file"),
        (["--tasks", "qa_1"], "task qa_1 needs its QA file: pass --squad FILE"),
        (["--tasks", "qa_2,vt"], "task qa_2 needs its QA file: pass --hotpotqa FILE"),
        (["--squad", "/no/such.json"], "--squad '/no/such.json' does not exist"),
        (["--tokens-to-generate", "-1"], "must be >= 0"),
        (["--tokens-to-generate", "x"], "--tokens-to-generate 'x' is not an integer"),
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
        "430",
        "--num-samples",
        "2",
        "--haystack",
        str(docs),
        "--out",
        str(tmp_path / "o"),
    )
    assert rc == 0
    ss = read_jsonl(tmp_path / "o/430/niah_single_2/validation.jsonl")
    assert all(s.meta["haystack"] == "corpus" for s in ss)
    assert all("return x * 2" in s.input or "Beta gamma delta." in s.input for s in ss)


# ----------------------------------------------------------------------------- RULER's own scripts, transcribed

#: RULER's generation budgets (scripts/data/synthetic/constants.py) and metrics (scripts/eval/synthetic/constants.py)
RULER_BUDGET = {"niah": 128, "vt": 30, "cwe": 120, "fwe": 50, "qa": 32}
RULER_METRIC = {"niah": "all", "vt": "all", "cwe": "all", "fwe": "all", "qa": "part"}


def ruler_call_api(task_file, predict) -> list[dict]:
    """RULER's scripts/pred/call_api.py on one task file: the fields it reads from each line and
    the prediction line it writes (``predict``: prompt -> generated text)."""
    lines = [json.loads(x) for x in task_file.read_text(encoding="utf-8").splitlines()]
    out = []
    for d in lines:
        prompt = d["input"] + d.get("answer_prefix", "")  # what the model is sent
        out.append(
            {
                "index": d["index"],
                "pred": predict(prompt, d),
                "input": prompt,
                "outputs": d["outputs"],
                "others": d.get("others", {}),
                "truncation": d.get("truncation", -1),
                "length": d.get("length", -1),
            }
        )
    return out


def ruler_evaluate(pred_lines, match: str) -> tuple[float, list]:
    """RULER's scripts/eval/evaluate.py on one prediction file: (score, submission ids)."""
    import re

    preds = [re.sub(r"[\x00-\x1f]", "\n", line["pred"].strip()).strip() for line in pred_lines]
    refs = [line.get("outputs", [line.get("output", "")]) for line in pred_lines]
    ids = [line["others"].get("id", line["index"]) for line in pred_lines]
    if match == "all":
        per = [sum(r.lower() in p.lower() for r in ref) / len(ref) for p, ref in zip(preds, refs)]
    else:
        per = [max(1.0 if r.lower() in p.lower() else 0.0 for r in ref) for p, ref in zip(preds, refs)]
    return round(sum(per) / len(preds) * 100, 2), ids


def test_rulers_scripts_read_the_export_unchanged(capsys, tokenizer_dir, tokenizer, qa_files, tmp_path):
    from tokenweight.evaluate.tasks import score_generation

    tasks = ["niah_single_1", "niah_single_2", "niah_multikey_3", "vt", "cwe", "fwe", "qa_1", "qa_2"]
    args = ["tasks", "export", "--tokenizer", str(tokenizer_dir), "--tasks", ",".join(tasks), "--lengths", "700"]
    args += ["--num-samples", "3", "--squad", str(qa_files["squad"]), "--hotpotqa", str(qa_files["hotpotqa"])]
    rc, _, err = _run(capsys, *args, "--out", str(tmp_path / "out"))
    assert rc == 0, err
    for task in tasks:
        family = TASKS[task].family
        f = tmp_path / "out" / "700" / task / "validation.jsonl"  # call_api.py: data_dir / task / f"{subset}.jsonl"
        rows = [json.loads(x) for x in f.read_text(encoding="utf-8").splitlines()]
        assert [r["index"] for r in rows] == [0, 1, 2]  # distinct: call_api.py resumes by index
        for r in rows:
            assert list(r)[: len(RULER_KEYS)] == RULER_KEYS
            prompt = r["input"] + r["answer_prefix"]
            # RULER's split: the prefix starts at the last occurrence of its first 10 characters
            head = RULER_PREFIX_HEADS[family]
            assert r["answer_prefix"].startswith(head) and prompt.rfind(head) == len(r["input"])
            # RULER's length: tokenize(input + answer_prefix) + tokens_to_generate <= max_seq_length
            assert r["length"] == len(tokenizer.tokenize(prompt)) + RULER_BUDGET[family] <= 700
            assert r["length_w_model_temp"] == r["length"]
            if family == "niah":
                assert r["token_position_answer"] == len(
                    tokenizer.tokenize(r["input"][: r["input"].find(r["outputs"][0])])
                )
        perfect = ruler_call_api(f, lambda prompt, d: " " + ", ".join(d["outputs"]) + ".\n")
        assert [p["input"] for p in perfect] == [r["input"] + r["answer_prefix"] for r in rows]
        assert ruler_evaluate(perfect, RULER_METRIC[family]) == (100.0, [0, 1, 2])
        assert ruler_evaluate(ruler_call_api(f, lambda prompt, d: "\x07 "), RULER_METRIC[family])[0] == 0.0
        # our in-process score is RULER's, on the same predictions
        first = ruler_call_api(f, lambda prompt, d: f"It is {d['outputs'][0]}\x00 and so on")
        ours = score_generation([p["pred"] for p in first], read_jsonl(f))["score"]
        assert round(ours, 2) == ruler_evaluate(first, RULER_METRIC[family])[0]


def test_cli_answer_prefix_budget_and_template_options(capsys, tokenizer_dir, tokenizer, tmp_path):
    base = ["tasks", "export", "--tokenizer", str(tokenizer_dir), "--tasks", "niah_single_1", "--lengths", "600"]
    base += ["--num-samples", "1"]
    assert _run(capsys, *base, "--out", str(tmp_path / "a"))[0] == 0
    (a,) = read_jsonl(tmp_path / "a/600/niah_single_1/validation.jsonl")
    opts = ["--no-answer-prefix", "--tokens-to-generate", "200", "--template-tokens", "25"]
    assert _run(capsys, *base, *opts, "--out", str(tmp_path / "b"))[0] == 0
    d = json.loads((tmp_path / "b/600/niah_single_1/validation.jsonl").read_text().splitlines()[0])
    assert d["answer_prefix"] == "" and d["input"].endswith(a.answer_prefix)  # the prefix's text ends the input
    assert d["tokens_to_generate"] == 200 and d["length"] == len(tokenizer.tokenize(d["input"])) + 200
    assert d["length_w_model_temp"] == d["length"] + 25 <= 600
    man = json.loads((tmp_path / "b/manifest.json").read_text())
    assert man["settings"]["answer_prefix"] is False and man["settings"]["template_tokens"] == 25
    # the same folder with other options is refused with one line, as any other setting
    rc, _, err = _run(capsys, *base, "--out", str(tmp_path / "b"))
    assert rc == 2 and err.count("\n") == 1 and "tokens_to_generate = 200" in err


def test_cli_help_documents_the_format(capsys):
    with pytest.raises(SystemExit):
        main(["tasks", "--help"])
    out = capsys.readouterr().out
    for word in RULER_KEYS + ["token_position_answer", "OUT/<length>/<task>/validation.jsonl", "call_api.py"]:
        assert word in out
    for word in ["pydoc_data/topics.py", "PaulGrahamEssays.json", "--squad", "--hotpotqa", "--no-answer-prefix"]:
        assert word in out


def test_cli_squad_of_the_wrong_shape_is_one_line(capsys, tokenizer_dir, qa_files, tmp_path):
    rc, _, err = _run(
        capsys, "tasks", "export", "--tokenizer", str(tokenizer_dir), "--tasks", "qa_1", "--squad",
        str(qa_files["hotpotqa"]), "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert rc == 2 and err.count("\n") == 1 and "is not SQuAD 2.0 dev-v2.0.json" in err


def test_cli_rulers_essay_json_and_bad_json(capsys, tokenizer_dir, tmp_path):
    essay = tmp_path / "PaulGrahamEssays.json"
    essay.write_text(json.dumps({"text": "Startups   are\nhard. Most fail!  Some grow. " * 60}), encoding="utf-8")
    base = ["tasks", "export", "--tokenizer", str(tokenizer_dir), "--tasks", "niah_single_2", "--lengths", "500"]
    rc, _, _ = _run(capsys, *base, "--num-samples", "1", "--haystack", str(essay), "--out", str(tmp_path / "o"))
    assert rc == 0
    (s,) = read_jsonl(tmp_path / "o/500/niah_single_2/validation.jsonl")
    assert s.meta["haystack"] == "essay" and "Startups are hard. Most fail! Some grow." in s.input
    bad = tmp_path / "bad.json"
    bad.write_text('{"essay": 1}', encoding="utf-8")
    rc, _, err = _run(capsys, *base, "--haystack", str(bad), "--out", str(tmp_path / "p"))
    assert rc == 2 and err.count("\n") == 1 and "is not an essay file" in err
