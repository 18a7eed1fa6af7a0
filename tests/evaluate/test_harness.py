"""``tokenweight eval --harness``: lm-evaluation-harness on every model, offline, on a local
multiple-choice task written here (YAML + JSONL). The accuracy in results.json equals what lm-eval
reports for the same model loaded by lm-eval itself (``model="hf"``) and a brute-force accuracy
from the model's log-likelihood of each choice; harness results are cached on their own; bad
input is one line before anything is written.

Cost: ~20 s, most of it lm-eval's task index (built once per process, ~7 s) and its imports."""

from __future__ import annotations

import json
import random

import pytest
import torch

from tests.train.train_helpers import make_tokenizer, tiny_model
from tokenweight.cli.main import main
from tokenweight.evaluate import harness as harness_mod
from tokenweight.evaluate import runner
from tokenweight.evaluate.results import check_results
from tokenweight.report.evaluation import format_tables
from tokenweight.stages.evaluate import EvalConfig, evaluate

pytest.importorskip("lm_eval")

TASK = "tw_toy_mc"
DOCS = 16
#: the run's task lengths: EvalConfig's default lengths, the shortest inside the window (no data: w = 256)
LENGTHS = [256, 512, 1024]


def _docs() -> list[dict]:
    rng = random.Random(0)
    word = lambda: f"w{rng.randrange(0, 60)}"  # noqa: E731
    return [
        {
            "question": " ".join(word() for _ in range(6)),
            "choices": [" ".join(word() for _ in range(1 + k % 2)) for k in range(4)],  # 1 or 2 tokens
            "answer": rng.randrange(4),
        }
        for _ in range(DOCS)
    ]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("harness")
    for name, seed in (("a", 1), ("b", 2)):
        make_tokenizer(root / name)
        tiny_model(n=64, seed=seed).save_pretrained(root / name)
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "toy.jsonl").write_text("".join(json.dumps(d) + "\n" for d in _docs()))
    (tasks / "toy.yaml").write_text(
        f"task: {TASK}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {tasks / 'toy.jsonl'}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{answer}}"\n'
        "metric_list:\n"
        "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n"
    )
    broken = (tasks / "toy.yaml").read_text().replace(TASK, "tw_broken").replace("toy.jsonl", "missing.jsonl")
    (tasks / "broken.yaml").write_text(broken)  # its data file does not exist
    return root


def config(tree, out, **kw) -> EvalConfig:
    return EvalConfig(
        models=[str(tree / "a"), str(tree / "b")],
        names=["a", "b"],
        tasks=["none"],
        harness=[TASK],
        harness_include=str(tree / "tasks"),
        out=str(out),
        **kw,
    )


def brute_force(folder, docs) -> tuple[float, float]:
    """(acc, acc_norm) from the model's log-likelihood of " " + choice after the question."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tokenweight.scoring import token_nll

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    acc = acc_norm = 0
    for d in docs:
        ctx = tok(d["question"])["input_ids"]  # BOS + the question's words
        lls = []
        for c in d["choices"]:
            whole = tok(d["question"] + " " + c)["input_ids"]
            assert whole[: len(ctx)] == ctx
            nll = token_nll(model, torch.tensor([whole]))[0]
            lls.append(-float(nll[len(ctx) - 1 :].sum(dtype=torch.float64)))
        acc += max(range(4), key=lambda i: lls[i]) == d["answer"]
        acc_norm += max(range(4), key=lambda i: lls[i] / len(d["choices"][i])) == d["answer"]  # lm-eval: chars
    return acc / len(docs), acc_norm / len(docs)


def row(results, name):
    (r,) = [r for r in next(m for m in results["models"] if m["name"] == name)["harness"]["tasks"] if r["task"] == TASK]
    return r


def test_harness_numbers_are_lm_evals_and_brute_force(tree, tmp_path):
    import lm_eval

    res = evaluate(config(tree, tmp_path / "out")).results
    check_results(res)
    for name in ("a", "b"):
        r = row(res, name)
        acc, acc_norm = brute_force(tree / name, _docs())
        assert r["metrics"]["acc,none"] == pytest.approx(acc, abs=1e-12)
        assert r["metrics"]["acc_norm,none"] == pytest.approx(acc_norm, abs=1e-12)
        assert r["samples"] == DOCS and r["num_fewshot"] == 0
        assert r["higher_is_better"] == {"acc": True, "acc_norm": True}
        # lm-eval on its own, loading the model itself
        direct = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={tree / name},dtype=float32",
            tasks=[TASK],
            task_manager=harness_mod.plan_harness(
                config(tree, tmp_path), lengths=LENGTHS, tokenizer_folder=str(tree / "a")
            ).manager(),
            device="cpu",
            log_samples=False,
        )["results"][TASK]
        assert r["metrics"]["acc,none"] == direct["acc,none"]
        assert r["metrics"]["acc_norm,none"] == direct["acc_norm,none"]
        assert r["metrics"]["acc_stderr,none"] == pytest.approx(direct["acc_stderr,none"])
    assert row(res, "a")["metrics"] != row(res, "b")["metrics"]  # two models, two sets of numbers
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["models"][0]["harness"] == res["models"][0]["harness"]
    assert saved["config"]["harness"] == [TASK]
    assert saved["models"][0]["harness"]["lm_eval_version"] == lm_eval.__version__
    table = format_tables(res)
    assert "lm-evaluation-harness" in table and f"{row(res, 'a')['metrics']['acc,none']:.3f}" in table
    assert (tmp_path / "out" / "table.txt").read_text().strip() == table


def test_harness_cached_on_its_own(tree, tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = evaluate(config(tree, out)).results
    monkeypatch.setattr(harness_mod, "run_harness", lambda *a, **k: pytest.fail("harness run again"))
    monkeypatch.setattr(runner, "_evaluate_one", lambda *a, **k: pytest.fail("suite run again"))
    again = evaluate(config(tree, out)).results
    assert [m["harness"] for m in again["models"]] == [m["harness"] for m in first["models"]]
    # other harness settings: only the harness runs again, the rest of each entry stays cached
    monkeypatch.undo()
    monkeypatch.setattr(runner, "_evaluate_one", lambda *a, **k: pytest.fail("suite run again"))
    limited = evaluate(config(tree, out, harness_limit=5)).results
    r = row(limited, "a")
    assert r["samples"] == 5 and limited["models"][0]["harness"]["limit"] == 5
    assert r["metrics"]["acc,none"] == pytest.approx(brute_force(tree / "a", _docs()[:5])[0], abs=1e-12)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tokenweight: error: "), err
    return err[0]


def test_bad_harness_input_is_one_line_before_anything_is_written(tree, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "evaluation_model", lambda *a, **k: pytest.fail("a model was loaded"))
    base = ["eval", str(tree / "a"), str(tree / "b"), "--names", "a,b", "--tasks", "none"]
    out = tmp_path / "out"
    include = ["--harness-include", str(tree / "tasks")]
    assert main([*base, "--harness", f"{TASK},tw_toy_mx", *include, "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert "unknown lm-eval task(s) tw_toy_mx" in line and TASK in line  # the close match is named
    assert main([*base, "--harness", "tw_broken", *include, "--out", str(out)]) == 2
    assert "lm-eval task 'tw_broken' cannot load its data" in one_error_line(capsys)
    assert main([*base, "--harness", TASK, "--harness-include", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "--harness-include" in one_error_line(capsys)
    assert main([*base, "--harness-limit", "3", "--out", str(out)]) == 2
    assert "--harness-limit applies to lm-eval tasks" in one_error_line(capsys)
    assert main([*base, "--harness", TASK, "--harness-num-fewshot", "-1", "--out", str(out)]) == 2
    assert "--harness-num-fewshot must be an integer >= 0" in one_error_line(capsys)
    assert not out.exists() and not list(tmp_path.glob(".*lock"))


def test_shown_rows_and_metric_labels():
    from tokenweight.evaluate.results import metrics_of, shown_rows

    rows = [
        {"task": "mmlu", "group": True, "metrics": {"acc,none": 0.5, "acc_stderr,none": 0.1}},
        {"task": "mmlu_anatomy", "group": False, "metrics": {"acc,none": 0.4, "acc_stderr,none": "N/A"}},
        {"task": "gsm8k", "group": False, "metrics": {"exact_match,strict-match": 0.2}},
    ]
    assert [r["task"] for r in shown_rows({"requested": ["mmlu"], "tasks": rows})] == ["mmlu"]  # the group's aggregate
    # a tag has no row of its own: every task row is shown
    assert [r["task"] for r in shown_rows({"requested": ["a_tag"], "tasks": rows})] == ["mmlu_anatomy", "gsm8k"]
    assert metrics_of(rows[0]) == [("acc,none", "acc", "acc_stderr,none")]
    assert metrics_of(rows[2]) == [("exact_match,strict-match", "exact_match (strict-match)", None)]
