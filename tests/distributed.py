"""Launching a test's worker module under ``torchrun`` with 2 gloo processes on the CPU, the one
way the multi-process tests (tests/contracts/test_engines.py, tests/train/test_trainer_mixin.py,
tests/train/test_trainer_sequence_parallel.py) start their workers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env() -> dict:
    """One thread per process (2 processes on 2 cores), unbuffered output."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def torchrun(*args, nproc: int = 2, timeout: float = 400, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node NPROC ARGS...`` (asserting exit 0 with the
    tail of stderr); ``args``: e.g. ``"-m", "tests.train.sp_runs", OUT``."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_port",
        str(free_port()),
    ]
    run = subprocess.run(
        [*cmd, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=launch_env(), cwd=cwd
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run
