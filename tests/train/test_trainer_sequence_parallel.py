"""Sequence parallelism: the token-weighted loss of sequence shards under DeepSpeed's Ulysses (HF
``Trainer`` + ``accelerate``, 2 gloo processes on CPU, ZeRO 0 and 3, accumulation 2) equals one
process on the whole sequences, for uniform, dense, sparse and LongCE weights (frozen scores: the
rows' short_nll column, or a FrozenScorer run on the gathered rows): gradients, the weights of
every shard, the logged losses; and what is refused under it."""

from __future__ import annotations

import pytest
import torch

from tests.distributed import torchrun
from tests.train import sp_runs as R
from tests.train.train_helpers import tiny_model


def reference(case: str) -> dict:
    """The two rows, one by one, through the component on one process: ``Σ loss_sum / Σ count``."""
    from tokenweight import PadCollator, TokenWeighting

    scheme, kind = R.CASES[case]
    model = tiny_model(n=R.N, seed=0).train()
    tw = TokenWeighting(scheme, R.source(kind), seed=0)
    outs = [tw(model, PadCollator(0)([row])) for row in R.rows()]
    loss = sum(o.loss_sum for o in outs) / sum(o.count for o in outs)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    return {"grads": grads, "loss": loss.item(), "weights": [o.weights for o in outs]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("sp")
    for stage in (0, 3, "manual"):
        torchrun("-m", "tests.train.sp_runs", out, stage)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 3])
@pytest.mark.parametrize("case", list(R.CASES))
def test_two_shards_equal_one_process_on_the_whole_rows(runs, case, stage):
    got, want = torch.load(runs / f"{case}-{stage}.pt"), reference(case)
    for k, g in want["grads"].items():
        torch.testing.assert_close(got["grads"][k], g, rtol=1e-4, atol=1e-5, msg=f"{case} ZeRO-{stage}: {k}")
    assert got["log"]["weighted_loss"] == pytest.approx(want["loss"], rel=1e-5)
    if want["weights"][0] is None:
        return
    shards = got["weights"]  # per rank: the weights of its shard of every micro-batch
    assert len(shards) == 2 and len(shards[0]) == len(shards[1]) == 2  # accumulation 2: both rows
    for step in range(2):
        whole = torch.cat([shards[0][step], shards[1][step]], dim=1)[0, :-1]  # the row's targets
        assert any(
            torch.allclose(whole[: len(w[0])], w[0], atol=1e-5) and not whole[len(w[0]) :].any()
            for w in want["weights"]
        ), f"{case}: the shards' weights are no row's weights"


@pytest.mark.slow
@pytest.mark.parametrize("case", list(R.CASES))
def test_load_balanced_shards_equal_one_process(runs, case):
    """torch's context-parallel layout (chunks r and 2K-1-r of each row), sharded by hand in 2 gloo
    processes (``sp_runs.ShardView`` computes each shard's outputs exactly): the shards are put in
    sequence order by their positions, so weights and summed gradients are one process's."""
    got, want = torch.load(runs / f"{case}-manual.pt"), reference(case)
    for k, g in want["grads"].items():
        torch.testing.assert_close(got["grads"][k], g, rtol=1e-4, atol=1e-5, msg=f"{case}: {k}")
    if want["weights"][0] is None:
        return
    for row, w in enumerate(want["weights"]):
        whole = torch.zeros(R.N)
        for rank in range(2):
            whole[R.load_balanced(R.N, 2, rank)] = got["weights"][rank][row][0]
        torch.testing.assert_close(whole[: w.shape[1]], w[0], atol=1e-5, rtol=1e-5)
        assert not whole[w.shape[1] :].any()


def test_what_is_refused_under_sequence_parallelism():
    from tokenweight import SelfScorer, TokenWeighting
    from tokenweight.sequence_parallel import sharded_loss

    ids = torch.ones(1, 8, dtype=torch.long)
    shard = {"input_ids": ids, "shift_labels": ids, "position_ids": torch.arange(8)[None]}
    model = tiny_model(n=R.N)
    with pytest.raises(ValueError, match="under sequence parallelism is not supported.*use frozen scoring"):
        sharded_loss(TokenWeighting("dense:0.5", SelfScorer(4)), model, shard, group=None)
    with pytest.raises(ValueError, match="packed rows .* under sequence parallelism are not supported"):
        sharded_loss(TokenWeighting("uniform"), model, {**shard, "doc_lengths": [[8]]}, group=None)
    with pytest.raises(ValueError, match="needs 'shift_labels' and global 'position_ids'"):
        sharded_loss(TokenWeighting("uniform"), model, {"input_ids": ids, "labels": ids}, group=None)
