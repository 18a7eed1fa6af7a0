#!/usr/bin/env bash
# The GPU validation of tokenweight in one command: at most 8 minutes on one GPU, results in
# benchmarks/results/gpu_*.json (what each section checks: benchmarks/gpu_check.py).
#   bash benchmarks/gpu_check.sh                 # on a machine with CUDA
#   bash benchmarks/gpu_check.sh --cpu-smoke     # tiny sizes on the CPU (automatic without CUDA)
# Python: $PYTHON, else .venv/bin/python, else python3 (a GPU machine's own torch is fine); the
# checkout is put on PYTHONPATH, so nothing needs installing but the pinned dependencies.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout --signal=INT --kill-after=20 480 "$PY" benchmarks/gpu_check.py "$@"
