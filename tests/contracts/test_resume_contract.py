"""The resume contract of every stage (docs/TRAINING.md, "Resuming"; docs/DATA.md; docs/SCORING.md).

kill -9 at any moment, then the same command: it continues and ends bitwise where an uninterrupted
run ends (a run killed before its first checkpoint starts over); a finished stage rerun with the
same settings is a no-op; other settings are refused with one line unless --force, which replaces
the output only once the new one is complete; a second writer of an output is refused at once;
damaged files (a flipped byte, a truncated file) are refused with one line naming the file.

The unit tests build run folders by hand or run the stages in-process; the slow test runs the CLI
as subprocesses and kills them at seeded random moments.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.scorecache.test_scorecache import make_scorer
from tests.train.train_helpers import make_prepared
from tokenweight.cli.main import main  # noqa: E402
from tokenweight.errors import UsageError  # noqa: E402
from tokenweight.outputs import lock_path, output_lock  # noqa: E402
from tokenweight.train.runner import (  # noqa: E402
    CHECKPOINT_MARK,
    _tidy,
    last_complete_checkpoint,
    plan_run,
    staging_dir,
)

N, W = 64, 16
TINY = ["--init", "tiny", "--batch-size", "2", "--lr", "3e-3", "--warmup-steps", "1"]
#: log fields that measure time: the only ones that differ between two runs of the same command
TIME_KEYS = {"step_time", "tokens_per_s", "train_runtime", "train_tokens_per_second"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    data = make_prepared(root / "data", n=N, count=10, short_every=4)
    return {"root": root, "data": data, "scorer": make_scorer(root / "scorer", tokenizer=data / "tokenizer")}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tokenweight: error: "), err
    return err[0]


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder`` with its mtime and bytes."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()
    }


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def log_records(out: Path) -> list[dict]:
    lines = (out / "log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIME_KEYS} for x in lines]


def assert_same_run(a: Path, b: Path) -> None:
    """Bitwise the same final weights, the same log (timings aside), the same step and token counts."""
    wa, wb = weights(a / "model"), weights(b / "model")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert log_records(a) == log_records(b)
    sa, sb = (json.loads((x / "summary.json").read_text()) for x in (a, b))
    assert (sa["steps"], sa["tokens"], sa["final_loss"]) == (sb["steps"], sb["tokens"], sb["final_loss"])


def assert_same_cache(a: Path, b: Path) -> None:
    """Same files; meta.json and complete.json (checksums included) equal; shards equal bitwise."""
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


# ----------------------------------------------------------------------------- plan_run (no training)


def _settings(**changes) -> dict:
    return {"command": "train", "lr": 0.003, "seed": 0, "scheme": "uniform", "logging_steps": 1, **changes}


def _fake_checkpoint(work: Path, step: int, complete: bool = True) -> Path:
    ck = work / f"checkpoint-{step}"
    ck.mkdir(parents=True)
    (ck / "model.safetensors").write_bytes(b"weights")
    if complete:
        (ck / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        (ck / CHECKPOINT_MARK).write_text(json.dumps({"step": step}))
    return ck


def _started(out: Path, settings: dict) -> Path:
    out.mkdir(parents=True)
    (out / "settings.json").write_text(json.dumps(settings))
    (out / "run_config.json").write_text(json.dumps(settings))
    return out


def test_plan_run_states(tmp_path):
    s = _settings()
    assert plan_run(tmp_path / "new", s).state == "fresh"  # missing
    (tmp_path / "empty").mkdir()
    assert plan_run(tmp_path / "empty", s).state == "fresh"

    out = _started(tmp_path / "run", s)
    assert plan_run(out, s).state == "fresh"  # killed before its first checkpoint: starts over
    _fake_checkpoint(out, 2)
    _fake_checkpoint(out, 4)
    _fake_checkpoint(out, 6, complete=False)  # a kill during HF's save: no marker
    (out / "checkpoint-8").mkdir()  # a kill right after the folder was made
    plan = plan_run(out, s)
    assert (plan.state, plan.checkpoint, plan.work) == ("resume", out / "checkpoint-4", out)
    assert last_complete_checkpoint(out) == out / "checkpoint-4"
    assert plan_run(out, {**s, "logging_steps": 10, "save_steps": 7}).state == "resume"  # resumable changes

    (out / "model").mkdir()
    (out / "summary.json").write_text(json.dumps({"steps": 6}))
    plan = plan_run(out, s)
    assert (plan.state, plan.summary) == ("done", {"steps": 6}) and "nothing to do" in plan.describe()


def test_plan_run_refuses_other_settings_and_foreign_folders(tmp_path):
    out = _started(tmp_path / "run", _settings())
    with pytest.raises(UsageError) as e:
        plan_run(out, _settings(lr=0.01))
    msg = str(e.value)
    assert "\n" not in msg and "holds a started run with lr = 0.003, this command has lr = 0.01" in msg
    assert "rerun with the same settings, choose another --out, or pass --force" in msg
    with pytest.raises(UsageError, match="max_steps = None, this command has max_steps = 9"):
        plan_run(out, _settings(max_steps=9))  # not resumable: it shapes the schedule
    (out / "model").mkdir()
    (out / "summary.json").write_text("{}")
    with pytest.raises(UsageError, match="holds a finished run with seed = 0, this command has seed = 1"):
        plan_run(out, _settings(seed=1))

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="exists and is not a run folder"):
        plan_run(foreign, _settings())
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        plan_run(tmp_path / "file", _settings())


def test_forced_plan_works_in_a_staging_sibling(tmp_path):
    out = _started(tmp_path / "run", _settings())
    new = _settings(lr=0.01)
    plan = plan_run(out, new, force=True)
    assert (plan.state, plan.work, plan.staged) == ("fresh", staging_dir(out), True)
    assert plan.work == tmp_path / ".run.force"
    _tidy(plan, {"lr": 0.01})  # the staging folder is set up; the old run is not touched
    assert json.loads((out / "settings.json").read_text())["lr"] == 0.003
    _fake_checkpoint(plan.work, 2)
    again = plan_run(out, new, force=True)  # the same forced command after a kill continues there
    assert (again.state, again.checkpoint) == ("resume", plan.work / "checkpoint-2")
    other = plan_run(out, _settings(lr=0.02), force=True)  # another forced command starts it over
    assert other.state == "fresh"


def test_tidy_drops_partial_checkpoints_and_temporaries(tmp_path):
    s = _settings()
    out = _started(tmp_path / "run", s)
    _fake_checkpoint(out, 2)
    _fake_checkpoint(out, 4, complete=False)
    (out / ".model.abcd1234.tmp").mkdir()
    (out / "log.jsonl").write_text('{"step": 1}\n')
    plan = plan_run(out, s)
    _tidy(plan, s)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-2", "log.jsonl", "run_config.json", "settings.json"]
    fresh = plan_run(_started(tmp_path / "run2", s), s)
    (fresh.out / "log.jsonl").write_text('{"step": 1}\n')
    _fake_checkpoint(fresh.out, 2, complete=False)
    _tidy(fresh, s)  # a fresh start empties the folder but for the settings
    assert sorted(p.name for p in fresh.out.iterdir()) == ["run_config.json", "settings.json"]


# ----------------------------------------------------------------------------- one writer per output

HOLD = """
import sys, time
from tokenweight.outputs import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def _hold(path: Path) -> subprocess.Popen:
    """A process holding the lock of ``path`` (as a live writer would), once it said so."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_at_once_and_a_killed_one_leaves_no_lock(env, tmp_path, capsys):
    from tokenweight.evaluate.tasks.export import export_suite
    from tokenweight.identity import load_tokenizer
    from tokenweight.scorecache import compute_scores

    cache = tmp_path / "scores"
    compute_scores(cache, env["data"], env["scorer"], window=W, shard_size=3, device="cpu")
    before = snapshot(cache)
    holder = _hold(cache)
    try:
        t0 = time.monotonic()
        with pytest.raises(UsageError) as e:
            compute_scores(cache, env["data"], env["scorer"], window=W, shard_size=3, device="cpu", force=True)
        assert time.monotonic() - t0 < 5  # at once: never waits for the writer
        msg = str(e.value)
        assert "\n" not in msg and f"is being written by another process (pid {holder.pid}" in msg
        assert snapshot(cache) == before  # the first writer's output is untouched
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the killed holder's lock: the same command proceeds (a complete cache: no-op)
    assert compute_scores(cache, env["data"], env["scorer"], window=W, shard_size=3, device="cpu")["already_complete"]
    assert not lock_path(cache).exists()  # released and removed

    run, tasks = tmp_path / "run", tmp_path / "tasks"
    for out in (run, tasks):
        holder = _hold(out)
        try:
            capsys.readouterr()
            if out == run:
                assert main(["train", "--data", str(env["data"]), "--out", str(run), *TINY, "--max-steps", "2"]) == 2
                assert "is being written by another process" in one_line_error(capsys)
            else:
                tok = load_tokenizer(env["data"] / "tokenizer")
                with pytest.raises(UsageError, match="is being written by another process"):
                    export_suite(out, tok, ["fwe"], [60], 1, 0)
            assert not out.exists()
        finally:
            holder.kill()
            holder.wait()
    with output_lock(tmp_path / "x"):  # re-entrant within one process
        with output_lock(tmp_path / "x"):
            pass


# ----------------------------------------------------------------------------- damaged files


def _flip_middle_data_byte(path: Path) -> None:
    """Flip one byte in the middle of a safetensors file's tensor data (not its header)."""
    blob = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(blob[:8], "little")
    blob[start + (len(blob) - start) // 2] ^= 0x01
    path.write_bytes(bytes(blob))


def test_flipped_byte_in_a_score_shard_is_refused_then_recomputed(env, tmp_path):
    from tokenweight.scorecache import ScoreCache, compute_scores

    cache, ref = tmp_path / "c", tmp_path / "ref"
    for out in (cache, ref):
        compute_scores(out, env["data"], env["scorer"], window=W, shard_size=3, device="cpu")
    assert_same_cache(cache, ref)  # two runs: byte-identical files (checksums included)
    shard = cache / "shards" / "00001.safetensors"
    _flip_middle_data_byte(shard)
    opened = ScoreCache.open(cache)  # cheap: headers only
    opened.read([0])  # shard 0 is intact
    with pytest.raises(UsageError) as e:
        opened.read([4])
    msg = str(e.value)
    assert "\n" not in msg and f"score cache shard {str(shard)!r} is corrupted" in msg
    assert f"rerun `tokenweight score --out {cache}` with the same options" in msg and "--force" in msg
    # the same command recomputes exactly the damaged shard
    s = compute_scores(cache, env["data"], env["scorer"], window=W, shard_size=3, device="cpu")
    assert (s["computed"], s["already_complete"]) == (3, False)
    assert_same_cache(cache, ref)


def _corpus(root: Path) -> Path:
    root.mkdir()
    rng = random.Random(0)
    words = "alpha beta gamma delta value result index count items total".split()
    for i in range(8):
        (root / f"doc{i}.txt").write_text(" ".join(rng.choice(words) for _ in range(300)) + "\n")
    return root


def test_prepared_data_checksums_and_settings(tmp_path):
    from tokenweight.data import load_prepared
    from tokenweight.data.pipeline import prepare
    from tokenweight.stages.prepare import PrepareConfig

    corpus = _corpus(tmp_path / "corpus")
    cfg = dict(inputs=[str(corpus)], n=32, vocab_size=300, val_fraction=0.25)
    out = tmp_path / "data"
    manifest, wrote = prepare(out, PrepareConfig(**cfg))
    assert wrote and set(manifest["checksums"]) >= {
        "train/data-00000-of-00001.arrow",
        "validation/data-00000-of-00001.arrow",
        "tokenizer/tokenizer.json",
    }
    before = snapshot(out)
    assert prepare(out, PrepareConfig(**cfg)) == (manifest, False)  # up to date: a no-op
    with pytest.raises(UsageError) as e:
        prepare(out, PrepareConfig(**{**cfg, "n": 64}))
    assert "\n" not in str(e.value) and "was prepared with n = 32, this command has n = 64" in str(e.value)
    assert snapshot(out) == before

    arrow = out / "train" / "data-00000-of-00001.arrow"
    size = arrow.stat().st_size
    with open(arrow, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(UsageError) as e:
        load_prepared(out)
    msg = str(e.value)
    assert "\n" not in msg and f"prepared file {str(arrow)!r} is truncated or damaged ({size // 2} bytes" in msg
    assert f"--out {out}` with the same settings (or --force)" in msg
    assert prepare(out, PrepareConfig(**cfg))[1]  # the same command rebuilds a damaged folder
    assert load_prepared(out)[1]["checksums"] == manifest["checksums"]
    tok = out / "tokenizer" / "tokenizer.json"
    tok.write_text(tok.read_text().replace("alpha", "alphb", 1))  # same size, other bytes
    with pytest.raises(UsageError, match=r"tokenizer\.json' is corrupted \(sha256"):
        load_prepared(out)


def test_damaged_evaluation_cache_entry_is_refused(tmp_path):
    from tokenweight.evaluate.cache import read_record as _read_cached
    from tokenweight.evaluate.cache import write_record as _write_cached

    path = tmp_path / "entry.json"
    _write_cached(path, {"name": "m", "perplexity": {"overall": {"ppl": 3.5}}}, None)
    assert _read_cached(path)["entry"]["perplexity"]["overall"]["ppl"] == 3.5
    path.write_text(path.read_text().replace("3.5", "4.5"))
    with pytest.raises(UsageError, match="evaluation cache entry .* is corrupted .*: delete it and rerun"):
        _read_cached(path)
    path.write_text(path.read_text()[:20])
    with pytest.raises(UsageError, match="is truncated or damaged"):
        _read_cached(path)


# ----------------------------------------------------------------------------- training runs in-process


def _train(env, out, *extra):
    return main(["train", "--data", str(env["data"]), "--out", str(out), *TINY, "--seed", "1", *extra])


def test_finished_run_rerun_is_a_no_op_and_force_replaces_only_when_done(env, tmp_path, capsys, monkeypatch):
    from tokenweight.train.trainer import WeightedTrainer

    out = tmp_path / "run"
    assert _train(env, out, "--max-steps", "4", "--save-steps", "2") == 0
    capsys.readouterr()
    before = snapshot(out)
    assert _train(env, out, "--max-steps", "4", "--save-steps", "2") == 0  # the same command again
    assert "nothing to do" in capsys.readouterr().out
    assert snapshot(out) == before  # no step trained, no file rewritten
    assert _train(env, out, "--max-steps", "4", "--lr", "1e-2") == 2
    assert "holds a finished run with lr = 0.003, this command has lr = 0.01" in one_line_error(capsys)
    assert _train(env, out, "--max-steps", "6") == 2  # more steps is another run: not "done"
    assert "max_steps = 4, this command has max_steps = 6" in one_line_error(capsys)

    # --force with other settings, killed mid-run: the old run is still whole, the new one continues
    forced = ["--max-steps", "4", "--save-steps", "2", "--lr", "1e-2", "--force"]
    original, calls = WeightedTrainer.training_step, {"n": 0}

    def interrupted(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 4:  # during step 4: checkpoint-2 of the new run exists
            raise KeyboardInterrupt
        return original(self, *a, **kw)

    monkeypatch.setattr(WeightedTrainer, "training_step", interrupted)
    assert _train(env, out, *forced) == 130
    monkeypatch.setattr(WeightedTrainer, "training_step", original)
    assert snapshot(out) == before
    assert last_complete_checkpoint(staging_dir(out)) == staging_dir(out) / "checkpoint-2"
    capsys.readouterr()
    assert _train(env, out, *forced) == 0
    assert "resumed from checkpoint-2" in capsys.readouterr().out
    assert not staging_dir(out).exists() and json.loads((out / "settings.json").read_text())["lr"] == 0.01
    ref = tmp_path / "ref"
    assert _train(env, ref, *forced[:-1]) == 0
    assert_same_run(out, ref)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging, lock or temporary


# ----------------------------------------------------------------------------- kill -9 at random moments


def _cli(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tokenweight.cli.main", *argv], capture_output=True, text=True, timeout=300, **kw
    )


def _kill_when(argv: list[str], ready, delay: float) -> bool:
    """Start the command, SIGKILL it ``delay`` s after ``ready()`` first holds; whether it was
    killed (rather than finished first)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenweight.cli.main", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    return proc.wait() == -signal.SIGKILL


def _log_lines(out: Path) -> int:
    try:
        return (out / "log.jsonl").read_bytes().count(b"\n")
    except OSError:
        return 0


@pytest.mark.slow
def test_kill_9_at_random_moments_then_the_same_command_equals_an_uninterrupted_run(env, tmp_path):
    rng = random.Random(20250117)
    steps, every = 24, 4
    train = [
        "train",
        "--data",
        str(env["data"]),
        *TINY,
        "--scheme",
        "sparse:0.5",
        "--scorer",
        "self",
        "--window",
        str(W),
        "--max-steps",
        str(steps),
        "--save-steps",
        str(every),
        "--seed",
        "1",
    ]  # 5 batches per epoch: resumed runs cross epochs; sparse ties use the seeded generator
    ref = tmp_path / "train-ref"
    t0 = time.monotonic()
    r = _cli([*train, "--out", str(ref)])
    assert r.returncode == 0, r.stderr[-2000:]
    took = time.monotonic() - t0

    # a finished run, rerun: a no-op that says so, every file untouched
    before = snapshot(ref)
    r = _cli([*train, "--out", str(ref)])
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.stderr[-2000:]
    assert snapshot(ref) == before

    # kill moments: during start-up (no checkpoint yet), after a few steps before the first
    # checkpoint, right as a checkpoint folder appears (a save in progress), and two later steps
    moments = [
        ("time", rng.uniform(0.2, 0.8) * took),
        ("steps", rng.randint(1, every - 1)),
        ("checkpoint", rng.choice(range(every, steps, every))),
        ("steps", rng.randint(every + 1, steps // 2)),
        ("steps", rng.randint(steps // 2 + 1, steps - 1)),
    ]
    for i, (kind, at) in enumerate(moments):
        out = tmp_path / f"train-{i}"
        argv = [*train, "--out", str(out)]
        if kind == "time":
            started = time.monotonic()
            killed = _kill_when(argv, lambda s=started, t=at: time.monotonic() - s >= t, 0)
        elif kind == "steps":
            killed = _kill_when(argv, lambda o=out, k=at: _log_lines(o) >= k, rng.uniform(0, 0.02))
        else:
            killed = _kill_when(argv, lambda o=out, k=at: (o / f"checkpoint-{k}").exists(), rng.uniform(0, 0.01))
        assert killed, (kind, at)
        resume_from = last_complete_checkpoint(out) if out.exists() else None
        r = _cli(argv)  # the same command
        assert r.returncode == 0, (kind, at, r.stderr[-2000:])
        if resume_from is None:
            assert "resumed" not in r.stdout, (kind, at, r.stdout)  # started over
        else:
            assert f"resumed from {resume_from.name}" in r.stdout, (kind, at, r.stdout)
        print(f"train killed at {kind} {at}: continued from {resume_from and resume_from.name}")
        assert_same_run(ref, out)
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".train-{i}")], (kind, at)

    # the score cache: kill before any shard, and after a random number of shards
    data = make_prepared(tmp_path / "sdata", n=128, count=240, seed=3)
    scorer = make_scorer(tmp_path / "sscorer", tokenizer=data / "tokenizer", hidden=64, layers=2)
    score = ["score", "--data", str(data), "--scorer", str(scorer), "--window", "32", "--shard-size", "24"]
    score += ["--device", "cpu"]
    sref = tmp_path / "score-ref"
    r = _cli([*score, "--out", str(sref)])
    assert r.returncode == 0, r.stderr[-2000:]
    before = snapshot(sref)
    r = _cli([*score, "--out", str(sref)])
    assert r.returncode == 0 and "0 computed now, 240 already cached" in r.stdout
    assert snapshot(sref) == before
    for i, k in enumerate([0, rng.randint(1, 9)]):
        out = tmp_path / f"score-{i}"
        shards = out / "shards"
        ready = lambda s=shards, k=k: len(list(s.glob("0*"))) >= k  # noqa: E731
        assert _kill_when([*score, "--out", str(out)], ready, rng.uniform(0, 0.05))
        kept = len(list(shards.glob("0*"))) if shards.exists() else 0
        r = _cli([*score, "--out", str(out)])
        assert r.returncode == 0 and f"{240 - 24 * kept} computed now, {24 * kept} already cached" in r.stdout
        print(f"score killed after {kept} shards")
        assert_same_cache(sref, out)
