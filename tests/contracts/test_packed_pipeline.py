"""The whole pipeline on packed data, from the command line: prepare --pack, pretrain, score
--verify, train --weight-norm document (frozen), eval and report with the heat map of a packed
row. Each stage's numbers are tested elsewhere against brute force (tests/train/test_trainer_packed.py,
tests/evaluate/test_packed.py, tests/scorecache/test_scorecache.py); this checks that they connect."""

import json

from tests.data.conftest import make_docs
from tokenweight.cli.main import main
from tokenweight.data import load_prepared
from tokenweight.data.tokenizer import train_tokenizer


def test_packed_pipeline_end_to_end(tmp_path, capsys):
    src, tok = tmp_path / "src", tmp_path / "tok"
    src.mkdir()
    for i, text in enumerate(make_docs(30, seed=5, lines=(1, 2))):
        (src / f"doc{i:02d}.txt").write_text(text)
    train_tokenizer(make_docs(30, seed=7), vocab_size=320).save_pretrained(str(tok))
    data, pre, scores, run, ev, rep = (tmp_path / x for x in ("data", "pre", "scores", "run", "eval", "report"))
    quiet = ["--report-to", "none", "--warmup-steps", "0"]
    argv = ["prepare", str(src), "--tokenizer", str(tok), "--n", "64", "--val-fraction", "0.2", "--pack"]
    assert main([*argv, "--out", str(data)]) == 0
    assert "packed, padding" in capsys.readouterr().out
    ds, manifest = load_prepared(data)
    assert manifest["options"]["packed"] and any(len(x) > 1 for x in ds["validation"]["doc_lengths"])
    assert main(["pretrain", "--init", "tiny", "--data", str(data), "--window", "16", "--max-steps", "2",
                 "--batch-size", "2", "--out", str(pre), *quiet]) == 0  # fmt: skip
    model = str(pre / "model")
    assert main(["score", "--data", str(data), "--scorer", model, "--window", "16", "--verify", "3",
                 "--out", str(scores)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "verified 3" in out or "3 sequences" in out, out
    assert main(["train", "--model", model, "--data", str(data), "--scheme", "dense:0.75", "--scorer", "frozen",
                 "--scores", str(scores), "--window", "16", "--weight-norm", "document", "--max-steps", "2",
                 "--batch-size", "2", "--out", str(run), *quiet]) == 0  # fmt: skip
    assert json.loads((run / "run_config.json").read_text())["weight_norm"] == "document"
    assert main(["eval", model, str(run / "model"), "--names", "base,run-seed0", "--data", str(data),
                 "--window", "16", "--lengths", "64", "--tasks", "niah_single_1", "--num-samples", "1",
                 "--longppl-trunc-len", "12", "--longppl-sliding-window", "4", "--out", str(ev)]) == 0  # fmt: skip
    results = json.loads((ev / "results.json").read_text())
    assert results["data"]["packed"] is True and results["data"]["documents"] > results["data"]["sequences"]
    assert main(["report", str(run), "--evaluation", str(ev), "--heatmap-model", str(run / "model"),
                 "--heatmap-data", str(data), "--out", str(rep)]) == 0  # fmt: skip
    sample = json.loads((rep / "results.json").read_text())["sample"]
    assert sample["doc_starts"] and sample["doc_starts"][0] == 0 and len(sample["doc_starts"]) > 1
