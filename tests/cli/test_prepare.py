"""``tokenweight prepare`` through the CLI: options, YAML config, up-to-date reruns, clean errors."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tokenweight.cli.main import main


def _corpus(root, count=8):
    """Seeded pseudo-code documents in a folder (long enough for several 32-token sequences)."""
    rng = random.Random(0)
    root.mkdir(parents=True)
    words = "alpha beta gamma delta value index count items total return print".split()
    for i in range(count):
        lines = ["    " * rng.randint(0, 2) + " ".join(rng.choices(words, k=rng.randint(2, 6))) for _ in range(40)]
        (root / f"doc{i}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_prepare_then_up_to_date(tmp_path, capsys):
    src, out = _corpus(tmp_path / "src"), tmp_path / "out"
    argv = ["prepare", str(src), "--out", str(out), "--n", "32", "--vocab-size", "300", "--val-fraction", "0.25"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "n=32" in first and "train" in first
    m = json.loads((out / "manifest.json").read_text())
    assert m["n"] == 32 and m["options"]["val_fraction"] == 0.25 and m["counts"]["validation"]["documents"] == 2
    assert main(argv) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(argv + ["--force"]) == 0
    assert "up to date" not in capsys.readouterr().out


def test_yaml_config_and_flag_override(tmp_path, capsys):
    src, out = _corpus(tmp_path / "src"), tmp_path / "out"
    cfg = tmp_path / "prep.yaml"
    cfg.write_text(
        f"inputs: [{json.dumps(str(src))}]\nn: 48\nvocab-size: 300\nmin_tail: 2\n"
        "episodes_per_1k: 4\nepisode_distance: '10:40'\n"
    )
    assert main(["prepare", "--config", str(cfg), "--out", str(out), "--n", "40"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["n"] == 40  # the flag wins over the config
    assert m["options"]["min_tail"] == 2 and m["options"]["inputs"] == [str(src)]
    assert m["episodes"]["enabled"] and (m["episodes"]["min_distance"], m["episodes"]["max_distance"]) == (10, 40)


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["prepare", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--out",
        "--corpus",
        "--text-field",
        "--tokenizer",
        "--vocab-size",
        "--n",
        "--val-fraction",
        "--min-tail",
        "--max-documents",
        "--max-tokens",
        "--skip-documents",
        "--after",
        "--episodes-per-1k",
        "--episode-distance",
        "--episode-digits",
        "--seed",
        "--workers",
        "--force",
        "--pack",
    ):
        assert flag in text


@pytest.mark.parametrize(
    "extra,match",
    [
        (["MISSING"], "does not exist"),
        (["SRC", "--n", "1"], "--n must be an integer in [2, 1048576], got 1"),
        (["SRC", "--n", "100000000"], "--n must be an integer in [2, 1048576], got 100000000"),
        (["EMPTY"], "no training sequences"),
        (["SRC", "--episodes-per-1k", "2", "--episode-distance", "5-10"], "episode distance"),
        (["SRC", "--val-fraction", "1.5"], "--val-fraction"),
        (["SRC", "--tokenizer", "NOTOK/x/y"], "does not exist"),
        (["SRC", "--corpus", "stdlib"], "both input paths and --corpus"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, extra, match):
    src = _corpus(tmp_path / "src")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("")
    names = {
        "SRC": str(src),
        "MISSING": str(tmp_path / "missing"),
        "EMPTY": str(tmp_path / "empty"),
        "NOTOK/x/y": str(tmp_path / "no" / "tok"),
    }
    argv = ["prepare"] + [names.get(a, a) for a in extra] + ["--out", str(tmp_path / "out"), "--vocab-size", "300"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tokenweight: error: ") and match in err[0]
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_missing_out_is_a_usage_error(capsys):
    assert main(["prepare", "--corpus", "stdlib"]) == 2
    assert "--out is required" in capsys.readouterr().err


def test_console_script_bad_input(tmp_path):
    exe = Path(sys.executable).parent / "tokenweight"  # the installed console script
    r = subprocess.run(
        [str(exe), "prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("tokenweight: error: input")
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()
