"""Teacher-forced answer scores: signal from models too small to generate the answer.

For each sample and each gold output ``o`` the continuation is ``" " + o`` right after the prompt
(``sample.prompt``: input and answer prefix; just ``o`` when the prompt already ends with
whitespace, as RULER's ``vt`` prefix does). With the prompt's tokens as context:

- ``token_accuracy``: share of the continuation's tokens that are the model's argmax;
- ``mean_logprob``: mean ``log p`` of the continuation's tokens (nats per token);
- ``rank``: each gold output's total ``log p`` against every distractor of ``sample.candidates``
  (the candidates that are not gold outputs): ``1 + #distractors scoring strictly higher``. The
  sample's ``rank`` is its worst gold output's, so ``rank == 1`` means every answer beats every
  distractor.

Sample values average the gold outputs (each output weighs the same). Continuation tokens are the
tokens of ``prompt + continuation`` past the prompt's own tokens, as lm-evaluation-harness does,
so the split matches what the model would read; when tokenizing the prompt alone does not give a
prefix of that, the continuation is tokenized on its own.

Efficiency: the prompt runs once per sample (a batch of left-padded prompts, position ids counted
from each row's first real token), keeping its KV cache; every continuation (golds and distractors,
a few tokens each) then runs on a copy of its sample's cache rows. A long prompt with ten
candidates costs about one forward pass, not eleven. Prompts and continuation rows are batched by
rows and by tokens (``batch_size``, ``batch_tokens``: :func:`tokenweight.evaluate.batching.token_groups`;
a continuation row costs its prompt's cached tokens too); only the prompt's last position is
projected onto the vocabulary, and continuation positions are projected in chunks
(:func:`tokenweight.evaluate.logprobs.logprobs_at`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm import tqdm


def _encode(tokenizer, prompt: str, continuation: str) -> list[int]:
    ctx = tokenizer(prompt, add_special_tokens=True, verbose=False)["input_ids"]
    whole = tokenizer(prompt + continuation, add_special_tokens=True, verbose=False)["input_ids"]
    if len(whole) > len(ctx) and whole[: len(ctx)] == ctx:
        return list(whole[len(ctx) :])
    return list(tokenizer(continuation, add_special_tokens=False, verbose=False)["input_ids"])


def _select_cache(cache, rows: torch.Tensor):
    """A new DynamicCache holding ``rows`` of ``cache`` (the original stays untouched)."""
    from transformers import DynamicCache

    data = []
    for layer in cache:
        k, v = layer[0], layer[1]
        extra = tuple(x for x in layer[2:] if x is not None)
        data.append((k.index_select(0, rows), v.index_select(0, rows)) + extra)
    return DynamicCache(ddp_cache_data=data)


@torch.no_grad()
def _continuation_logprobs(
    model,
    contexts: list[list[int]],
    conts: list[list[list[int]]],
    pad_id: int,
    batch_size: int,
    batch_tokens: int | None = None,
):
    """Per context ``i`` and continuation ``j``: (log p of each token, is-argmax of each token).

    Args:
        contexts: token ids per sample.
        conts: ``conts[i][j]`` token ids of continuation ``j`` of sample ``i`` (non-empty).
        batch_size, batch_tokens: continuation rows per pass, and their tokens (cached prompt included).
    """
    from tokenweight.documents import prediction_kwargs
    from tokenweight.evaluate.batching import token_groups
    from tokenweight.evaluate.logprobs import logprobs_at

    device = next(model.parameters()).device
    B = len(contexts)
    L = max(len(c) for c in contexts)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.long)
    for i, c in enumerate(contexts):
        ids[i, L - len(c) :] = torch.tensor(c)
        mask[i, L - len(c) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    ids, mask, pos = ids.to(device), mask.to(device), pos.to(device)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=pos,
        use_cache=True,
        logits_to_keep=1,
        **prediction_kwargs(model),
    )
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [B, V]: predicts continuation token 0
    cache = out.past_key_values
    ctx_len = mask.sum(-1)  # [B]

    rows = [(i, j) for i in range(B) for j in range(len(conts[i]))]
    result: list[list] = [[None] * len(conts[i]) for i in range(B)]
    for group in token_groups([L + len(conts[i][j]) for i, j in rows], batch_size, batch_tokens):
        chunk = [rows[k] for k in group]
        src = torch.tensor([i for i, _ in chunk], device=device)
        toks = [conts[i][j] for i, j in chunk]
        K = max(len(t) for t in toks)
        cid = torch.full((len(chunk), K), pad_id, dtype=torch.long, device=device)
        for r, t in enumerate(toks):
            cid[r, : len(t)] = torch.tensor(t, device=device)
        full_mask = torch.cat([mask.index_select(0, src), torch.ones_like(cid)], dim=1)
        cpos = ctx_len.index_select(0, src)[:, None] + torch.arange(K, device=device)[None, :]
        lp0 = first.index_select(0, src)  # [R, V]: predicts continuation token 0
        tok_lp = torch.zeros(len(chunk), K, dtype=torch.float32, device=device)
        hit = torch.zeros(len(chunk), K, dtype=torch.bool, device=device)
        tok_lp[:, 0] = lp0.gather(1, cid[:, :1])[:, 0]
        hit[:, 0] = lp0.argmax(-1) == cid[:, 0]
        if K > 1:  # position k of the continuation pass predicts continuation token k + 1
            lengths = torch.tensor([len(t) for t in toks], device=device)
            keep = torch.arange(K - 1, device=device)[None, :] < (lengths - 1)[:, None]  # [R, K-1]
            lp, h = logprobs_at(
                model,
                keep,
                cid[:, 1:][keep],
                input_ids=cid[:, :-1],
                attention_mask=full_mask[:, :-1],
                position_ids=cpos[:, :-1],
                past_key_values=_select_cache(cache, src),
                use_cache=True,
            )
            tok_lp[:, 1:][keep], hit[:, 1:][keep] = lp, h
        for r, ((i, j), t) in enumerate(zip(chunk, toks)):
            result[i][j] = (tok_lp[r, : len(t)].cpu().double(), hit[r, : len(t)].cpu())
    return result


def score_likelihood(
    model, tokenizer, samples: Sequence, batch_size: int = 8, batch_tokens: int | None = None
) -> list[dict]:
    """Teacher-forced scores of each sample's gold answers (and rank among its candidates).

    Args:
        model: a HF causal LM with a ``DynamicCache`` (any decoder-only transformer).
        tokenizer: its tokenizer (the one the samples were generated with).
        samples: :class:`Sample` s, any tasks and lengths.
        batch_size: prompts per forward pass (continuation rows are batched by the same number).
        batch_tokens: at most this many tokens per pass (prompts: rows × padded length;
            continuation rows: with their cached prompt); None: ``batch_size`` rows only.

    Returns:
        One dict per sample, in order: ``token_accuracy``, ``mean_logprob``, ``rank`` (1 = best;
        None when the sample has no distractor), ``num_candidates``, ``answer_tokens`` and
        ``outputs``: per gold output ``{"output", "tokens", "token_accuracy", "mean_logprob",
        "logprob", "rank"}``. The model's train/eval mode is restored afterwards.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    enc = []
    for s in samples:
        if not s.outputs:
            raise ValueError(f"sample of task {s.task!r} has no gold output to score")
        prompt = s.prompt
        ctx = list(tokenizer(prompt, add_special_tokens=True, verbose=False)["input_ids"])
        golds = list(s.outputs)
        distract = [c for c in (s.candidates or []) if c not in golds]
        sep = "" if prompt[-1:].isspace() else " "
        conts = [_encode(tokenizer, prompt, sep + c) for c in golds + distract]
        if any(len(c) == 0 for c in conts):
            raise ValueError(f"a continuation of task {s.task!r} tokenizes to nothing: outputs must be non-empty")
        enc.append((ctx, conts, golds, distract))
    from tokenweight.evaluate.batching import token_groups

    order = sorted(range(len(enc)), key=lambda i: -len(enc[i][0]))  # similar lengths share a batch
    groups = token_groups([len(enc[i][0]) for i in order], batch_size, batch_tokens)
    results: list[dict | None] = [None] * len(enc)
    was_training = model.training
    model.eval()
    try:
        for group in tqdm(groups, desc="likelihood", disable=None, leave=False):
            idx = [order[k] for k in group]
            scored = _continuation_logprobs(
                model, [enc[i][0] for i in idx], [enc[i][1] for i in idx], pad_id, batch_size, batch_tokens
            )
            for i, per_cont in zip(idx, scored):
                results[i] = _summarize(enc[i][2], enc[i][3], per_cont)
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


def _summarize(golds: list[str], distract: list[str], per_cont: list) -> dict:
    totals = [float(lp.sum()) for lp, _ in per_cont]
    d_totals = totals[len(golds) :]
    outs = []
    for g, (lp, hit), total in zip(golds, per_cont, totals):
        outs.append(
            {
                "output": g,
                "tokens": int(lp.numel()),
                "token_accuracy": float(hit.sum()) / hit.numel(),
                "mean_logprob": float(lp.mean()),
                "logprob": total,
                "rank": (1 + sum(d > total for d in d_totals)) if distract else None,
            }
        )
    n = len(outs)
    return {
        "token_accuracy": sum(o["token_accuracy"] for o in outs) / n,
        "mean_logprob": sum(o["mean_logprob"] for o in outs) / n,
        "rank": max(o["rank"] for o in outs) if distract else None,
        "num_candidates": 1 + len(distract),
        "answer_tokens": sum(o["tokens"] for o in outs),
        "outputs": outs,
    }
