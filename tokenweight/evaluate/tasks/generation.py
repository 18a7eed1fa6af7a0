"""Batched greedy generation of task answers (RULER's prediction step).

The prompt is ``sample.prompt``, ``input + answer_prefix``, as RULER's ``call_api.py`` sends it.
Prompts are left-padded (so every row's next token sits in the last column) and decoded greedily
with the model's own ``generate``; the attention mask hides the padding and ``generate`` derives
each row's position ids from it, so a row's output does not depend on what it is batched with.
Rows are batched by similar prompt length (little padding), at most ``batch_size`` rows and
``batch_tokens`` tokens (prompt plus budget, :func:`tokenweight.evaluate.batching.token_groups`)
per ``generate`` call, and returned in the input order; ``generate`` projects only the last
position onto the vocabulary at every step (``logits_to_keep=1``). Each
sample gets at most its own budget: the batch runs to the largest budget in it and every
continuation is cut to its sample's budget, which gives the same tokens as running it alone
(greedy decoding of a row never looks at later steps).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm import tqdm


def _budget(sample, max_new_tokens: int | None) -> int:
    """``max_new_tokens``, else the budget the sample reserved in its length, else RULER's."""
    if max_new_tokens is not None:
        return max_new_tokens
    if sample.tokens_to_generate:
        return int(sample.tokens_to_generate)
    from tokenweight.evaluate.tasks.registry import TASKS

    return TASKS[sample.task].tokens_to_generate if sample.task in TASKS else 128


@torch.no_grad()
def generate_predictions(
    model,
    tokenizer,
    samples: Sequence,
    max_new_tokens: int | None = None,
    batch_size: int = 8,
    batch_tokens: int | None = None,
) -> list[str]:
    """Greedy continuations of each sample's ``input`` (decoded, special tokens dropped).

    Args:
        model: a HF causal LM.
        tokenizer: its tokenizer.
        samples: :class:`Sample` s.
        max_new_tokens: generation budget per sample; None: the budget each sample reserved
            (``Sample.tokens_to_generate``; RULER's by default: 128 for NIAH, 30 vt, 120 cwe, 50 fwe,
            32 qa).
        batch_size: prompts per ``generate`` call.
        batch_tokens: at most this many tokens per call (rows × (longest prompt + budget)); None:
            ``batch_size`` rows only.

    Returns:
        One string per sample, in order (generation stops early at the EOS token).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1")
    if max_new_tokens is not None and (
        isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1
    ):
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be None or an integer >= 1")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    eos_id = tokenizer.eos_token_id
    device = next(model.parameters()).device
    enc = [list(tokenizer(s.prompt, add_special_tokens=True, verbose=False)["input_ids"]) for s in samples]
    budgets = [_budget(s, max_new_tokens) for s in samples]
    from tokenweight.documents import prediction_kwargs
    from tokenweight.evaluate.batching import token_groups

    order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
    groups = token_groups([len(enc[i]) + budgets[i] for i in order], batch_size, batch_tokens)
    out: list[str | None] = [None] * len(enc)
    was_training = model.training
    model.eval()
    try:
        for group in tqdm(groups, desc="generation", disable=None, leave=False):
            idx = [order[k] for k in group]
            L = max(len(enc[i]) for i in idx)
            ids = torch.full((len(idx), L), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), L), dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, L - len(enc[i]) :] = torch.tensor(enc[i])
                mask[r, L - len(enc[i]) :] = 1
            budget = max(budgets[i] for i in idx)
            gen = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=budget,
                min_new_tokens=0,
                do_sample=False,
                num_beams=1,
                pad_token_id=pad_id,
                eos_token_id=eos_id,
                **prediction_kwargs(model),  # a mixture of experts: no router loss at every step
            )
            new = gen[:, L:].cpu()
            for r, i in enumerate(idx):
                toks = new[r, : budgets[i]].tolist()
                if eos_id is not None and eos_id in toks:
                    toks = toks[: toks.index(eos_id)]
                out[i] = tokenizer.decode(toks, skip_special_tokens=True)
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]
