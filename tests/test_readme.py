"""The README's Python example runs as written (model paths swapped for tiny local models)."""

import re
from pathlib import Path

import torch

from tests.tiny_models import save_tiny_llama

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(tmp_path):
    save_tiny_llama(tmp_path / "model", 300, 0, max_position_embeddings=1024)
    save_tiny_llama(tmp_path / "short", 300, None, max_position_embeddings=1024)  # the RNG goes on: other weights
    code = re.search(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S).group(1)
    code = code.replace("path/to/model", str(tmp_path / "model")).replace(
        "path/to/short-model", str(tmp_path / "short")
    )
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    loss, nll = scope["loss"], scope["nll"]
    assert nll.shape == (2, 1023) and torch.isfinite(loss)
    # the one-call loss equals the two-phase loss of the example (uniform count normalisation)
    w = scope["weights"]
    torch.testing.assert_close(loss, (w * nll).sum() / nll.numel(), rtol=1e-5, atol=1e-6)
