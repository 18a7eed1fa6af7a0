"""``benchmarks/gpu_check.sh --cpu-smoke``: the GPU validation script runs end to end at tiny sizes.

The same sections and code paths as on a GPU (benchmarks/gpu_check.py), on the CPU: every section
but ``engines`` (tests/contracts/test_engines.py runs those on CPU) ends ``ok`` and writes its result file;
``cce`` runs its script, says why Cut-Cross-Entropy was skipped here, and times ``chunked_nll``.
About 30 s on 2 cores (six Python processes).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("attention", "train_1b", "loss_memory", "scoring_1b", "eval_16k")


def test_cpu_smoke_runs_every_section(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_check.sh"), "--cpu-smoke", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["mode"] == "cpu-smoke"
    status = {k: v["status"] for k, v in summary["sections"].items()}
    others = {k: status[k] for k in ("engines", "cce", "parallel")}
    assert status == {**dict.fromkeys(SECTIONS, "ok"), **others}, status
    assert status["parallel"].startswith("skipped: needs 2 GPUs")
    assert status["engines"].startswith("skipped")
    assert status["cce"] == (
        "skipped: --loss-kernel cce needs a CUDA GPU (Triton), and this run's device is cpu: use --loss-kernel chunked"
    )
    cce = json.loads((tmp_path / "gpu_cce_16k.json").read_text())
    assert cce["cce"] == status["cce"] and "accuracy" not in cce
    assert [set(row) for row in cce["timing"].values()] == [{"chunked"}, {"chunked"}]

    train = json.loads((tmp_path / "gpu_train_1b_16k.json").read_text())
    frozen = {"dense_frozen", "dense_frozen_mixin", "dense_frozen_loop"}  # trainer, mixin on Trainer, own loop
    assert set(train["ratio_vs_hf_loss"]) == {"uniform", *frozen, "dense_self", "hf_loss"}
    assert train["gradient_checkpointing"] and train["autocast"] and not train["tie_word_embeddings"]
    memory = json.loads((tmp_path / "gpu_loss_memory_16k.json").read_text())
    assert memory["diffs_vs_naive"] and memory["config"]["dtype"] == "bfloat16"
    assert json.loads((tmp_path / "gpu_scoring_1b_16k.json").read_text())["short_context_nll_tok_s"] > 0
    attention = summary["sections"]["attention"]["result"]["implementations"]
    assert set(attention) == {"eager", "sdpa"} and all(v["finite_grads"] for v in attention.values())
    tasks = summary["sections"]["eval_16k"]["result"]["tasks"]
    assert tasks and all(row["length"] == 512 for row in tasks), tasks
