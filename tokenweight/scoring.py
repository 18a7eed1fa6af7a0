"""Token scoring: per-token negative log-likelihood with full and with short context.

Pure functions (tensors in, tensors out, no gradient, the model's train/eval mode restored), all
aligned like the labels of a causal LM: entry ``j`` of the ``[b, n-1]`` result is the NLL of token
``j+1`` given what precedes it. Each takes packed rows (``doc_lengths``, :mod:`tokenweight.documents`)
and then gives exactly what their documents give run one by one (a document's first token: 0).

- :func:`token_nll`: full context, one forward pass.
- :func:`short_context_nll`: the *short-context* NLL of docs/METHOD.md: every token scored in a
  separate window of at most ``window`` tokens (which windows, and which targets each scores:
  :mod:`tokenweight.windows`). :func:`self_scored_short_nll`: the same, for the model that also
  gave the full-context NLL (its window 0 is that pass).
- :func:`truncated_context_nll`: the short context of Fang et al. (LongPPL, LongCE), windowed by
  :func:`tokenweight.windows.truncated_windows`. The same batched runner as
  :func:`short_context_nll`.

Why it is fast: all windows of a batch are stacked and run together (windows of equal length need
no attention mask at all), the model's output layer is replaced for the pass
(:mod:`tokenweight.logits`: the model's own logit post-processing, e.g. Gemma-2's soft-capping, is
applied by the replacement, :func:`logit_postprocessing`), and the vocabulary projection
is applied only to the positions that are kept -- on a small-vocabulary model the LM head is a
large share of the work, and a quarter of every strided window is context that is never scored.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenweight.documents import prediction_kwargs
from tokenweight.logits import (
    LogitPostprocessing,
    logit_postprocessing,
    output_layer_problem,
    replaced_output_layer,
)
from tokenweight.windows import check_window, plan_windows, truncated_windows, windows_per_pass


def head_logits(head: nn.Linear, hidden: Tensor, post: LogitPostprocessing) -> Tensor:
    """float32 logits ``[..., V]`` of ``hidden [..., d]``, post-processed as the model does it (in
    the head's dtype, or in float32 for a family that upcasts first), so they equal the model's own
    ``logits.float()``. Calls ``F.linear``, not the module (whose forward may be replaced)."""
    z = F.linear(hidden, head.weight, head.bias)
    if post and not post.float32:
        post.apply_(z)
    z = z.float()
    if post and post.float32:
        post.apply_(z)
    return z


def _head_chunk(vocab_size: int, device: torch.device) -> int:
    """Positions per LM-head chunk.

    On CPU, log-softmax over a ``[rows, V]`` block is memory-bound, so one large block is much
    slower than the same rows in cache-sized blocks (benchmarks/RESULTS.md has the measurement). So
    on CPU the block is kept cache-sized (about 4 MB of logits); on GPUs larger blocks keep the GEMM
    efficient while still bounding memory.
    """
    if device.type == "cpu":
        return max(16, min(2048, (1 << 20) // max(vocab_size, 1)))
    return max(256, min(8192, (1 << 28) // max(vocab_size, 1)))


class _eval_mode:
    """Context manager: model in eval mode and no gradient; the previous mode is restored."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()

    def __exit__(self, *exc):
        self.no_grad.__exit__(*exc)
        self.model.train(self.was_training)


def _split_model(model: nn.Module) -> tuple[nn.Linear, LogitPostprocessing] | None:
    """``(output layer, its post-processing)`` when the output layer can be replaced exactly
    (:func:`output_layer_problem`); None: run the model's own forward (full logits)."""
    if output_layer_problem(model) is not None:
        return None
    return model.get_output_embeddings(), logit_postprocessing(model.config)


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _nll_at(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    rows: Tensor,
    cols: Tensor,
    targets: Tensor,
    **forward: Tensor | None,
) -> Tensor:
    """NLL of ``targets[k]`` predicted at position ``(rows[k], cols[k])`` of a forward pass.

    ``attention_mask`` may be a packed batch's 4D mask, with ``position_ids`` in ``forward``
    (:func:`documents.forward_kwargs`).

    input_ids: [B, L]; rows, cols, targets: [K] -> [K] float32. Logits are computed for the K
    requested positions only, post-processed as the model does (:func:`logit_postprocessing`):
    the model's own forward runs with its output layer replaced; a model whose output layer cannot
    be replaced exactly (:func:`output_layer_problem`) runs unchanged, with full logits. A
    mixture-of-experts model runs without its router loss (:func:`documents.prediction_kwargs`).
    """
    forward["attention_mask"] = attention_mask
    forward.update(prediction_kwargs(model))
    split = _split_model(model)
    if split is None:
        logits = model(input_ids=input_ids, use_cache=False, **forward).logits
        return F.cross_entropy(logits[rows, cols].float(), targets, reduction="none")
    head, post = split

    def nll_at_positions(hidden: Tensor) -> Tensor:  # [B, L, d] -> [K]
        picked = hidden[rows, cols]  # [K, d]
        out = torch.empty(picked.shape[0], dtype=torch.float32, device=picked.device)
        chunk = _head_chunk(head.out_features, picked.device)
        for i in range(0, picked.shape[0], chunk):
            logits = head_logits(head, picked[i : i + chunk], post)
            out[i : i + chunk] = F.cross_entropy(logits, targets[i : i + chunk], reduction="none")
        return out

    with replaced_output_layer(model, nll_at_positions, post):
        return model(input_ids=input_ids, use_cache=False, **forward).logits


def _lengths(input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Length of every row of a right-padded batch: [b] long. Refuses other padding layouts."""
    b, n = input_ids.shape
    if attention_mask is None:
        return torch.full((b,), n, dtype=torch.long, device=input_ids.device)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has shape "
            f"{tuple(input_ids.shape)}: they must be equal"
        )
    mask = attention_mask.to(torch.bool)
    lengths = mask.sum(dim=1)
    expected = torch.arange(n, device=mask.device)[None, :] < lengths[:, None]
    if not torch.equal(mask, expected):
        raise ValueError("attention_mask must be right-padded (ones, then zeros in every row): pad on the right")
    return lengths.long()


def token_nll(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    doc_lengths: list[list[int]] | None = None,
) -> Tensor:
    """Per-token NLL with full context.

    Args:
        model: any ``transformers`` causal LM (or a module with the same call convention).
        input_ids: [b, n] token ids.
        attention_mask: [b, n] 1 for tokens, 0 for right padding (optional).
        doc_lengths: packed rows (:mod:`tokenweight.documents`): every token attends within its
            own document only, positions restart per document, and a document's first token is
            not scored (its entry is 0, like padding). ``attention_mask`` must then be None (the
            padding is what the lengths leave) or agree with the lengths' sums.

    Returns:
        [b, n-1] float32; entry ``j`` is ``-log p(x_{j+1} | x_0..x_j)``; 0 where ``x_{j+1}`` is padding.
    """
    input_ids, lengths, out = _scorer_call(model, input_ids, attention_mask)
    b, n = input_ids.shape
    device = input_ids.device
    if n < 2:
        return out
    if doc_lengths is not None:
        if attention_mask is None:  # the padding is what the lengths leave
            lengths = torch.tensor([sum(x) for x in doc_lengths], dtype=torch.long, device=device)
        return _packed_token_nll(model, input_ids, lengths, doc_lengths, out)
    scored = torch.arange(1, n, device=device)[None, :] < lengths[:, None]  # [b, n-1]: target is a token
    rows, cols = scored.nonzero(as_tuple=True)
    mask = None if attention_mask is None or bool((lengths == n).all()) else attention_mask.to(device)
    with _eval_mode(model):
        out[rows, cols] = _nll_at(model, input_ids, mask, rows, cols, input_ids[rows, cols + 1])
    return out


def _packed_token_nll(model: nn.Module, input_ids: Tensor, lengths: Tensor, doc_lengths, out: Tensor) -> Tensor:
    """:func:`token_nll` of packed rows: one document-masked forward (:func:`documents.forward_kwargs`)."""
    from tokenweight.documents import attn_implementation, model_forward_kwargs, target_mask

    b, n = input_ids.shape
    _check_packed(doc_lengths, b, lengths)
    if attn_implementation(model).startswith("flash") and b > 1:  # the variable-length path takes one row at a time
        for row in range(b):
            out[row : row + 1] = token_nll(model, input_ids[row : row + 1], None, doc_lengths[row : row + 1])
        return out
    kwargs = model_forward_kwargs(model, doc_lengths, n, device=input_ids.device)
    scored = target_mask(doc_lengths, n, device=input_ids.device)
    rows, cols = scored.nonzero(as_tuple=True)
    with _eval_mode(model):
        mask4d = kwargs.pop("attention_mask")
        out[rows, cols] = _nll_at(model, input_ids, mask4d, rows, cols, input_ids[rows, cols + 1], **kwargs)
    return out


def _check_packed(doc_lengths, b: int, lengths: Tensor | None) -> None:
    if len(doc_lengths) != b:
        raise ValueError(f"doc_lengths has {len(doc_lengths)} rows but input_ids has {b}")
    if lengths is not None and [sum(x) for x in doc_lengths] != lengths.tolist():
        raise ValueError("doc_lengths must sum to each row's length (its attention_mask)")


def _documents(model: nn.Module, input_ids: Tensor, doc_lengths, attention_mask) -> tuple:
    """Packed rows (``n >= 2``) as one row per document, so that every window rule applies to each
    document as to a sequence: ``(ids [D, m], mask [D, m] or None, valid [D, m-1], where, zeros [b,
    n-1])``; entry ``(d, j)`` of a per-document ``[D, m-1]`` result (where ``valid``) is ``where``
    of the packed frame. ``attention_mask``: None (padding is what the lengths leave) or agreeing."""
    from tokenweight.documents import check_doc_lengths, segments

    device = _model_device(model)
    input_ids = input_ids.to(device)
    b, n = input_ids.shape
    check_doc_lengths(doc_lengths, n)
    _check_packed(doc_lengths, b, None if attention_mask is None else _lengths(input_ids, attention_mask.to(device)))
    row, start, length = (torch.tensor(v, device=device) for v in zip(*segments(doc_lengths)))
    m = int(length.max())
    inside = torch.arange(m, device=device)[None, :] < length[:, None]  # [D, m]
    cols = (start[:, None] + torch.arange(m, device=device)[None, :]).clamp(max=n - 1)
    ids = torch.where(inside, input_ids[row[:, None], cols], 0)
    valid = inside[:, 1:]
    where = (row[:, None].expand(-1, m - 1)[valid], cols[:, :-1][valid])
    zeros = torch.zeros(b, n - 1, dtype=torch.float32, device=device)
    return ids, None if bool(inside.all()) else inside.long(), valid, where, zeros


def _scorer_call(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None, batch_size: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """The shared start of every scorer: checked arguments (:func:`check_input_ids`; ``attention_mask``
    a tensor or None; ``batch_size`` positive or None), ``input_ids`` as torch.long on the model's
    device, the rows' lengths ``[b]`` and the zero result ``[b, n-1]`` float32."""
    check_input_ids(input_ids, model)
    if attention_mask is not None and not isinstance(attention_mask, Tensor):
        raise ValueError(
            f"attention_mask must be a tensor [b, n] of 1 (token) and 0 (right padding) or None, got "
            f"{type(attention_mask).__name__}: pass torch.tensor(mask)"
        )
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    device = _model_device(model)
    input_ids = input_ids.to(device=device, dtype=torch.long)
    b, n = input_ids.shape
    lengths = _lengths(input_ids, attention_mask.to(device) if attention_mask is not None else None)
    return input_ids, lengths, torch.zeros(b, max(n - 1, 0), dtype=torch.float32, device=device)


def check_input_ids(input_ids, model: nn.Module | None = None) -> None:
    """``ValueError`` (one line: the problem and the fix) unless ``input_ids`` is an integer tensor
    ``[b, n]`` whose ids the ``model`` can embed: none negative, none >= its input embeddings'
    ``num_embeddings`` (a scorer with a smaller vocabulary than the data's tokenizer). One min/max
    over the ids; a model without ``get_input_embeddings`` is not checked for the vocabulary."""
    what = "input_ids must be an integer tensor [b, n] (torch.long)"
    if isinstance(input_ids, str):
        raise ValueError(f"{what}, got str: tokenize it first, torch.tensor([tokenizer(text)['input_ids']])")
    if not isinstance(input_ids, Tensor):
        raise ValueError(f"{what}, got {type(input_ids).__name__}: pass torch.tensor(ids)")
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
        raise ValueError(f"{what}, got a {input_ids.dtype} tensor: pass input_ids.long()")
    if input_ids.dim() != 2:
        fix = "pass input_ids[None] for one sequence" if input_ids.dim() == 1 else "pass one row of ids per sequence"
        raise ValueError(f"{what}, got shape {tuple(input_ids.shape)}: {fix}")
    if input_ids.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.stack(torch.aminmax(input_ids)).tolist())
    if lo < 0:
        raise ValueError(
            f"input_ids hold the negative token id {lo}: pass real token ids (mark padding with attention_mask, "
            "not with -100)"
        )
    vocab = _vocab_size(model) if model is not None else None
    if vocab is not None and hi >= vocab:
        raise ValueError(
            f"input_ids hold token id {hi} but the model's vocabulary has {vocab} tokens (ids 0..{vocab - 1}): "
            "score with a model that has the data's tokenizer"
        )


def _vocab_size(model: nn.Module) -> int | None:
    """``num_embeddings`` of the model's input embeddings; None for a module without them."""
    get = getattr(model, "get_input_embeddings", None)
    try:
        emb = get() if callable(get) else None
    except (NotImplementedError, AttributeError):
        return None
    n = getattr(emb, "num_embeddings", None)
    return int(n) if isinstance(n, int) else None


def _check_long_nll(long_nll, shape: tuple[int, int]) -> None:
    """``long_nll`` of the self-scoring and truncated scorers: a float tensor ``[b, n-1]``."""
    if not isinstance(long_nll, Tensor) or not long_nll.dtype.is_floating_point or tuple(long_nll.shape) != shape:
        got = f"shape {tuple(long_nll.shape)}" if isinstance(long_nll, Tensor) else type(long_nll).__name__
        if isinstance(long_nll, Tensor) and not long_nll.dtype.is_floating_point:
            got = f"a {long_nll.dtype} tensor"
        raise ValueError(
            f"long_nll must be a float tensor of shape {shape} (token_nll of the same model on input_ids), got {got}"
        )


def short_context_nll(
    model: nn.Module,
    input_ids: Tensor,
    window: int,
    stride: int,
    attention_mask: Tensor | None = None,
    bos_token_id: int | None = None,
    skip_first_window: bool = False,
    batch_size: int | None = None,
    doc_lengths: list[list[int]] | None = None,
) -> Tensor:
    """Per-token NLL under a short context of at most ``window`` tokens (docs/METHOD.md, step 1).

    Args:
        model: any ``transformers`` causal LM: the model being trained (self-scoring) or a frozen
            scorer with the same tokenizer.
        input_ids: [b, n] token ids, right-padded when rows differ in length.
        window: ``w``, the most tokens a window holds (>= 2).
        stride: ``s``, distance between window starts, ``1 <= s < w``; every scored token sees at
            least ``w - s`` tokens of context (``s = 1`` is the exact, slow definition).
        attention_mask: [b, n], 1 for tokens, 0 for right padding.
        bos_token_id: when given, every window ``k >= 1`` of a row that starts with this token has
            its first token replaced by it, so that every window starts with BOS (as the reference).
        skip_first_window: for self-scoring, where window 0 is the long pass itself: window 0 is
            not run and entries ``0 … w-2`` are left 0 (the caller copies them from ``token_nll``).
            Rows of at most ``w`` tokens are then all zeros.
        batch_size: windows per forward pass (default: about 16k tokens per pass).
        doc_lengths: packed rows (:mod:`tokenweight.documents`): every document is windowed as a
            sequence of its own (windows restart at its start, BOS put back when *it* starts with
            BOS), so the result equals its documents run one by one; a document's first token is
            not a target (entry 0). ``attention_mask`` may then be None (padding: what the lengths
            leave) or must agree with the lengths' sums.

    Returns:
        [b, n-1] float32, aligned like :func:`token_nll` (entry ``j`` is the NLL of token ``j+1``);
        0 where the target is padding. Rows (documents) of at most ``window`` tokens get the
        full-context NLL.
    """
    check_window(window, stride)
    input_ids, lengths, out = _scorer_call(model, input_ids, attention_mask, batch_size)
    b, n = input_ids.shape
    if n < 2:
        return out
    if doc_lengths is not None:
        ids, mask, valid, where, out = _documents(model, input_ids, doc_lengths, attention_mask)
        short = short_context_nll(model, ids, window, stride, mask, bos_token_id, skip_first_window, batch_size)
        out[where] = short[valid]
        return out
    starts_with_bos = (input_ids[:, 0] == bos_token_id).tolist() if bos_token_id is not None else [False] * b
    groups = plan_windows(lengths.tolist(), window, stride, skip_first_window)
    _run_windows(model, input_ids, groups, batch_size or windows_per_pass(window), out, bos_token_id, starts_with_bos)
    return out


def _run_windows(
    model: nn.Module,
    input_ids: Tensor,
    groups: dict[int, list[tuple]],
    per_pass: int,
    out: Tensor,
    bos_token_id: int | None = None,
    starts_with_bos: list[bool] | None = None,
) -> None:
    """Run the windows of ``groups`` (:func:`plan_windows`'s layout), ``per_pass`` at a time, writing the
    NLL of every scored target ``t`` into ``out[row, t - 1]``. A window starting after 0 in a row
    with ``starts_with_bos[row]`` gets ``bos_token_id`` as its first token (docs/METHOD.md, step 1)."""
    device = input_ids.device
    with _eval_mode(model):
        for length, windows in sorted(groups.items()):
            for batch in (windows[i : i + per_pass] for i in range(0, len(windows), per_pass)):
                rows = torch.tensor([w[0] for w in batch], device=device)
                starts = torch.tensor([w[1] for w in batch], device=device)
                ids = input_ids[rows[:, None], starts[:, None] + torch.arange(length, device=device)]
                for i, (row, start, _, _) in enumerate(batch):
                    if start > 0 and starts_with_bos is not None and starts_with_bos[row]:
                        ids[i, 0] = bos_token_id
                # Kept positions: target t (absolute) is predicted at window column t - start - 1.
                win_idx, cols, tgt_abs = [], [], []
                for i, (_row, start, first, end) in enumerate(batch):
                    t = torch.arange(first, end, device=device)
                    win_idx.append(torch.full_like(t, i))
                    cols.append(t - start - 1)
                    tgt_abs.append(t)
                win_idx, cols, tgt_abs = torch.cat(win_idx), torch.cat(cols), torch.cat(tgt_abs)
                nll = _nll_at(model, ids, None, win_idx, cols, ids[win_idx, cols + 1])
                out[rows[win_idx], tgt_abs - 1] = nll


def self_scored_short_nll(
    model: nn.Module,
    input_ids: Tensor,
    long_nll: Tensor,
    window: int,
    stride: int,
    attention_mask: Tensor | None = None,
    bos_token_id: int | None = None,
    batch_size: int | None = None,
    doc_lengths: list[list[int]] | None = None,
) -> Tensor:
    """Short-context NLL of the model that also produced ``long_nll`` (self-scoring).

    Window 0 of a sequence is the long pass itself (the same tokens with the same causal context),
    so it is not run again: its entries ``0 … w-2`` are ``long_nll``'s, every later window is run
    as in :func:`short_context_nll`. input_ids: [b, n]; long_nll: [b, n-1] (``token_nll`` of the
    same model, or the training forward's NLL; any gradient is dropped) -> [b, n-1] float32.
    ``doc_lengths``: packed rows, ``long_nll`` from the document-masked pass; window 0 of every
    *document* is copied from it, a document's first token gets 0 (:func:`short_context_nll`).
    """
    check_input_ids(input_ids, model)
    _check_long_nll(long_nll, (input_ids.shape[0], max(input_ids.shape[1] - 1, 0)))
    short = short_context_nll(
        model,
        input_ids,
        window,
        stride,
        attention_mask=attention_mask,
        bos_token_id=bos_token_id,
        skip_first_window=True,
        batch_size=batch_size,
        doc_lengths=doc_lengths,
    )
    if doc_lengths is not None:  # window 0 of every document: its first w - 1 targets
        from tokenweight.documents import document_positions, target_mask

        n, device = short.shape[1] + 1, short.device
        first = target_mask(doc_lengths, n, device) & (document_positions(doc_lengths, n, device)[:, 1:] < window)
        return torch.where(first, long_nll.detach().to(short), short)
    k = window - 1
    short[:, :k] = long_nll[:, :k].detach().to(device=short.device, dtype=short.dtype)
    return short


def truncated_context_nll(
    model: nn.Module,
    input_ids: Tensor,
    trunc_len: int,
    sliding_window: int,
    attention_mask: Tensor | None = None,
    long_nll: Tensor | None = None,
    batch_size: int | None = None,
    doc_lengths: list[list[int]] | None = None,
) -> Tensor:
    """Per-token NLL under Fang et al.'s short context (:func:`truncated_windows`), ``[b, n-1]`` float32.

    Entry ``j`` is the NLL of token ``p = j + 1`` given the ``T + (p - T) % S`` tokens before it when
    ``p >= T``; a token before ``T`` has no shorter context than its full one, so its entry is its
    full-context NLL (which makes LongCE's weight 1 and rules it out as a LongPPL key token, as in
    the original). The window starting at 0 *is* the full context too: with ``long_nll`` (``[b,
    n-1]``, ``token_nll`` of the same model) its entries and those before ``T`` are copied from it
    and it is not run; without it that window is run and supplies them. Windows are raw slices
    (no BOS put back); rows are windowed at their own length (right padding, ``attention_mask``);
    0 where the target is padding. ``batch_size``: windows per forward pass (default ~16k tokens).
    ``doc_lengths``: packed rows, windowed per document as in :func:`short_context_nll` (a
    document's first token gets 0; one of at most ``T`` tokens is all full context).
    """
    truncated_windows(0, trunc_len, sliding_window)  # validates trunc_len and sliding_window
    input_ids, lengths, out = _scorer_call(model, input_ids, attention_mask, batch_size)
    b, n = input_ids.shape
    device = input_ids.device
    if long_nll is not None:
        _check_long_nll(long_nll, tuple(out.shape))
        out.copy_(long_nll.detach().to(device=device, dtype=torch.float32))
    if n < 2:
        return out
    if doc_lengths is not None:
        ids, mask, valid, where, zeros = _documents(model, input_ids, doc_lengths, attention_mask)
        long = None if long_nll is None else out.new_zeros(valid.shape).masked_scatter_(valid, out[where])
        zeros[where] = truncated_context_nll(model, ids, trunc_len, sliding_window, mask, long, batch_size)[valid]
        return zeros
    groups: dict[int, list[tuple]] = defaultdict(list)
    for row, length in enumerate(lengths.tolist()):
        if length < 2:
            continue
        if long_nll is None:  # the window at 0 also scores the targets before T, with their full context
            end = min(trunc_len + sliding_window, length)
            groups[end].append((row, 0, 1, end))
        for start, first, end in truncated_windows(length, trunc_len, sliding_window)[1:]:
            groups[end - start].append((row, start, first, end))
    _run_windows(model, input_ids, groups, batch_size or windows_per_pass(trunc_len + sliding_window), out)
    return out


def context_kl(
    model: nn.Module,
    input_ids: Tensor,
    window: int,
    stride: int,
    attention_mask: Tensor | None = None,
    bos_token_id: int | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """Per-target ``KL(p_long || p_short)``: how much the context beyond the short window changes the
    model's prediction (LongFilter's token score, docs/METHOD.md "Selection").

    ``p_long`` is the model's next-token distribution with the whole row before the target,
    ``p_short`` with the short context of :func:`short_context_nll` (the same windows, stride and
    BOS rule). Targets of the first window have no shorter context (``p_short = p_long``): 0.

    Args: as :func:`short_context_nll` (unpacked rows; ``batch_size``: windows per forward pass).

    Returns:
        [b, n-1] float32 >= 0, aligned like :func:`token_nll`; 0 where the target is padding or in
        the first window. Full logits of one row (and of ``batch_size`` windows) at a time.
    """
    check_window(window, stride)
    input_ids, lengths, out = _scorer_call(model, input_ids, attention_mask, batch_size)
    b, n = input_ids.shape
    if n < 2:
        return out
    per_pass = batch_size or windows_per_pass(window)
    forward = prediction_kwargs(model)
    with _eval_mode(model):
        for row in range(b):
            length = int(lengths[row])
            groups = plan_windows([length], window, stride, skip_first_window=True)
            if not groups:
                continue
            ids = input_ids[row : row + 1, :length]
            long_logp = torch.log_softmax(model(input_ids=ids, use_cache=False, **forward).logits[0].float(), -1)
            bos = bos_token_id is not None and int(ids[0, 0]) == bos_token_id
            for size, windows in sorted(groups.items()):
                for i in range(0, len(windows), per_pass):
                    batch = windows[i : i + per_pass]
                    win = torch.stack([ids[0, start : start + size] for _, start, _, _ in batch])
                    if bos:
                        win[:, 0] = bos_token_id  # every window here starts after 0
                    logits = model(input_ids=win, use_cache=False, **forward).logits.float()
                    for k, (_, start, first, end) in enumerate(batch):
                        t = torch.arange(first, end, device=ids.device)
                        short = torch.log_softmax(logits[k, t - start - 1], -1)
                        long = long_logp[t - 1]
                        out[row, t - 1] = (long.exp() * (long - short)).sum(-1).clamp(min=0)
    return out
