"""tokenweight.loss: chunked (weighted) cross-entropy against brute-force full-logits references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from tokenweight.loss import chunked_nll, weighted_lm_loss, weighted_nll_loss

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
B, N, D, V = 2, 13, 16, 37


def naive(hidden, weight, bias, labels, weights=None, ignore_index=-100, upcast=False):
    """Reference: full logits, F.cross_entropy(reduction='none') * weights / count.

    -> (loss scalar float32, nll [b, n] float32)."""
    if upcast:
        hidden, weight = hidden.float(), weight.float()
        bias = None if bias is None else bias.float()
    logits = F.linear(hidden, weight, bias).float()
    nll = F.cross_entropy(logits.flatten(0, -2), labels.flatten(), reduction="none", ignore_index=ignore_index).view(
        labels.shape
    )
    mask = labels != ignore_index
    w = torch.ones_like(nll) if weights is None else weights.float()
    loss = (nll * w * mask).sum() / mask.sum().clamp_min(1)
    return loss, nll


def rel_err(a, ref):
    """max |a - ref| / max |ref| (float64), the tolerance measure used throughout."""
    a, ref = a.detach().double().cpu(), ref.detach().double().cpu()
    return ((a - ref).abs().max() / ref.abs().max().clamp_min(1e-300)).item()


def make(b=B, n=N, d=D, vocab=V, bias=True, ignore=(), device="cpu", dtype=torch.float32, seed=0):
    """Random hidden [b, n, d] (requires grad), nn.Linear(d, vocab), labels with ignored positions."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, n, d, generator=g).to(device=device, dtype=dtype).requires_grad_()
    head = nn.Linear(d, vocab, bias=bias)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, d, generator=g) * 0.5)
        if bias:
            head.bias.copy_(torch.randn(vocab, generator=g))
    head = head.to(device=device, dtype=dtype)
    labels = torch.randint(0, vocab, (b, n), generator=g).to(device)
    for i, j in ignore:
        labels[i, j] = -100
    weights = torch.rand(b, n, generator=g).to(device) * 2
    return hidden, head, labels, weights


def grads(*tensors):
    out = [None if t is None else t.grad.clone() for t in tensors]
    for t in tensors:
        if t is not None:
            t.grad = None
    return out


IGNORE = [(0, 0), (0, 5), (1, 12), (1, 3), (1, 4)]


def two_phase(hidden, head, labels, weights=None, *, ignore_index=-100, reduction="mean", num_items=None, **kw):
    """The trainer's path: chunked_nll, then weighted_nll_loss; same signature as weighted_lm_loss."""
    nll = chunked_nll(hidden, head, labels, ignore_index=ignore_index, **kw)
    loss = weighted_nll_loss(nll, labels != ignore_index, weights, reduction=reduction, num_items=num_items)
    return loss, nll.detach()


def loss_fn(api):
    return weighted_lm_loss if api == "one_call" else two_phase


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
@pytest.mark.parametrize("use_weights", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("api", ["one_call", "two_phase"])
def test_matches_naive_loss_nll_and_grads(device, chunk_size, use_weights, bias, api):
    hidden, head, labels, weights = make(bias=bias, ignore=IGNORE, device=device)
    w = weights if use_weights else None
    loss, nll = loss_fn(api)(hidden, head, labels, w, chunk_size=chunk_size)
    loss.backward()
    got = grads(hidden, head.weight, head.bias)
    ref_loss, ref_nll = naive(hidden, head.weight, head.bias, labels, w)
    ref_loss.backward()
    ref = grads(hidden, head.weight, head.bias)

    assert loss.dtype == nll.dtype == torch.float32 and loss.shape == ()
    assert nll.shape == labels.shape and not nll.requires_grad
    assert torch.all(nll[labels == -100] == 0)
    assert rel_err(loss, ref_loss) <= 1e-5
    assert rel_err(nll, ref_nll) <= 1e-5
    for a, r in zip(got, ref):
        if r is None:
            assert a is None
        else:
            assert a.dtype == r.dtype and rel_err(a, r) <= 1e-5
    # ignored positions get no gradient at all
    assert torch.all(got[0][labels == -100] == 0)


def test_weight_tensor_head_custom_ignore_index_and_any_leading_shape():
    hidden, head, labels, weights = make(bias=False)
    W = head.weight
    labels[0, 2] = 5
    flat_h = hidden.reshape(-1, D)  # leading shape [b*n] instead of [b, n]
    loss, nll = weighted_lm_loss(flat_h, W, labels.reshape(-1), weights.reshape(-1), ignore_index=5, chunk_size=4)
    loss.backward()
    got = grads(hidden, W)
    ref_loss, ref_nll = naive(flat_h, W, None, labels.reshape(-1), weights.reshape(-1), ignore_index=5)
    ref_loss.backward()
    ref = grads(hidden, W)
    assert torch.all(nll[labels.reshape(-1) == 5] == 0)
    assert rel_err(loss, ref_loss) <= 1e-5 and rel_err(nll, ref_nll) <= 1e-5
    for a, r in zip(got, ref):
        assert rel_err(a, r) <= 1e-5


@pytest.mark.parametrize("api", ["one_call", "two_phase"])
def test_tied_embedding_gradients_accumulate(api):
    """lm_head.weight is the embedding: the weight gets the embedding's and the head's gradient."""
    g = torch.Generator().manual_seed(1)
    emb = nn.Embedding(V, D)
    proj = nn.Linear(D, D)
    head = nn.Linear(D, V, bias=False)
    head.weight = emb.weight
    ids = torch.randint(0, V, (B, N + 1), generator=g)
    labels = ids[:, 1:].clone()
    labels[0, :3] = -100
    weights = torch.rand(B, N, generator=g)

    def run(loss_fn):
        hidden = torch.tanh(proj(emb(ids[:, :-1])))
        loss = loss_fn(hidden)
        loss.backward()
        return loss.detach(), grads(emb.weight, proj.weight, proj.bias)

    loss, got = run(lambda h: loss_fn(api)(h, head, labels, weights, chunk_size=5)[0])
    ref_loss, ref = run(lambda h: naive(h, head.weight, None, labels, weights)[0])
    assert rel_err(loss, ref_loss) <= 1e-5
    for a, r in zip(got, ref):
        assert rel_err(a, r) <= 1e-5


@pytest.mark.parametrize("frozen", ["hidden", "head", "both"])
@pytest.mark.parametrize("api", ["one_call", "two_phase"])
def test_inputs_without_requires_grad(frozen, api):
    hidden, head, labels, weights = make(ignore=IGNORE)
    if frozen in ("hidden", "both"):
        hidden.requires_grad_(False)
    if frozen in ("head", "both"):
        head.requires_grad_(False)
    loss, nll = loss_fn(api)(hidden, head, labels, weights, chunk_size=6)
    ref_loss, ref_nll = naive(hidden, head.weight, head.bias, labels, weights)
    assert rel_err(loss, ref_loss) <= 1e-5 and rel_err(nll, ref_nll) <= 1e-5
    if frozen == "both":
        assert not loss.requires_grad
        return
    loss.backward()
    got = [t.grad for t in (hidden, head.weight, head.bias)]
    for t in (hidden, head.weight, head.bias):
        t.grad = None
    ref_loss.backward()
    for a, t in zip(got, (hidden, head.weight, head.bias)):
        if t.requires_grad:
            assert rel_err(a, t.grad) <= 1e-5
        else:
            assert a is None and t.grad is None


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("api", ["one_call", "two_phase"])
def test_bf16_inputs(device, api):
    hidden, head, labels, weights = make(ignore=IGNORE, device=device, dtype=torch.bfloat16)
    ref_loss, ref_nll = naive(hidden, head.weight, head.bias, labels, weights, upcast=True)
    ref_loss.backward()
    ref = grads(hidden, head.weight, head.bias)
    # default: product in bf16 (as the model's own lm_head), everything after it in float32
    loss, nll = loss_fn(api)(hidden, head, labels, weights, chunk_size=5)
    loss.backward()
    got = grads(hidden, head.weight, head.bias)
    assert loss.dtype == nll.dtype == torch.float32
    assert rel_err(loss, ref_loss) <= 2e-2 and rel_err(nll, ref_nll) <= 2e-2
    for a, r in zip(got, ref):
        assert a.dtype == torch.bfloat16 and rel_err(a, r) <= 3e-2
    # equal to the same computation on full logits (bf16 product, float32 cross-entropy)
    same_loss, same_nll = naive(hidden, head.weight, head.bias, labels, weights)
    assert rel_err(loss, same_loss) <= 1e-5 and rel_err(nll, same_nll) <= 1e-5
    # matmul_dtype=float32: exact float32 NLL of the bf16 values; grads only rounded to bf16
    loss32, nll32 = loss_fn(api)(hidden, head, labels, weights, chunk_size=5, matmul_dtype=torch.float32)
    loss32.backward()
    got32 = grads(hidden, head.weight, head.bias)
    assert rel_err(loss32, ref_loss) <= 1e-5 and rel_err(nll32, ref_nll) <= 1e-5
    for a, r in zip(got32, ref):
        assert a.dtype == torch.bfloat16 and rel_err(a, r) <= 1e-2


@pytest.mark.parametrize("api", ["one_call", "two_phase"])
def test_autocast_matches_naive_under_autocast(api):
    hidden, head, labels, weights = make(ignore=IGNORE)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, nll = loss_fn(api)(hidden, head, labels, weights, chunk_size=4)
        ref_loss, ref_nll = naive(hidden, head.weight, head.bias, labels, weights)
    loss.backward()
    got = grads(hidden, head.weight, head.bias)
    ref_loss.backward()
    ref = grads(hidden, head.weight, head.bias)
    assert rel_err(loss, ref_loss) <= 1e-5 and rel_err(nll, ref_nll) <= 1e-5
    for a, r in zip(got, ref):
        assert a.dtype == torch.float32 and rel_err(a, r) <= 1e-2


@pytest.mark.parametrize("use_weights", [False, True])
@pytest.mark.parametrize("api", ["one_call", "two_phase"])
def test_all_ignored_gives_zero_and_zero_grads(use_weights, api):
    hidden, head, labels, weights = make()
    labels.fill_(-100)
    loss, nll = loss_fn(api)(hidden, head, labels, weights if use_weights else None)
    assert loss.item() == 0.0 and torch.all(nll == 0)
    loss.backward()
    for t in (hidden, head.weight, head.bias):
        assert torch.all(t.grad == 0)
    loss0 = loss_fn(api)(hidden, head, labels, num_items=0)[0]
    assert loss0.item() == 0.0


@pytest.mark.parametrize("api", ["one_call", "two_phase"])
def test_reduction_sum_and_num_items(api):
    fn = loss_fn(api)
    hidden, head, labels, weights = make(ignore=IGNORE)
    mean, nll = fn(hidden, head, labels, weights)
    total = fn(hidden, head, labels, weights, reduction="sum")[0]
    count = int((labels != -100).sum())
    expected = (nll * weights).sum()
    assert rel_err(total, expected) <= 1e-6
    assert rel_err(total / count, mean) <= 1e-6
    for num in (7, 7.0, torch.tensor(7), torch.tensor(7.0)):
        assert rel_err(fn(hidden, head, labels, weights, num_items=num)[0], expected / 7) <= 1e-6


@pytest.mark.parametrize("api", ["one_call", "two_phase"])
def test_sum_reduction_gives_exact_normalisation_under_accumulation(api):
    fn = loss_fn(api)
    """Micro-batches with different token counts: sum-reduced / global count == full-batch mean."""
    hidden, head, labels, weights = make(b=3, ignore=[(0, 1), (2, 0), (2, 1), (2, 2), (2, 3)])
    full, _ = fn(hidden, head, labels, weights)
    full.backward()
    ref = grads(hidden, head.weight, head.bias)
    num_items = torch.tensor(int((labels != -100).sum()))
    acc = 0.0
    for sl in (slice(0, 1), slice(1, 3)):  # unequal micro-batches
        part = fn(hidden[sl], head, labels[sl], weights[sl], num_items=num_items)[0]
        part.backward()
        acc = acc + part.detach()
    got = grads(hidden, head.weight, head.bias)
    assert rel_err(acc, full) <= 1e-6
    for a, r in zip(got, ref):
        assert rel_err(a, r) <= 1e-5
    # whereas averaging per-micro-batch means is biased here
    means = [fn(hidden[sl], head, labels[sl], weights[sl])[0] for sl in (slice(0, 1), slice(1, 3))]
    assert abs(((means[0] + means[1]) / 2 - full).item()) > 1e-3


def test_two_phase_api_equals_one_call():
    """nll first, weights computed from it, then the loss: one chunked forward, same result."""
    hidden, head, labels, _ = make(ignore=IGNORE)
    nll = chunked_nll(hidden, head, labels, chunk_size=4)
    assert nll.requires_grad and nll.dtype == torch.float32
    weights = torch.softmax(-nll.detach(), dim=-1) * N  # any function of the long NLL
    loss = weighted_nll_loss(nll, labels != -100, weights)
    loss.backward()
    got = grads(hidden, head.weight, head.bias)
    loss1, nll1 = weighted_lm_loss(hidden, head, labels, weights, chunk_size=4)
    loss1.backward()
    ref = grads(hidden, head.weight, head.bias)
    assert torch.equal(loss, loss1) and torch.equal(nll.detach(), nll1)
    for a, r in zip(got, ref):  # same math; the one-call path scales by d loss / d total last
        assert rel_err(a, r) <= 1e-6


@pytest.mark.parametrize("api", ["one_call", "two_phase"])
def test_masked_weights_may_be_nan(api):
    hidden, head, labels, weights = make(ignore=IGNORE)
    weights[labels == -100] = float("nan")
    loss, _ = loss_fn(api)(hidden, head, labels, weights)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(hidden.grad).all() and torch.isfinite(head.weight.grad).all()


@pytest.mark.parametrize("spec", ["uniform", "dense:1"])
@pytest.mark.parametrize("api", ["one_call", "two_phase"])
def test_uniform_schemes_give_plain_cross_entropy_exactly(spec, api):
    from tokenweight import WeightingScheme

    hidden, head, labels, _ = make(ignore=IGNORE)
    plain, nll = loss_fn(api)(hidden, head, labels)
    mask = labels != -100
    short = nll + torch.randn(nll.shape, generator=torch.Generator().manual_seed(3))
    weights = WeightingScheme.parse(spec)(nll, short, mask)
    loss, _ = loss_fn(api)(hidden, head, labels, weights)
    assert torch.equal(loss, plain)
    assert (
        rel_err(plain, F.cross_entropy(F.linear(hidden, head.weight, head.bias).flatten(0, 1), labels.flatten()))
        <= 1e-6
    )


class _MaxNumel(TorchDispatchMode):
    """Records the largest tensor produced by any op, and the rows of every [rows, V] product."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab, self.max_numel, self.logit_rows, self.products = vocab, 0, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        if func in (
            torch.ops.aten.mm.out,
            torch.ops.aten.addmm.out,
            torch.ops.aten.mm.default,
            torch.ops.aten.addmm.default,
            torch.ops.aten.addmm_.default,
        ):
            self.products += 1
            if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[1] == self.vocab:
                self.logit_rows += out.shape[0]
        return out


@pytest.mark.parametrize("api", ["one_call", "two_phase"])
def test_never_holds_full_logits_and_skips_ignored_rows(api):
    """Largest tensor: one chunk of logits. Vocabulary products: kept rows only; the one-call path
    needs 3 products per chunk (no recomputation), the two-phase path 4, evaluation 1."""
    b, n, d, vocab, chunk = 2, 64, 8, 300, 16
    hidden, head, labels, weights = make(b=b, n=n, d=d, vocab=vocab, bias=False, ignore=[(0, j) for j in range(20)])
    kept = int((labels != -100).sum())
    chunks = -(-kept // chunk)
    with _MaxNumel(vocab) as probe:
        loss, _ = loss_fn(api)(hidden, head, labels, weights, chunk_size=chunk)
        loss.backward()
    assert probe.max_numel == chunk * vocab  # not b * n * vocab = 38400
    assert probe.logit_rows == (1 if api == "one_call" else 2) * kept
    assert probe.products == (3 if api == "one_call" else 4) * chunks
    with torch.no_grad(), _MaxNumel(vocab) as probe:
        loss_fn(api)(hidden, head, labels, weights, chunk_size=chunk)
    assert probe.logit_rows == kept and probe.products == chunks


def test_one_call_scales_by_upstream_gradient_and_refuses_a_second_backward():
    hidden, head, labels, weights = make(ignore=IGNORE)
    loss, _ = weighted_lm_loss(hidden, head, labels, weights, chunk_size=4)
    (loss * 3.5).backward(retain_graph=True)
    got = grads(hidden, head.weight, head.bias)
    ref_loss, _ = naive(hidden, head.weight, head.bias, labels, weights)
    (ref_loss * 3.5).backward()
    for a, r in zip(got, grads(hidden, head.weight, head.bias)):
        assert rel_err(a, r) <= 1e-5
    with pytest.raises(RuntimeError, match="twice"):
        loss.backward()


@pytest.mark.parametrize("api", ["one_call", "two_phase"])
def test_nll_equals_hf_llama_loss(api):
    from tests.tiny_models import tiny_llama

    torch.manual_seed(0)  # once: the second model and ids draw on from the first's RNG state
    for tie in (False, True):
        model = tiny_llama(64, None, tie_word_embeddings=tie)
        ids = torch.randint(0, 64, (2, 12))
        labels = ids.clone()
        labels[1, 8:] = -100  # HF ignores these targets too
        out = model(ids, labels=labels)
        logits_nll = F.cross_entropy(
            out.logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(), reduction="none"
        ).view(2, 11)
        out.loss.backward()
        ref = {k: p.grad.clone() for k, p in model.named_parameters()}
        model.zero_grad()

        hidden = model.model(ids).last_hidden_state[:, :-1]
        loss, nll = loss_fn(api)(hidden, model.lm_head, labels[:, 1:], chunk_size=5)
        loss.backward()
        assert rel_err(nll, logits_nll) <= 1e-5
        assert rel_err(loss, out.loss) <= 1e-5
        for k, p in model.named_parameters():
            assert rel_err(p.grad, ref[k]) <= 1e-4, k


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(chunk_size=0), "chunk_size"),
        (dict(chunk_size=2.5), "chunk_size"),
        (dict(reduction="none"), "reduction"),
        (dict(reduction="sum", num_items=3), "num_items"),
        (dict(num_items=-1), "num_items"),
        (dict(matmul_dtype=torch.int32), "matmul_dtype"),
    ],
)
def test_bad_arguments(kwargs, match):
    hidden, head, labels, _ = make()
    with pytest.raises(ValueError, match=match):
        weighted_lm_loss(hidden, head, labels, **kwargs)


def test_bad_shapes_and_values():
    hidden, head, labels, weights = make()
    with pytest.raises(ValueError, match="labels must have shape"):
        weighted_lm_loss(hidden, head, labels[:, :-1])
    with pytest.raises(ValueError, match="weights"):
        weighted_lm_loss(hidden, head, labels, weights[:, :-1])
    with pytest.raises(ValueError, match="lm_head weight"):
        weighted_lm_loss(hidden, nn.Linear(D + 1, V), labels)
    with pytest.raises(ValueError, match="lm_head must be"):
        weighted_lm_loss(hidden, "head", labels)
    with pytest.raises(ValueError, match="integer"):
        weighted_lm_loss(hidden, head, labels.float())
    bad = labels.clone()
    bad[1, 2] = V
    with pytest.raises(ValueError, match=rf"\[0, {V}\).*got {V}"):
        weighted_lm_loss(hidden, head, bad)


# ---------------------------------------------------------------------------- logit post-processing
POSTS = {
    "softcap": ((("softcap", 2.0),), False),  # Gemma-2: c·tanh(z/c)
    "div": ((("div", 4.0),), False),  # Granite: z / s
    "mul": ((("mul", 0.0625),), False),  # Cohere: z · s
    "mul_softcap_f32": ((("mul", 3.0), ("softcap", 5.0)), True),  # a scale, then a cap after upcasting
}


def post_reference(z, ops, float32):
    """The model's way: the ops on the full logits, out of place, then ``.float()`` (autograd)."""
    z = z.float() if float32 else z
    for op, c in ops:
        z = z * c if op == "mul" else z / c if op == "div" else torch.tanh(z / c) * c
    return z.float()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("post", list(POSTS))
@pytest.mark.parametrize("chunk_size", [3, 1000])
@pytest.mark.parametrize("api", ["one_call", "two_phase"])
def test_postprocessing_matches_naive_loss_nll_and_grads(device, post, chunk_size, api):
    """NLL, loss and every gradient equal autograd through the post-processed full logits."""
    from tokenweight.logits import LogitPostprocessing

    ops, float32 = POSTS[post]
    hidden, head, labels, weights = make(ignore=IGNORE, device=device)
    with torch.no_grad():
        head.weight.mul_(4)  # logits of several units: the soft-cap is far from linear there
    pp = LogitPostprocessing(ops, float32)
    loss, nll = loss_fn(api)(hidden, head, labels, weights, chunk_size=chunk_size, postprocessing=pp)
    loss.backward()
    got = grads(hidden, head.weight, head.bias)
    logits = post_reference(F.linear(hidden, head.weight, head.bias), ops, float32)
    ref_nll = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none", ignore_index=-100)
    mask = labels != -100
    ref_loss = (ref_nll * weights * mask).sum() / mask.sum()
    ref_loss.backward()
    ref = grads(hidden, head.weight, head.bias)
    plain = F.cross_entropy(F.linear(hidden, head.weight, head.bias).transpose(1, 2), labels, reduction="none")
    assert (plain - ref_nll).abs().max() > 0.1  # the post-processing matters here
    assert rel_err(loss, ref_loss) <= 1e-5 and rel_err(nll, ref_nll) <= 1e-5
    for a, r in zip(got, ref):
        assert rel_err(a, r) <= 1e-5


@pytest.mark.parametrize("float32", [False, True])
def test_postprocessing_in_bf16_runs_where_the_model_runs_it(float32):
    """bf16: the ops run in bf16 on the bf16 product (the model's own bf16 logits), unless the family
    upcasts first; either way the NLL equals the model's ``logits.float()`` cross-entropy."""
    from tokenweight.logits import LogitPostprocessing

    ops = (("softcap", 2.0),)
    hidden, head, labels, _ = make(dtype=torch.bfloat16)
    pp = LogitPostprocessing(ops, float32)
    nll = chunked_nll(hidden, head, labels, chunk_size=4, postprocessing=pp)
    with torch.no_grad():
        logits = post_reference(F.linear(hidden, head.weight, head.bias), ops, float32)
    ref = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
    assert rel_err(nll, ref) <= 1e-5


def test_postprocessing_arguments():
    from tokenweight.logits import LogitPostprocessing

    hidden, head, labels, _ = make()
    with pytest.raises(ValueError, match="postprocessing must be"):
        chunked_nll(hidden, head, labels, postprocessing=(("mul", 2.0),))
    with pytest.raises(ValueError, match="last"):
        LogitPostprocessing((("softcap", 2.0), ("mul", 2.0)))
    with pytest.raises(ValueError, match="one of"):
        LogitPostprocessing((("pow", 2.0),))
    with pytest.raises(ValueError, match="non-zero"):
        LogitPostprocessing((("div", 0.0),))
    # an empty post-processing is no post-processing: the plain loss, bitwise
    a = chunked_nll(hidden, head, labels, postprocessing=LogitPostprocessing())
    b = chunked_nll(hidden, head, labels)
    assert torch.equal(a, b) and LogitPostprocessing().describe() == "z"
    assert LogitPostprocessing((("mul", 3.0), ("softcap", 30.0))).describe() == "30·tanh(z·3/30)"
