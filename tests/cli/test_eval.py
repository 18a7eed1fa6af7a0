"""`tokenweight eval` end to end: two tiny models side by side on a tiny prepared folder; bad input."""

import json

import pytest

from tests.evaluate.test_runner import make_model, make_prepared, make_tokenizer  # noqa: E402
from tokenweight.cli.main import main  # noqa: E402


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_eval")
    tok = make_tokenizer(tmp / "tok")
    make_model(tmp / "m1", len(tok), 0)
    make_model(tmp / "m2", len(tok), 1)
    make_prepared(tmp / "data", tok)
    return tmp


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("tokenweight: error: ")
    return err[0]


def test_eval_two_models_no_tasks(tree, capsys):
    out = tree / "out"
    rc = main(
        [
            "eval",
            str(tree / "m1"),
            str(tree / "m2"),
            "--names",
            "base,weighted",
            "--data",
            str(tree / "data"),
            "--window",
            "16",
            "--longppl-trunc-len",
            "16",
            "--longppl-sliding-window",
            "8",
            "--tasks",
            "none",
            "--out",
            str(out),
            "--batch-size",
            "2",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert [m["name"] for m in res["models"]] == ["base", "weighted"]
    assert res["config"]["window"] == 16 and res["config"]["tasks"] == []
    assert res["evaluator"]["name"] == "base" and res["evaluator"]["trunc_len"] == 16
    assert res["config"]["longppl_sliding_window"] == 8
    assert "base" in printed and "weighted" in printed and "LongPPL" in printed
    assert (out / "table.txt").is_file() and (out / "ppl_by_position.png").stat().st_size > 0


def test_config_file_sets_options(tree, tmp_path, capsys):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        f"models: [{tree / 'm1'}]\ndata: {tree / 'data'}\nwindow: 16\ntasks: none\nposition_edges: [0, 24, 48]\n"
        f"out: {tmp_path / 'o'}\n"
    )
    assert main(["eval", "--config", str(cfg)]) == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["config"]["position_edges"] == [0, 24, 48]
    assert [m["name"] for m in res["models"]] == ["m1"]


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["eval", "{tmp}/nope"], "does not exist"),
        (["eval"], "no MODEL given"),
        (["eval", "{tmp}/m1", "{tmp}/m2", "--names", "a"], "--names has 1 names for 2 models"),
        (["eval", "{tmp}/m1", "--lengths", "256,x"], "--lengths"),
        (["eval", "{tmp}/m1", "--data", "{tmp}/missing"], "--data"),
        (["eval", "{tmp}/m1", "--num-samples", "0"], "--num-samples must be an integer >= 1, got 0"),
        (["eval", "{tmp}/m1", "--evaluator", "zzz"], "--evaluator"),
        (["eval", "{tmp}/m1", "--position-edges", "0,5,5"], "--position-edges must be non-negative and strictly"),
        (["eval", "{tmp}/m1", "--max-new-tokens", "-1"], "--max-new-tokens"),
        (["eval", "{tmp}/m1", "--longppl-trunc-len", "0"], "--longppl-trunc-len must be an integer >= 1, got 0"),
        (["eval", "{tmp}/m1", "--data", "{tmp}/data", "--tasks", "niah_single_1,nope"], "unknown task(s) nope"),
        (["eval", "{tmp}/m1", "--data", "{tmp}/m2"], "is not a complete prepared folder"),
    ],
)
def test_bad_input_exits_2_with_one_line(tree, capsys, argv, needle):
    rc = main([a.replace("{tmp}", str(tree)) for a in argv])
    assert rc == 2
    assert needle in one_error_line(capsys)


def test_model_with_another_tokenizer_is_refused_before_any_model_runs(tree, capsys):
    """Every model folder that ships a tokenizer must ship the data's (identity, not size): one
    line naming the model and the data; a model saved with the data's own tokenizer is evaluated."""
    from tests.tiny_models import save_tiny_llama, tiny_bpe

    data = tree / "data"
    other = tiny_bpe(["a different corpus, other merges"] * 20, 300)
    save_tiny_llama(tree / "foreign", 700, tokenizer=other, num_attention_heads=2, max_position_embeddings=256)
    capsys.readouterr()
    common = ["--data", str(data), "--window", "16", "--tasks", "none", "--max-sequences", "1"]
    rc = main(["eval", str(tree / "m1"), str(tree / "foreign"), *common, "--out", str(tree / "refused")])
    assert rc == 2
    line = one_error_line(capsys)
    assert line.startswith(
        f"tokenweight: error: model {str(tree / 'foreign')!r} uses a different tokenizer than the data {str(data)!r} ("
    )
    assert line.endswith(
        f": prepare the data with --tokenizer {tree / 'foreign'}, or pass a model trained with the data's tokenizer"
    )
    assert not (tree / "refused" / "results.json").exists()
    save_tiny_llama(tree / "own", 720, tokenizer=data / "tokenizer", num_attention_heads=2, max_position_embeddings=256)
    assert main(["eval", str(tree / "own"), *common, "--out", str(tree / "accepted")]) == 0
