"""Hub ids, offline: prepare, score, train and eval take Hugging Face hub ids from a local cache.

Nothing downloads. A hub cache is built in ``tmp_path`` in the layouts the libraries read with
``HF_HUB_OFFLINE=1``, then the CLI runs as subprocesses with ``HF_HOME`` pointing at it:

- the model ``tw-test/tiny-llama`` (a tiny random Llama with the tests' word tokenizer) in
  ``huggingface_hub``'s cache layout, as ``hf_hub_download`` leaves it:
  ``HF_HOME/hub/models--tw-test--tiny-llama/blobs/<sha256>``, ``snapshots/<rev>/<file>`` symlinks to
  those blobs, ``refs/main`` holding ``<rev>``;
- the dataset ``tw-test/tiny-docs``: offline, ``datasets.load_dataset`` never looks at the hub cache
  (its hub module factory raises at once and falls back to ``CachedDatasetModuleFactory``), only at
  its own prepared cache ``HF_HOME/datasets/tw-test___tiny-docs/default/0.0.0/<rev>/``, which is what
  an online ``load_dataset`` writes. It is written by datasets' own builder (the ``Generator``
  packaged builder given the repo id, config ``default`` and the revision as its hash): the same
  writer, and so the same layout, as an online load.

Then: ``prepare tw-test/tiny-docs --tokenizer tw-test/tiny-llama``, ``score --scorer
tw-test/tiny-llama``, ``train --model tw-test/tiny-llama --scorer frozen``, ``eval
tw-test/tiny-llama RUN/model``. Every cache and run names the hub model by content
(``identity.model_digest``), equal to the digest of its snapshot folder. About 50 s on 2 cores
(eight Python processes, torch import included).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.train_helpers import make_tokenizer, tiny_model
from tokenweight.identity import model_digest

pytestmark = pytest.mark.slow

MODEL, DATASET = "tw-test/tiny-llama", "tw-test/tiny-docs"
REV = "0123456789abcdef0123456789abcdef01234567"  # a commit hash, as refs/main holds
N, W = 64, 16


def _repo_folder(hub: Path, kind: str, repo: str) -> Path:
    base = hub / f"{kind}s--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / "main").write_text(REV)
    return base


def cache_model(hub: Path, repo: str, staged: Path) -> Path:
    """Move the files of ``staged`` into the hub cache as blobs, linked from ``snapshots/REV``; -> the snapshot."""
    base = _repo_folder(hub, "model", repo)
    snapshot, blobs = base / "snapshots" / REV, base / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for f in sorted(staged.iterdir()):
        blob = blobs / hashlib.sha256(f.read_bytes()).hexdigest()
        f.replace(blob)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def cache_dataset(datasets_cache: Path, repo: str, rows: list[dict]) -> Path:
    """Write ``rows`` (train split) where an online ``load_dataset(repo)`` leaves its prepared cache."""
    from datasets.packaged_modules.generator.generator import Generator

    def generate():
        yield from rows

    builder = Generator(
        cache_dir=str(datasets_cache),
        dataset_name=repo.split("/")[1],
        repo_id=repo,
        config_id="default",
        hash=REV,
        generator=generate,
    )
    builder.download_and_prepare()
    return Path(builder.cache_dir)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub_offline")
    home = root / "hf"
    staged = root / "staged"
    make_tokenizer(staged)
    tiny_model(n=N, tie=False).save_pretrained(staged)
    snapshot = cache_model(home / "hub", MODEL, staged)
    rng = random.Random(0)
    docs = [{"text": " ".join(f"w{rng.randrange(60)}" for _ in range(300))} for _ in range(12)]
    cache_dataset(home / "datasets", DATASET, docs)
    env = {
        **os.environ,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_DATASETS_CACHE": str(home / "datasets"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    return {"root": root, "env": env, "snapshot": snapshot}


def tokenweight(hub, *args) -> subprocess.CompletedProcess:
    """One CLI command in a subprocess, in ``hub['root']``, offline against the tmp hub cache."""
    return subprocess.run(
        [sys.executable, "-m", "tokenweight.cli.main", *args],
        cwd=hub["root"],
        env=hub["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def ok(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def test_the_cache_is_what_the_libraries_read(hub):
    snapshot = hub["snapshot"]
    assert (snapshot / "model.safetensors").is_symlink() and (snapshot / "tokenizer.json").is_file()
    code = (
        "from tokenweight.identity import resolve_local, model_digest; import datasets; "
        f"print(resolve_local({MODEL!r})); print(model_digest({MODEL!r})); "
        f"print(len(datasets.load_dataset({DATASET!r}, split='train')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=hub["env"], capture_output=True, text=True, timeout=120
    ).stdout.split()
    assert out == [str(snapshot), model_digest(snapshot), "12"]


def test_every_stage_by_hub_id_offline(hub):
    root, digest = hub["root"], model_digest(hub["snapshot"])

    out = ok(tokenweight(hub, "prepare", DATASET, "--tokenizer", MODEL, "--n", str(N), "--out", "data"))
    assert "train 44 sequences" in out, out
    manifest = json.loads((root / "data" / "manifest.json").read_text())
    assert manifest["tokenizer_info"]["source"] == MODEL and manifest["n"] == N
    assert "up to date" in ok(
        tokenweight(hub, "prepare", DATASET, "--tokenizer", MODEL, "--n", str(N), "--out", "data")
    )

    ok(tokenweight(hub, "score", "--data", "data", "--scorer", MODEL, "--window", str(W), "--out", "scores"))
    meta = json.loads((root / "scores" / "meta.json").read_text())
    assert (meta["scorer"], meta["scorer_path"], meta["n_sequences"]) == (digest, MODEL, 44)

    train = ["train", "--model", MODEL, "--data", "data", "--scheme", "dense:0.75", "--scorer", "frozen"]
    out = ok(tokenweight(hub, *train, "--scores", "scores", "--max-steps", "2", "--batch-size", "2", "--out", "run"))
    assert "trained 2 steps" in out, out
    settings = json.loads((root / "run" / "settings.json").read_text())
    assert settings["model"] == f"model:{digest}" and settings["scores"] == f"scores:{meta['fingerprint']}"

    ev = ["eval", MODEL, "run/model", "--names", "hub,trained", "--data", "data", "--window", str(W)]
    ok(tokenweight(hub, *ev, "--tasks", "none", "--max-sequences", "2", "--out", "ev"))
    results = json.loads((root / "ev" / "results.json").read_text())
    assert [(m["name"], m["source"]) for m in results["models"]] == [("hub", MODEL), ("trained", "run/model")]
    assert all(m["perplexity"]["overall"]["tokens"] > 0 for m in results["models"])

    # a hub id that is not in the cache: one line, exit 2, no traceback and no network
    run = tokenweight(
        hub, "score", "--data", "data", "--scorer", "tw-test/not-cached", "--window", str(W), "--out", "s"
    )
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("tokenweight: error: "), run.stderr
    assert "tw-test/not-cached" in lines[0]
