"""``--loss-kernel chunked|cce``: the option, its refusals, and the glue onto Cut-Cross-Entropy.

CCE itself is a Triton kernel that cannot even be imported on this CPU machine; the glue (alignment,
ignore_index, soft-cap and scale mapping, dtype casts, gradient flow into hidden and weight, the
trainer's weighted loss on top) is tested with :class:`ReferenceCCE`, a brute-force pure-torch
``linear_cross_entropy`` with CCE 25.1.1's documented semantics, against ``chunked_nll`` (float32:
1e-6). The real kernel against ``chunked_nll`` on a GPU is ``benchmarks/gpu_check.sh`` (section ``cce``).
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import TrainingArguments

import tokenweight.loss_kernels as K
from tests.train.train_helpers import make_prepared, sequences, tiny_model
from tokenweight.cli.main import main
from tokenweight.errors import UsageError
from tokenweight.logits import LogitPostprocessing
from tokenweight.loss import chunked_nll
from tokenweight.stages.pretrain import PretrainConfig
from tokenweight.stages.train import TrainConfig
from tokenweight.token_weighting import nll_output_layer
from tokenweight.train.collate import PadCollator
from tokenweight.train.runner import RESUMABLE_CHANGES
from tokenweight.train.trainer import WeightedTrainer

V, D = 50, 16
ALL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class ReferenceCCE:
    """Brute force of ``cut_cross_entropy.linear_cross_entropy`` (25.1.1, read from its source and doc):
    ``F.cross_entropy(softcap((e @ c.T).float()), targets)`` where the product is of ``e.dtype``
    values (``c`` is cast to it) accumulated in float32; ``shift`` pairs ``e[..., :-1]`` with
    ``targets[..., 1:]``; ``reduction="none"`` gives ``targets``' shape (``[..., n-1]`` with shift),
    0 at ignored positions; ``"mean"`` averages over the scored positions. Every call is recorded."""

    def __init__(self):
        self.calls = []

    def __call__(
        self,
        e,
        c,
        targets,
        ignore_index=-100,
        softcap=None,
        reduction="mean",
        shift=False,
        filter_eps="high",
        impl="cce",
    ):
        assert e.shape[:-1] == targets.shape and e.shape[-1] == c.shape[1]  # CCE's own asserts
        self.calls.append(
            {
                "e_dtype": e.dtype,
                "c_dtype": c.dtype,
                "ignore_index": ignore_index,
                "softcap": softcap,
                "reduction": reduction,
                "shift": shift,
                "filter_eps": filter_eps,
                "impl": impl,
            }
        )
        if shift:
            e, targets = e[..., :-1, :], targets[..., 1:]
        logits = e.float() @ c.to(e.dtype).float().T
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        nll = F.cross_entropy(
            logits.reshape(-1, c.shape[0]), targets.reshape(-1), ignore_index=ignore_index, reduction="none"
        ).view(targets.shape)
        if reduction == "none":
            return nll
        return nll.sum() if reduction == "sum" else nll.sum() / (targets != ignore_index).sum()


@pytest.fixture
def reference(monkeypatch):
    """The stand-in behind ``cce_nll`` on any device. It declares float32 backward too (the real
    kernel: 16-bit only, tested below) so that gradients compare with float32 ``chunked_nll`` at 1e-6."""
    ref = ReferenceCCE()
    monkeypatch.setattr(K, "_kernel_for", lambda device: K.CCEKernel(ref, ALL_DTYPES))
    return ref


def inputs(seed=0, shape=(2, 7), ignored=(0, 3, 9)):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(*shape, D, generator=g).requires_grad_()
    head = nn.Linear(D, V, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(V, D, generator=g) * 0.5)
    labels = torch.randint(0, V, shape, generator=g)
    labels.view(-1)[list(ignored)] = -100
    coef = torch.rand(shape, generator=g)  # d loss / d nll: token weights
    return hidden, head, labels, coef


def loss_and_grads(fn, hidden, head, labels, coef, autocast=False, **kw):
    """NLL and the gradients of ``sum(coef * nll)``; ``autocast``: the forward under bf16 autocast,
    the backward outside it (as the HF Trainer runs them)."""
    hidden.grad, head.weight.grad = None, None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        nll = fn(hidden, head, labels, **kw)
    (nll * coef).sum().backward()
    return nll.detach(), hidden.grad.clone(), head.weight.grad.clone()


POSTS = {
    "none": LogitPostprocessing(),
    "granite z/4": LogitPostprocessing((("div", 4.0),)),
    "cohere z*0.5": LogitPostprocessing((("mul", 0.5),)),
    "z/3 (inexact scale)": LogitPostprocessing((("div", 3.0),)),
    "gemma 2*tanh(z/2)": LogitPostprocessing((("softcap", 2.0),), float32=True),
    "z*3, z/2, 1.5*tanh(z/1.5)": LogitPostprocessing((("mul", 3.0), ("div", 2.0), ("softcap", 1.5))),
}


@pytest.mark.parametrize("name", POSTS)
def test_cce_nll_equals_chunked_nll_loss_and_gradients(reference, name):
    post = POSTS[name]
    hidden, head, labels, coef = inputs()
    ours = loss_and_grads(K.cce_nll, hidden, head, labels, coef, postprocessing=post)
    want = loss_and_grads(chunked_nll, hidden, head, labels, coef, postprocessing=post, chunk_size=5)
    for got, ref, what in zip(ours, want, ("nll", "hidden grad", "weight grad")):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-6, msg=f"{name}: {what}")
    assert ours[0].dtype == torch.float32 and bool((ours[0].view(-1)[[0, 3, 9]] == 0).all())
    assert ours[0].abs().sum() > 1 and ours[2].abs().sum() > 0  # not a vacuous comparison
    call = reference.calls[-1]
    factor, softcap = K.cce_logit_mapping(post)
    assert call["softcap"] == softcap and (factor != 1.0) == (name not in ("none", "gemma 2*tanh(z/2)"))


def test_cce_is_called_as_documented_aligned_exact_per_token(reference):
    hidden, head, labels, coef = inputs()
    K.cce_nll(hidden, head.weight, labels, ignore_index=-100)  # a bare weight works too
    assert reference.calls == [
        {
            "e_dtype": torch.float32,
            "c_dtype": torch.float32,
            "ignore_index": -100,
            "softcap": None,
            "reduction": "none",  # per-token: the weights come from nll.detach()
            "shift": False,  # hidden is already aligned with labels (the caller shifts)
            "filter_eps": None,  # exact gradients, not CCE's default "high"
            "impl": "cce",
        }
    ]
    other = labels.masked_fill(labels == -100, 7)
    other.view(-1)[5] = 7
    nll = K.cce_nll(hidden, head, other, ignore_index=7)
    assert reference.calls[-1]["ignore_index"] == 7 and bool((nll[other == 7] == 0).all())
    ref = chunked_nll(hidden, head, other, ignore_index=7)
    torch.testing.assert_close(nll, ref, rtol=0, atol=1e-6)


def test_bf16_autocast_casts_both_to_the_compute_dtype_and_gradients_reach_fp32_masters(reference):
    post = LogitPostprocessing((("div", 4.0),))  # a power of two: exact in bf16 too
    hidden, head, labels, coef = inputs(seed=1)
    nll, gh, gw = loss_and_grads(K.cce_nll, hidden, head, labels, coef, autocast=True, postprocessing=post)
    assert reference.calls[-1]["e_dtype"] == reference.calls[-1]["c_dtype"] == torch.bfloat16
    assert gh.dtype == gw.dtype == torch.float32
    # the same bf16 values multiplied in float32 (what CCE does), by chunked_nll
    h16 = hidden.detach().bfloat16().float().requires_grad_()
    head16 = nn.Linear(D, V, bias=False)
    with torch.no_grad():
        head16.weight.copy_(head.weight.bfloat16().float())
    want = loss_and_grads(chunked_nll, h16, head16, labels, coef, postprocessing=post)
    torch.testing.assert_close(nll, want[0], rtol=0, atol=1e-6)
    for got, ref in ((gh, want[1]), (gw, want[2])):  # the gradients of the bf16 copies: rounded to bf16
        torch.testing.assert_close(got, ref.bfloat16().float(), rtol=2**-7, atol=1e-7)


def test_no_scored_label_gives_zeros_and_zero_gradients_without_calling_cce(reference):
    hidden, head, labels, coef = inputs()
    nll, gh, gw = loss_and_grads(K.cce_nll, hidden, head, torch.full_like(labels, -100), coef)
    assert reference.calls == [] and nll.shape == labels.shape
    assert not nll.any() and not gh.any() and not gw.any()


def test_cce_nll_refuses_what_cce_cannot_do(reference, monkeypatch):
    hidden, head, labels, _ = inputs()
    with pytest.raises(ValueError, match=r"CCE has no bias term .*: use --loss-kernel chunked"):
        K.cce_nll(hidden, nn.Linear(D, V), labels)
    bad = labels.clone()
    bad[0, 1] = V
    with pytest.raises(ValueError, match=rf"labels must lie in \[0, {V}\) or equal ignore_index=-100, got {V}"):
        K.cce_nll(hidden, head, bad)
    with pytest.raises(ValueError, match="computes in float32, bfloat16 or float16, got torch.float64"):
        K.cce_nll(hidden.double(), head.weight.double(), labels)
    monkeypatch.setattr(K, "_kernel_for", lambda device: K.CCEKernel(ReferenceCCE()))  # the real dtype rule
    with pytest.raises(ValueError, match="CCE's backward takes 16-bit hidden states only.*--dtype bfloat16"):
        K.cce_nll(hidden, head, labels)
    with torch.no_grad():  # float32 without gradients: CCE's forward runs
        assert K.cce_nll(hidden, head, labels).shape == labels.shape
    monkeypatch.undo()
    with pytest.raises(ValueError, match="needs CUDA tensors .* use tokenweight.loss.chunked_nll"):
        K.cce_nll(hidden, head, labels)
    with pytest.raises(ValueError, match=r"cannot express the logit post-processing"):
        K.cce_logit_mapping(types.SimpleNamespace(ops=(("exp", 1.0),), describe=lambda: "exp(z)"))


@pytest.fixture
def no_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "cut_cross_entropy", None)  # import fails, as without triton
    K.cce_kernel.cache_clear()
    yield
    K.cce_kernel.cache_clear()


def test_the_package_is_imported_pinned_or_refused_with_the_install_line(no_package, monkeypatch):
    with pytest.raises(ImportError, match=r"cut-cross-entropy cannot be imported .*: pip install 'tokenweight\[cce\]'"):
        K.cce_kernel()
    module = types.ModuleType("cut_cross_entropy")
    module.__version__, module.linear_cross_entropy = "25.3.1", ReferenceCCE()
    monkeypatch.setitem(sys.modules, "cut_cross_entropy", module)
    with pytest.raises(ImportError, match="25.3.1 is installed, tokenweight is written and tested against 25.1.1"):
        K.cce_kernel()
    module.__version__ = "25.1.1"
    kernel = K.cce_kernel()
    assert kernel.linear_cross_entropy is module.linear_cross_entropy
    assert kernel.backward_dtypes == (torch.bfloat16, torch.float16)


def test_cce_problem_device_then_package_then_dtype(no_package, monkeypatch):
    assert K.cce_problem("cpu", torch.bfloat16) == (
        "--loss-kernel cce needs a CUDA GPU (Triton), and this run's device is cpu: use --loss-kernel chunked"
    )
    problem = K.cce_problem("cuda", torch.bfloat16)
    assert problem.startswith("--loss-kernel cce: cut-cross-entropy cannot be imported (")
    assert problem.endswith(": pip install 'tokenweight[cce]', or use --loss-kernel chunked")
    module = types.ModuleType("cut_cross_entropy")
    module.__version__, module.linear_cross_entropy = K.CCE_VERSION, ReferenceCCE()
    monkeypatch.setitem(sys.modules, "cut_cross_entropy", module)
    assert K.cce_problem("cuda", torch.float32) == (
        "--loss-kernel cce trains in bfloat16 or float16 only (CCE's backward takes 16-bit hidden states), got "
        "float32: pass --dtype bfloat16, or use --loss-kernel chunked"
    )
    assert K.cce_problem(torch.device("cuda", 0), torch.bfloat16) is None
    assert K.cce_problem("cuda", torch.float16) is None


def test_cce_model_problem_names_a_bias_and_accepts_scales_and_caps():
    model = tiny_model()
    assert K.cce_model_problem(model) is None
    model.config.model_type, model.config.final_logit_softcapping = "gemma2", 30.0  # the rule's soft-cap
    assert K.cce_model_problem(model) is None
    model.lm_head = nn.Linear(32, model.config.vocab_size)
    assert K.cce_model_problem(model) == (
        "--loss-kernel cce: CCE has no bias term and this output layer has one: use --loss-kernel chunked"
    )


# ------------------------------------------------------------------------------ option and stages
def test_option_default_choices_and_refusal_here():
    config = TrainConfig(model="m", data="d", out="o")
    assert config.loss_kernel == "chunked" and PretrainConfig(init="tiny", data="d", out="o").loss_kernel == "chunked"
    # the same function, other rounding (like the attention kernel): a run may continue with the other
    assert "loss_kernel" in RESUMABLE_CHANGES and "loss_kernel" not in config.settings()
    assert config.to_dict()["loss_kernel"] == "chunked"  # recorded in run_config.json
    with pytest.raises(ValueError, match="loss_kernel must be one of chunked, cce, got 'liger'"):
        config.replace(loss_kernel="liger").validate()
    for cls, kw in ((TrainConfig, {"model": "m"}), (PretrainConfig, {"init": "tiny"})):
        with pytest.raises(ValueError, match=r"needs a CUDA GPU \(Triton\), and this run's device is cpu"):
            cls(data="d", out="o", loss_kernel="cce", device="cpu", dtype="bfloat16", **kw).validate()


def test_option_refusals_as_on_a_cuda_machine(no_package, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the rules as on a CUDA machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    config = TrainConfig(model="m", data="d", out="o", loss_kernel="cce", device="cuda", dtype="bfloat16")
    with pytest.raises(ValueError, match=r"pip install 'tokenweight\[cce\]', or use --loss-kernel chunked"):
        config.validate()
    module = types.ModuleType("cut_cross_entropy")
    module.__version__, module.linear_cross_entropy = K.CCE_VERSION, ReferenceCCE()
    monkeypatch.setitem(sys.modules, "cut_cross_entropy", module)
    config.validate()
    with pytest.raises(ValueError, match="got float32: pass --dtype bfloat16, or use --loss-kernel chunked"):
        config.replace(dtype="float32").validate()


def test_cli_refuses_cce_here_with_one_line_before_any_work(tmp_path, capsys):
    data = make_prepared(tmp_path / "data", n=16, count=2)
    out = tmp_path / "run"
    capsys.readouterr()  # the data's progress bars
    for command in ("train", "pretrain"):
        argv = [command, "--init", "tiny", "--data", str(data), "--out", str(out), "--loss-kernel", "cce"]
        assert main([*argv, "--device", "cpu"] + (["--window", "8"] if command == "pretrain" else [])) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            "tokenweight: error: --loss-kernel cce needs a CUDA GPU (Triton), and this run's device is cpu: "
            "use --loss-kernel chunked"
        ]
        assert not out.exists()


def test_the_trainer_check_names_the_model(tmp_path, monkeypatch):
    """The model's side of CCE is checked once, by the trainer, before any step."""
    import tokenweight.train.trainer as T

    monkeypatch.setattr(T, "cce_problem", lambda device, dtype: None)  # as on a GPU with the package
    model = tiny_model()
    model.config._name_or_path = "tiny"
    trainer(tmp_path, model, "chunked")
    trainer(tmp_path, model, "cce")
    model.lm_head = nn.Linear(32, model.config.vocab_size)
    trainer(tmp_path, model, "chunked")  # chunked: a bias is fine
    with pytest.raises(UsageError, match="^model 'tiny': --loss-kernel cce: CCE has no bias term"):
        trainer(tmp_path, model, "cce")


# ------------------------------------------------------------------------------ the trainer
def trainer(tmp_path, model, loss_kernel):
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    return WeightedTrainer(model=model, args=args, scheme="dense:0.75", loss_kernel=loss_kernel)


def test_trainer_refuses_cce_on_cpu_and_unknown_kernels(tmp_path):
    with pytest.raises(UsageError, match="needs a CUDA GPU"):
        trainer(tmp_path, tiny_model(), "cce")
    with pytest.raises(ValueError, match="loss_kernel must be one of chunked, cce, got 'x'"):
        trainer(tmp_path, tiny_model(), "x")
    with pytest.raises(ValueError, match="loss_kernel must be one of"):
        with nll_output_layer(nn.Linear(2, 3), torch.zeros(1, 1), 4, loss_kernel="fused"):
            pass


@pytest.mark.parametrize("softcap", [None, 2.0])
def test_trainer_weighted_loss_on_cce_equals_chunked(tmp_path, reference, monkeypatch, softcap):
    """The trainer's dense:0.75 loss (weights from nll.detach()) and every parameter's gradient on the
    CCE glue equal those on the chunked loss (float32, stand-in kernel), with padding, through the
    model's own forward and its logit post-processing (a Gemma-2-style soft-cap)."""
    import tokenweight.train.trainer as T

    monkeypatch.setattr(T, "cce_problem", lambda device, dtype: None)  # as on a GPU with the package
    rows = sequences(3, 12, seed=5, short_every=2)
    short = torch.rand(3, 12, generator=torch.Generator().manual_seed(1)) * 4  # token-aligned column
    batch = PadCollator(0)([{"input_ids": r, "short_nll": short[i, : len(r)]} for i, r in enumerate(rows)])
    results = {}
    for kernel in ("chunked", "cce"):
        model = tiny_model(n=16, tie=False)
        if softcap:
            model.config.model_type, model.config.final_logit_softcapping = "gemma2", softcap
        t = trainer(tmp_path / kernel, model, kernel)
        loss = t.compute_loss(model, batch, num_items_in_batch=(batch["labels"][:, 1:] != -100).sum())
        loss.backward()
        results[kernel] = (loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()})
    assert len(reference.calls) == 1 and reference.calls[0]["softcap"] == softcap
    torch.testing.assert_close(results["cce"][0], results["chunked"][0], rtol=0, atol=1e-6)
    for k, g in results["chunked"][1].items():
        torch.testing.assert_close(results["cce"][1][k], g, rtol=0, atol=1e-6, msg=k)
