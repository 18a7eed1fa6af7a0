"""The results schema: assemble_results and the validator's messages."""

import copy
import json

import pytest

from tokenweight.report.schema import SchemaError, assemble_results, run_label, validate_results


def test_assemble_embeds_eval_entries(results, evaluation):
    assert results["schema_version"] == 1
    assert results["base"]["eval"] == evaluation["models"][0]
    assert results["runs"][2]["eval"]["name"] == "dense_s0"
    assert "models" not in results["evaluation"] and results["evaluation"]["evaluator"]["name"] == "base"
    assert json.loads(json.dumps(results)) == results  # plain JSON


def test_assemble_unknown_model(evaluation):
    with pytest.raises(SchemaError, match="'nope' is not a model of the evaluation"):
        assemble_results(
            evaluation,
            config={"n": 1024, "window": 256},
            runs=[{"name": "nope", "scheme": "uniform", "scorer": "none", "seed": 0}],
        )


def test_run_label():
    assert run_label({"scheme": "uniform", "scorer": "none"}) == "uniform"
    assert run_label({"scheme": "dense:0.75", "scorer": "self"}) == "dense:0.75 (self)"
    assert run_label({"scheme": "dense:0.75", "scorer": "self", "label": "D"}) == "D"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.update(schema_version=2), r"schema_version: is 2"),
        (lambda r: r["config"].pop("n"), r"config: lacks key\(s\) n"),
        (lambda r: r["config"].update(window=2048), r"2 <= window <= n"),
        (lambda r: r["runs"][1].update(name="uniform_s0"), r"runs\[1\]\.name: 'uniform_s0' is empty or not unique"),
        (lambda r: r["runs"][1].update(name="base"), r"not unique"),
        (lambda r: r["runs"][0].update(scorer="frozn"), r"runs\[0\]\.scorer: is 'frozn'"),
        (lambda r: r["runs"][0].update(seed=True), r"runs\[0\]\.seed: must be an integer"),
        (lambda r: r["runs"][3].update(seed=0), r"runs\[3\]\.seed: 0 appears twice"),
        (lambda r: r["runs"][2].update(label="uniform"), r"groups runs of different settings"),
        (lambda r: r["runs"][0]["eval"].update(name="x"), r"runs\[0\]\.eval\.name: is 'x'"),
        (lambda r: r["runs"][0]["eval"].pop("tasks"), r"runs\[0\]\.eval: lacks key\(s\) tasks"),
        (
            lambda r: r["runs"][0]["eval"]["perplexity"]["short"].update(ppl=float("nan")),
            r"runs\[0\]\.eval\.perplexity\.short\.ppl: holds a non-finite number",
        ),
        (lambda r: r.update(verdict={"text": 3}), r"verdict\.text: must be a string"),
        (lambda r: r["machine"].update(obj=object()), r"machine\.obj: holds a value of type object"),
    ],
)
def test_validator_names_the_path(results, mutate, message):
    bad = copy.deepcopy(results)
    mutate(bad)
    with pytest.raises(SchemaError, match=message):
        validate_results(bad)
    assert validate_results(results) is results
