"""The tasks inside ``tokenweight eval``: which tasks run, the generation budget each sample
reserves inside RULER's length, the haystack and QA options. Module cost: ~4 s."""

from __future__ import annotations

import json

import pytest

from tests.evaluate.tasks.conftest import SQUAD
from tokenweight.errors import UsageError
from tokenweight.evaluate.task_metrics import generation_budget, task_names, task_samples


def test_task_names_and_qa_files():
    from tokenweight.evaluate.tasks import TASKS

    assert task_names(None) == [t for t in TASKS if not t.startswith("qa_")]
    assert task_names(None, {"squad"})[-1] == "qa_1" and "qa_2" not in task_names(None, {"squad"})
    assert task_names([]) == []
    with pytest.raises(UsageError, match="task qa_2 needs its QA file: pass --hotpotqa FILE"):
        task_names(["vt", "qa_2"], {"squad"})
    with pytest.raises(UsageError, match="unknown task"):
        task_names(["nope"])


def test_each_sample_reserves_the_budget_it_is_generated_with(tmp_path):
    from tests.evaluate.test_runner import make_tokenizer
    from tokenweight.evaluate import tasks as T

    tok = make_tokenizer(tmp_path / "tok")
    args = (tok, ["niah_single_1", "vt"], [300], 1, 0, [0.5])
    fixed, _ = task_samples(*args, max_new_tokens=7)
    ruler, _ = task_samples(*args, max_new_tokens=0)
    auto, _ = task_samples(*args)
    for task, budget in (("niah_single_1", 128), ("vt", 30)):
        assert [s.tokens_to_generate for s in fixed[(task, 300)]] == [7]
        assert [s.tokens_to_generate for s in ruler[(task, 300)]] == [budget]
        # auto: the answer-sized budget of the same samples generated without a reserve
        bare = T.generate_samples(task, tok, 300, 1, 0, None, [0.5], tokens_to_generate=0)
        assert [s.tokens_to_generate for s in auto[(task, 300)]] == [generation_budget(tok, bare, None)]
        for s in fixed[(task, 300)] + ruler[(task, 300)] + auto[(task, 300)]:
            assert s.length == len(tok.tokenize(s.prompt)) + s.tokens_to_generate <= 300
    skipped = task_samples(tok, ["niah_single_1"], [150], 1, 0, [0.5], max_new_tokens=0)[1]
    assert skipped[0]["task"] == "niah_single_1" and "reserved for the answer" in skipped[0]["reason"]


def test_eval_reads_qa_files_and_haystack_options(tmp_path):
    from tests.evaluate.test_runner import make_model, make_tokenizer
    from tokenweight.evaluate.runner import evaluate_models
    from tokenweight.stages.evaluate import EvalConfig

    tok = make_tokenizer(tmp_path / "tok")
    model = make_model(tmp_path / "m", len(tok), seed=0)
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps(SQUAD), encoding="utf-8")
    cfg = EvalConfig(tasks=["qa_1"], squad=str(squad), lengths=[300], window=300, num_samples=1, depths=[0.5])
    res = evaluate_models({"m": model}, tokenizer=tok, config=cfg)
    assert [(r["task"], r["depth"]) for r in res["models"][0]["tasks"]] == [("qa_1", None)]
    assert res["config"]["task_inputs"]["qa"] == {"squad": res["config"]["task_inputs"]["qa"]["squad"]}
    with pytest.raises(UsageError, match="--haystack data needs --data"):
        evaluate_models({"m": model}, tokenizer=tok, config=EvalConfig(tasks=["niah_single_2"], haystack="data"))
    with pytest.raises(UsageError, match="task qa_1 needs its QA file"):
        evaluate_models({"m": model}, tokenizer=tok, config=EvalConfig(tasks=["qa_1"]))
    with pytest.raises(ValueError, match="ruler_threshold"):
        EvalConfig(ruler_threshold=101.0).validate()
