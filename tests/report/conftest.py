"""Fixtures of tests/report: the synthetic documents of report_fixtures.py."""

import pytest

from tests.report.report_fixtures import make_evaluation, make_llama, make_results, make_tokenizer


@pytest.fixture
def evaluation():
    return make_evaluation()


@pytest.fixture
def results(tmp_path):
    return make_results(tmp_path)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tokenizer()


@pytest.fixture
def tiny_llama(tiny_tokenizer):
    return lambda seed=0: make_llama(len(tiny_tokenizer), seed)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a loaded 2-core machine: 2 OpenMP threads make each small op ~1000x slower
    (measured 20 ms vs 8 µs per [40, 32] x [32, 64] linear), so these tests run on one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
