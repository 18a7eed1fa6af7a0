"""The resume contract for the stages that tests/contracts/test_resume_contract.py does not kill: prepare,
eval, tasks export and the whole demo. Each is killed with SIGKILL at seeded random moments, the
same command is run again, and its outputs are compared bitwise with an uninterrupted run (timings
aside); a rerun of a finished output is a no-op."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from tests.contracts.test_resume_contract import _cli, _kill_when, snapshot

pytestmark = pytest.mark.slow

#: keys whose values are wall-clock measurements, machine facts or paths (differ between two folders)
VOLATILE = ("seconds", "time", "per_s", "created", "wall", "runtime", "path", "dir", "source", "out", "model")


def _stable(obj, root: str):
    """``obj`` with volatile entries removed and the folder ``root`` written as ``ROOT``."""
    if isinstance(obj, dict):
        return {k: _stable(v, root) for k, v in obj.items() if not any(t in k.lower() for t in VOLATILE)}
    if isinstance(obj, list):
        return [_stable(v, root) for v in obj]
    return obj.replace(root, "ROOT") if isinstance(obj, str) else obj


def _results(path: Path, root: Path) -> dict:
    return _stable(json.loads(path.read_text(encoding="utf-8")), str(root))


def _moments(rng: random.Random, took: float, k: int) -> list[float]:
    return sorted(rng.uniform(0.15, 0.9) * took for _ in range(k))


def _killed_after(argv: list[str], seconds: float) -> bool:
    start = time.monotonic()
    return _kill_when(argv, lambda: time.monotonic() - start >= seconds, 0)


def test_prepare_killed_then_rerun_equals_an_uninterrupted_run(tmp_path):
    rng = random.Random(7)
    argv = ["prepare", "--corpus", "stdlib", "--n", "128", "--vocab-size", "400", "--max-tokens", "150000"]
    ref = tmp_path / "ref"
    t0 = time.monotonic()
    assert _cli([*argv, "--out", str(ref)]).returncode == 0
    took = time.monotonic() - t0
    before = snapshot(ref)
    r = _cli([*argv, "--out", str(ref)])
    assert r.returncode == 0 and "up to date" in r.stdout and snapshot(ref) == before
    for i, at in enumerate(_moments(rng, took, 2)):
        out = tmp_path / f"p{i}"
        _killed_after([*argv, "--out", str(out)], at)
        r = _cli([*argv, "--out", str(out)])
        assert r.returncode == 0, r.stderr[-2000:]
        a, b = snapshot(ref), snapshot(out)
        assert a.keys() == b.keys()
        for name in a:
            if name != "manifest.json":
                assert a[name][1] == b[name][1], (at, name)
        assert _results(ref / "manifest.json", ref) == _results(out / "manifest.json", out)


def test_demo_killed_then_rerun_equals_an_uninterrupted_run(tmp_path):
    """The quick demo killed twice (seeded moments over its whole run), then the same command."""
    rng = random.Random(11)
    argv = ["demo", "--profile", "quick"]
    ref = tmp_path / "ref"
    t0 = time.monotonic()
    r = _cli([*argv, "--out", str(ref)])
    assert r.returncode == 0, r.stderr[-2000:]
    took = time.monotonic() - t0
    out = tmp_path / "killed"
    for at in _moments(rng, took, 2):
        _killed_after([*argv, "--out", str(out)], at)
    r = _cli([*argv, "--out", str(out)])
    assert r.returncode == 0, r.stderr[-2000:]
    assert _results(ref / "report" / "results.json", ref) == _results(out / "report" / "results.json", out)
    for name in ("uniform-seed0", "dense-self-seed0"):
        a, b = snapshot(ref / "runs" / name / "model"), snapshot(out / "runs" / name / "model")
        same = {k: v[1] for k, v in a.items() if k != "training_args.bin"}  # that pickle holds the folder's path
        assert same == {k: v[1] for k, v in b.items() if k != "training_args.bin"}, name
    assert not [p for p in out.rglob(".*.tmp")], "temporaries left behind"
    # the finished demo rerun rebuilds only the report: every model stays as it was
    models = snapshot(out / "runs")
    assert _cli([*argv, "--out", str(out)]).returncode == 0
    assert snapshot(out / "runs") == models


def test_eval_and_tasks_export_killed_then_rerun_equal_uninterrupted_runs(tmp_path):
    rng = random.Random(5)
    demo = tmp_path / "demo"  # a tiny prepared folder and base model from the quick demo's first stages
    r = _cli(["demo", "--profile", "quick", "--out", str(demo)])
    assert r.returncode == 0, r.stderr[-2000:]
    models = [str(demo / "base" / "model"), str(demo / "runs" / "uniform-seed0" / "model")]
    ev = ["eval", *models, "--names", "base,uniform", "--data", str(demo / "data" / "extend"), "--window", "64"]
    ev += ["--lengths", "64,128", "--tasks", "niah_single_1", "--num-samples", "1", "--max-sequences", "8"]
    ref = tmp_path / "eval-ref"
    t0 = time.monotonic()
    assert _cli([*ev, "--out", str(ref)]).returncode == 0
    took = time.monotonic() - t0
    for i, at in enumerate(_moments(rng, took, 2)):
        out = tmp_path / f"eval-{i}"
        _killed_after([*ev, "--out", str(out)], at)
        r = _cli([*ev, "--out", str(out)])
        assert r.returncode == 0, r.stderr[-2000:]
        assert _results(ref / "results.json", ref) == _results(out / "results.json", out), at

    tok = str(demo / "data" / "extend")
    ex = ["tasks", "export", "--tokenizer", tok, "--tasks", "all", "--lengths", "64,128,256", "--num-samples", "3"]
    xref = tmp_path / "x-ref"
    t0 = time.monotonic()
    assert _cli([*ex, "--out", str(xref)]).returncode == 0
    took = time.monotonic() - t0
    before = snapshot(xref)
    assert _cli([*ex, "--out", str(xref)]).returncode == 0
    assert {k: v[1] for k, v in snapshot(xref).items()} == {k: v[1] for k, v in before.items()}
    for i, at in enumerate(_moments(rng, took, 2)):
        out = tmp_path / f"x-{i}"
        _killed_after([*ex, "--out", str(out)], at)
        assert _cli([*ex, "--out", str(out)]).returncode == 0
        a, b = snapshot(xref), snapshot(out)
        assert a.keys() == b.keys()
        for name in a:
            if name != "manifest.json":
                assert a[name][1] == b[name][1], (at, name)
