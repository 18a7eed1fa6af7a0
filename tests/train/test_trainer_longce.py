"""LongCE's short context (``--short-context longce``): the weights of ``longce:<γ>`` in a training
forward equal a transcription of LongCE's published ``loss_weight`` (PKU-ML/LongPPL,
finetune/finetune.py); when ``--window T+S --stride S`` gives the same windows and when it does not;
the options end to end. About 5 s."""

from __future__ import annotations

import json

import pytest
import torch

from tests.evaluate.longppl_helpers import tiny_llama
from tests.train.test_trainer import batch, targs
from tests.train.train_helpers import BOS, dataset, make_prepared, sequences
from tokenweight.cli.main import main
from tokenweight.scoring import self_scored_short_nll, token_nll, truncated_context_nll
from tokenweight.short_nll import LongCEScorer
from tokenweight.stages.train import TrainConfig
from tokenweight.train.collate import PadCollator, TrainSequences
from tokenweight.train.trainer import WeightedTrainer

T, S = 16, 8


@torch.no_grad()
def published_loss_weight(model, input_ids, trunc_len=4096, internal=1024, thre=5):
    """LongCE's ``loss_weight`` as published, transcribed (one sequence, ``input_ids`` [1, n]):
    ``(weight [n-1], loss [n-1])``."""
    loss_f = torch.nn.CrossEntropyLoss(reduction="none")
    _, max_len = input_ids.shape
    output_full = model(input_ids)
    loss = loss_f(output_full.logits[0, :-1, :], input_ids[0, 1:])
    loss_discrepancy = torch.ones(input_ids.shape[-1])
    for start_token in range(0, max_len - trunc_len, internal):
        if start_token + trunc_len + internal > max_len:
            internal = max_len - start_token - trunc_len
        input_ids_short = input_ids[:, start_token : start_token + trunc_len + internal]
        output_short = model(input_ids_short)
        loss_full = loss[start_token + trunc_len - 1 : start_token + trunc_len + internal - 1]
        loss_short = loss_f(
            output_short.logits[0, trunc_len - 1 : trunc_len + internal - 1, :],
            input_ids_short[0, trunc_len : trunc_len + internal],
        )
        loss_discrepancy[start_token + trunc_len : start_token + trunc_len + internal] = torch.exp(
            loss_short - loss_full
        ).squeeze()
    weight = torch.clamp(loss_discrepancy[1:], max=thre)
    return weight, loss


ROWS = sequences(6, 49, seed=4, short_every=1)  # lengths 48, 43, 38, ...: tails of every size; (48-16) % 8 == 0


@pytest.mark.parametrize("gamma", [5.0, 1.5, 0.5])
def test_training_weights_equal_the_published_loss_weight(tmp_path, gamma):
    model = tiny_llama(64, seed=3, n=64)  # wide random weights: p_long / p_short spreads over 0.1 .. 10
    trainer = WeightedTrainer(
        model=model,
        args=targs(tmp_path),
        train_dataset=TrainSequences(dataset(ROWS)),
        data_collator=PadCollator(0),
        scheme=f"longce:{gamma}",
        short=LongCEScorer(T, S),
    )
    b = batch(ROWS)
    _, mask, weights = trainer.forward_weights(model, b)
    clipped = 0
    for r, row in enumerate(ROWS):
        want, _ = published_loss_weight(model, torch.tensor([row]), trunc_len=T, internal=S, thre=gamma)
        got = weights[r, : len(row) - 1]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        assert mask[r, : len(row) - 1].all() and not mask[r, len(row) - 1 :].any()
        clipped += int((want == gamma).sum())
        assert (want[: T - 1] == min(1.0, gamma)).all()  # the first window weighs 1 (clipped at γ)
    assert clipped > 0 and (weights[mask] < min(1.0, gamma) - 0.1).any()  # the weights vary


def test_method_windows_are_longces_only_when_they_divide_and_without_bos():
    """--window T+S --stride S gives LongCE's windows exactly when (n - T) % S == 0 and no BOS is
    put back (METHOD's last window is aligned to the end, LongCE's is cut there)."""
    model = tiny_llama(64, seed=3, n=64)
    for n, same in ((48, True), (45, False)):
        ids = torch.tensor(
            [[BOS] + torch.randint(4, 64, (n - 1,), generator=torch.Generator().manual_seed(n)).tolist()]
        )
        long = token_nll(model, ids)
        longce = truncated_context_nll(model, ids, T, S, long_nll=long)
        method = self_scored_short_nll(model, ids, long, T + S, S, bos_token_id=None)
        assert torch.allclose(method, longce, atol=1e-5) == same, n
        with_bos = self_scored_short_nll(model, ids, long, T + S, S, bos_token_id=BOS)
        assert not torch.allclose(with_bos, longce, atol=1e-3)  # windows after the first restart with BOS


def test_config_checks():
    base = dict(data="d", out="o", init="tiny", scheme="longce:5", scorer="self")
    TrainConfig(**base, short_context="longce", longce_trunc_len=16, longce_sliding_window=8).validate()
    with pytest.raises(ValueError, match="short_context must be one of"):
        TrainConfig(**base, short_context="fang").validate()
    with pytest.raises(ValueError, match="--scorer self"):
        TrainConfig(**{**base, "scorer": "frozen", "scores": "s"}, short_context="longce").validate()
    with pytest.raises(ValueError, match="--longce-trunc-len"):
        TrainConfig(**base, short_context="longce", window=24).validate()
    with pytest.raises(ValueError, match="longce_sliding_window"):
        TrainConfig(**base, short_context="longce", longce_sliding_window=0).validate()


def test_train_with_longce_windows_end_to_end(tmp_path, capsys):
    data = make_prepared(tmp_path / "data", n=48, count=4)
    args = ["train", "--data", str(data), "--init", "tiny", "--batch-size", "2", "--max-steps", "1"]
    longce = ["--scheme", "longce:5", "--scorer", "self", "--short-context", "longce", "--longce-trunc-len", "16"]
    out = tmp_path / "run"
    assert main([*args, "--out", str(out), *longce, "--longce-sliding-window", "8"]) == 0
    run = json.loads((out / "run_config.json").read_text())
    assert (run["short_context"], run["longce_trunc_len"], run["longce_sliding_window"]) == ("longce", 16, 8)
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "r2"), *longce[:-1], "48"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tokenweight: error: long context n = 48 must be longer than --longce-trunc-len 48")
