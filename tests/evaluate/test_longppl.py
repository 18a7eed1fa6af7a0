"""LongPPL: key-token selection on synthetic NLLs and the metric's value, both by hand."""

import math

import pytest
import torch

from tokenweight.evaluate.longppl import LongPPL, eligible_mask, key_token_mask


def test_key_token_selection_by_hand():
    # entry j scores position j+1; window 3 -> entries 0, 1 (positions 1, 2) are never key tokens
    long = torch.tensor([[0.1, 0.1, 0.5, 1.9, 2.1, 0.5, 0.0, 1.0]])
    short = torch.tensor([[9.0, 9.0, 2.6, 4.0, 9.0, 2.5, 2.5, 3.0]])
    # LSD = short - long: [8.9, 8.9, 2.1, 2.1, 6.9, 2.0, 2.5, 2.0]; LCL = -long
    # j=2: LSD 2.1 > 2, LCL -0.5 > -2 -> key
    # j=3: LSD 2.1 > 2, LCL -1.9 > -2 -> key
    # j=4: LCL -2.1 -> not
    # j=5: LSD 2.0 not > 2 -> not (strict)
    # j=6: LSD 2.5, LCL 0 -> key
    # j=7: LSD 2.0 -> not
    key = key_token_mask(long, short, window=3)
    assert key.tolist() == [[False, False, True, True, False, False, True, False]]
    # thresholds are parameters
    key = key_token_mask(long, short, window=3, alpha=1.0, beta=-3.0)
    assert key.tolist() == [[False, False, True, True, True, True, True, True]]
    # padding mask
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    key = key_token_mask(long, short, window=3, mask=mask)
    assert key.tolist() == [[False, False, True, True, False, False, False, False]]
    # window 1 excludes nothing
    key = key_token_mask(long, short, window=1, beta=-3.0)
    assert key.tolist() == [[True, True, True, True, True, False, True, False]]


def test_longppl_value_by_hand():
    key = torch.tensor([[False, False, True, True, False], [False, False, False, False, True]])
    nll = torch.tensor([[5.0, 5.0, 1.0, 2.0, 7.0], [3.0, 3.0, 3.0, 3.0, 0.5]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], dtype=torch.bool)
    elig = eligible_mask(mask, window=2)
    assert elig.tolist() == [[False, True, True, True, True], [False, True, True, True, False]]
    acc = LongPPL()
    acc.update(nll[:1], key[:1], elig[:1])
    acc.update(nll[1:], key[1:], elig[1:])
    res = acc.result()
    assert res["key_tokens"] == 3
    assert res["eligible_tokens"] == 7
    assert res["key_share"] == pytest.approx(3 / 7)
    assert res["nll"] == pytest.approx((1.0 + 2.0 + 0.5) / 3)
    assert res["longppl"] == pytest.approx(math.exp(3.5 / 3))


def test_no_key_tokens_gives_null():
    acc = LongPPL()
    acc.update(torch.ones(1, 4), torch.zeros(1, 4, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool))
    assert acc.result() == {"longppl": None, "nll": None, "key_tokens": 0, "eligible_tokens": 4, "key_share": 0.0}


def test_shape_errors():
    with pytest.raises(ValueError, match="equal shape"):
        key_token_mask(torch.zeros(1, 3), torch.zeros(1, 4), window=2)
    with pytest.raises(ValueError, match="window"):
        key_token_mask(torch.zeros(1, 3), torch.zeros(1, 3), window=0)
