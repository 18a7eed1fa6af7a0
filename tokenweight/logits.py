"""The output layer of a causal LM, replaced: logit post-processing and the swap of its forward.

Why this module exists: the chunked loss (:mod:`tokenweight.loss`) and the scorer
(:mod:`tokenweight.scoring`) never let a model compute its full ``[b, n, V]`` logits. Both run the
model's own forward (so whatever it does to the hidden states before the output layer, and every
DDP/FSDP/DeepSpeed hook, runs as usual) with the output layer's ``forward`` replaced by a function
that computes what is needed from the hidden states it receives. Two things make that exact:

- Some families change the logits after the output layer (Gemma-2's soft-capping
  ``c·tanh(z/c)``, Granite's ``z / s``, Cohere's ``z · s``, ...). :class:`LogitPostprocessing`
  is that change, applied by the replacement chunk by chunk with the model's own operations in
  the model's order (so the values are bitwise the model's), with its derivative for the loss;
  which family does what is the one rule :func:`logit_postprocessing` (:data:`LOGIT_POSTPROCESSING`).
- Inside :func:`replaced_output_layer` the model's own post-processing is switched to the
  identity (its settings set to ``None``/``1`` and restored on exit), so the model's forward
  returns the replacement's result unchanged. :func:`probe_output_layer` checks exactly that
  with one forward of four tokens: a family that changes the output layer's result in a way no
  rule covers is found before any work, not as a wrong number later.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from tokenweight.documents import prediction_kwargs

__all__ = [
    "LOGIT_POSTPROCESSING",
    "LogitPostprocessing",
    "logit_postprocessing",
    "output_layer_problem",
    "probe_output_layer",
    "replaced_output_layer",
]

_OPS = ("mul", "div", "softcap")


@dataclass(frozen=True)
class LogitPostprocessing:
    """What a model does to its output layer's logits ``z`` before the softmax (empty: nothing).

    ``ops``: ``("mul", c)`` is ``z * c``, ``("div", c)`` is ``z / c``, ``("softcap", c)`` is
    ``c * tanh(z / c)`` (computed as the models do: divide, tanh, multiply; only as the last op),
    in the model's order. ``float32``: the model upcasts the logits before them (else they run in
    the logits' dtype, as the model runs them). ``switches``: ``(where, attribute, neutral)``
    settings that make the model's own forward skip them: ``where`` is ``"config"`` (the model's
    text config), ``""`` (the model itself) or a dotted submodule path (``"model"``).
    """

    ops: tuple[tuple[str, float], ...] = ()
    float32: bool = False
    switches: tuple[tuple[str, str, object], ...] = ()

    def __post_init__(self):
        for k, (op, c) in enumerate(self.ops):
            if op not in _OPS:
                raise ValueError(f"logit post-processing op must be one of {_OPS}, got {op!r}")
            if op == "softcap" and k != len(self.ops) - 1:
                raise ValueError("soft-capping must be the last logit post-processing op")
            if not (isinstance(c, float) and c != 0 and c == c):
                raise ValueError(f"logit post-processing {op} needs a finite non-zero float, got {c!r}")

    def __bool__(self) -> bool:
        return bool(self.ops)

    @property
    def softcap(self) -> float | None:
        """The soft-capping constant ``c``, None without soft-capping."""
        return self.ops[-1][1] if self.ops and self.ops[-1][0] == "softcap" else None

    def describe(self) -> str:
        """The formula, e.g. ``30·tanh(z/30)``, ``z/8``, ``z·0.0625``; ``z`` when empty."""
        z = "z"
        for op, c in self.ops:
            z = {"mul": f"{z}·{c:g}", "div": f"{z}/{c:g}", "softcap": f"{c:g}·tanh({z}/{c:g})"}[op]
        return z

    def apply_(self, z: Tensor) -> Tensor:
        """``z`` post-processed in place (and returned): ``[..., V]`` logits, any dtype."""
        for op, c in self.ops:
            if op == "mul":
                z.mul_(c)
            elif op == "div":
                z.div_(c)
            else:
                z.div_(c).tanh_().mul_(c)
        return z

    def softcap_grad(self, out: Tensor, buf: Tensor) -> Tensor | None:
        """``d softcap / d its input = 1 - (out / c)^2`` from the post-processed logits ``out``,
        written into ``buf`` (same shape, float32); None without soft-capping. Call it before
        ``out`` is overwritten (by the in-place log-softmax)."""
        c = self.softcap
        if c is None:
            return None
        return torch.div(out, c, out=buf).square_().neg_().add_(1.0)

    def backward_(self, grad: Tensor, dsoftcap: Tensor | None) -> Tensor:
        """``grad`` (d loss / d post-processed logits) times d post / d z, in place: the chain rule
        of :meth:`apply_` backwards (``dsoftcap`` from :meth:`softcap_grad`)."""
        for op, c in reversed(self.ops):
            if op == "softcap":
                grad.mul_(dsoftcap)
            elif op == "mul":
                grad.mul_(c)
            else:
                grad.div_(c)
        return grad


def _owner(model: nn.Module, where: str):
    if where == "config":
        config = model.config
        return config.get_text_config() if hasattr(config, "get_text_config") else config
    return model.get_submodule(where) if where else model


@contextlib.contextmanager
def replaced_output_layer(
    model: nn.Module, forward: Callable[[Tensor], Tensor], post: LogitPostprocessing
) -> Iterator[None]:
    """Within: ``model``'s output layer (``get_output_embeddings()``) returns ``forward(hidden)``
    and the model's own logit post-processing ``post`` is switched to the identity, so the model's
    forward returns ``forward``'s result (for a model :func:`probe_output_layer` accepts). The
    output layer's instance ``forward`` and every switched setting are restored on exit (also on
    error). ``forward`` must not call the output layer module (its ``forward`` is ``forward``).
    """
    head = model.get_output_embeddings()
    had, previous = "forward" in head.__dict__, head.__dict__.get("forward")
    saved = []
    try:
        for where, attribute, neutral in post.switches:
            owner = _owner(model, where)
            saved.append((owner, attribute, getattr(owner, attribute)))
            setattr(owner, attribute, neutral)
        head.forward = forward
        yield
    finally:
        if had:
            head.forward = previous
        else:
            head.__dict__.pop("forward", None)
        for owner, attribute, value in reversed(saved):
            setattr(owner, attribute, value)


def probe_output_layer(model: nn.Module, post: LogitPostprocessing) -> str | None:
    """Why the output layer of ``model`` cannot be replaced exactly (None: it can).

    A model can be served when its output layer is an ``nn.Linear`` and, with it replaced and
    ``post`` switched off (:func:`replaced_output_layer`), a forward of four tokens calls the
    output layer once on ``[1, 4, d]`` hidden states and returns its result unchanged (bitwise).
    The answer is a clause for an error message (``"its output layer is ..."``).
    """
    get_head = getattr(model, "get_output_embeddings", None)
    if getattr(model, "config", None) is None or get_head is None:
        return "it is not a transformers causal LM (it has no config or get_output_embeddings)"
    try:
        head = get_head()
    except (AttributeError, NotImplementedError):
        head = None
    if not isinstance(head, nn.Linear):
        name = type(head).__name__
        kind = "missing" if head is None else f"{'an' if name[0] in 'AEIOU' else 'a'} {name}"
        return f"its output layer is {kind}, not a linear map (nn.Linear)"
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    ids = (torch.arange(4, device=device) % head.out_features)[None]
    calls = []

    def marker(hidden: Tensor) -> Tensor:  # exact in every float dtype: 0.5, 0.75, 1.0, 1.25
        calls.append(tuple(hidden.shape))
        return torch.arange(hidden.shape[:-1].numel(), device=hidden.device).view(hidden.shape[:-1]) * 0.25 + 0.5

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), replaced_output_layer(model, marker, post):
            out = model(input_ids=ids, use_cache=False, **prediction_kwargs(model))
    except Exception as e:  # noqa: BLE001 -- any failure means: this forward cannot be served this way
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        return f"its forward fails when its output layer is replaced ({type(e).__name__}: {first})"
    finally:
        model.train(was_training)
    logits = getattr(out, "logits", None) if not isinstance(out, (tuple, list)) else out[0]
    expected = torch.arange(4, device=device).view(1, 4) * 0.25 + 0.5
    if calls != [(1, 4, head.in_features)]:
        return f"its forward does not call its output layer once on the last hidden states (calls: {calls})"
    if not isinstance(logits, Tensor) or logits.shape != expected.shape or not torch.equal(logits.float(), expected):
        return "it changes its logits after the output layer in a way tokenweight has no rule for"
    return None


class _Rule(NamedTuple):
    """A family's logit post-processing: ``steps`` ``(op, where, attribute)`` in the forward's
    order (op ``mul``/``div``/``softcap``; the value is the text config's ``attribute``, the
    forward reads it at ``where``: ``"config"``, ``""`` the model, ``"model"`` its decoder)."""

    steps: tuple[tuple[str, str, str], ...]
    float32: bool = False


_SOFTCAP = _Rule((("softcap", "config", "final_logit_softcapping"),))
_GRANITE = _Rule((("div", "config", "logits_scaling"),))
_COHERE = _Rule((("mul", "", "logit_scale"),))

#: what each family of transformers 5.23 does to its logits after the output layer, by model_type,
#: read from its ``*ForCausalLM.forward`` (the one place of these rules: the chunked loss, the
#: trainer and the scorer all apply :func:`logit_postprocessing`): soft-capping ``c·tanh(z/c)``
#: when ``final_logit_softcapping`` is not None (Gemma-2, Gemma-3 text, VaultGemma, NanoChat;
#: Beam after upcasting to float32), Granite's ``z / logits_scaling``, HyperCLOVA X's
#: ``z · logits_scaling``, Cohere's ``z · logit_scale``, Falcon-H1's ``z · lm_head_multiplier``.
#: A family not listed is served only if it leaves the output layer's result unchanged
#: (:func:`tokenweight.logits.probe_output_layer` checks that once per model).
LOGIT_POSTPROCESSING: dict[str, _Rule] = {
    **dict.fromkeys(("gemma2", "gemma3_text", "gemma4_text", "vaultgemma", "nanochat"), _SOFTCAP),
    "beam": _Rule(_SOFTCAP.steps, float32=True),
    **dict.fromkeys(("granite", "granite_swa", "granitemoe", "granitemoe_swa", "granitemoeshared"), _GRANITE),
    "hyperclovax": _Rule((("mul", "config", "logits_scaling"),)),
    **dict.fromkeys(("cohere", "cohere2", "cohere2_moe"), _COHERE),
    "falcon_h1": _Rule((("mul", "model", "lm_head_multiplier"),)),
}


def logit_postprocessing(config) -> LogitPostprocessing:
    """What a model of ``config`` does to its logits after the output layer (empty: nothing).

    The rule of its family (:data:`LOGIT_POSTPROCESSING`, by ``config.model_type``) with the
    config's values: a soft-cap of None and a scale of 1 are left out (the model skips the first,
    the second is the identity). The switches say how the model's own forward skips them.
    """
    rule = LOGIT_POSTPROCESSING.get(getattr(config, "model_type", None))
    if rule is None:
        return LogitPostprocessing()
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    ops, switches = [], []
    for op, where, attribute in rule.steps:
        value = getattr(text, attribute, None)
        if value is None or (op != "softcap" and value == 1):
            continue
        ops.append((op, float(value)))
        switches.append((where, attribute, None if op == "softcap" else 1.0))
    return LogitPostprocessing(tuple(ops), rule.float32 and bool(ops), tuple(switches))


_PROBED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> output_layer_problem


def output_layer_problem(model: nn.Module) -> str | None:
    """Why the chunked paths (scoring here, the training loss) cannot replace ``model``'s output
    layer exactly, as a clause for a message; None when they can (:func:`tokenweight.logits.probe_output_layer`
    with the family's :func:`logit_postprocessing`, run once per model object)."""
    if model in _PROBED:
        return _PROBED[model]
    config = getattr(model, "config", None)
    problem = probe_output_layer(model, logit_postprocessing(config) if config is not None else LogitPostprocessing())
    _PROBED[model] = problem
    return problem
