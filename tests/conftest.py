"""Suite-wide settings.

Tests run tiny models, for which torch's intra-op threading costs far more than it gains
(measured on a loaded 2-core machine: a [40, 32] x [32, 64] linear took 20 ms with 2 threads and
8 us with 1). One thread per process also keeps multi-process tests (torchrun with 2 ranks) from
oversubscribing the 2 cores. Subprocesses inherit OMP_NUM_THREADS.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
