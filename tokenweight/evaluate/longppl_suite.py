"""LongPPL in ``tokenweight eval``: the drop-in's rules (:mod:`tokenweight.evaluate.longppl_fang`)
over the held-out set, with one evaluator judging for every model.

Each held-out sequence is a text, ``tokenizer.decode(ids, skip_special_tokens=True)``, on which
``compute_longppl`` would be called: the evaluator (its own tokenizer, with its special tokens)
finds the key tokens as character spans once per run; every evaluated model (the run's tokenizer,
without special tokens, as in the original) is then scored on the tokens inside those spans. The
per-sequence values are pooled over the held-out set as ``PKU-ML/LongPPL``'s
``perplexity/perplexity.py`` pools them: LongPPL over all key tokens, ``ppl`` as the mean of the
sequences' mean NLL weighted by their ``n_token``.

Every model of a run is judged on the same character spans; the evaluator runs only when some
model's entry is not in the evaluation cache (:class:`KeySpans` judges on first use).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tokenweight.evaluate.longppl import encode, padded, spans_to_targets
from tokenweight.evaluate.results import IN_MEMORY

DATA_TOKENIZER = "<the data's tokenizer>"


def _exp(x: float) -> float:
    return math.exp(x) if x < 700 else math.inf


class KeySpans:
    """The evaluator's key spans over the held-out texts, and each model's LongPPL on them.

    Args:
        load: zero-argument callable returning the evaluator model (called on first use only).
        name: the evaluator's display name (a model name of the run, a path, or ``<in-memory>``).
        texts: the held-out texts.
        tokenizer: the evaluated models' tokenizer (the run's).
        evaluator_tokenizer, evaluator_tokenizer_name: the evaluator's tokenizer and what it is.
        trunc_len, sliding_window, alpha, beta: Fang et al.'s settings (``compute_longppl``).
        batch_size, batch_tokens: sequences and padded tokens per forward pass (at most).
    """

    def __init__(
        self,
        load: Callable[[], Any],
        name: str,
        texts: list[str],
        tokenizer,
        evaluator_tokenizer,
        evaluator_tokenizer_name: str,
        *,
        trunc_len: int,
        sliding_window: int,
        alpha: float,
        beta: float,
        batch_size: int,
        batch_tokens: int | None = None,
    ):
        self.load, self.name, self.texts = load, name, texts
        self.tokenizer, self.ev_tokenizer, self.ev_tokenizer_name = (
            tokenizer,
            evaluator_tokenizer,
            evaluator_tokenizer_name,
        )
        self.trunc_len, self.sliding_window, self.alpha, self.beta = trunc_len, sliding_window, alpha, beta
        self.batch_size, self.batch_tokens = batch_size, batch_tokens
        self.ev_encodings = [encode(evaluator_tokenizer, t, add_special_tokens=True) for t in texts]
        self._judged = None
        self._targets = None

    @property
    def has_candidates(self) -> bool:
        """Whether some text has an evaluator token at a position ``>= trunc_len``."""
        return any(len(ids) > self.trunc_len for ids, _ in self.ev_encodings)

    def identity(self) -> dict:
        """What the key spans depend on besides the evaluator's weights (part of the cache key)."""
        from tokenweight.identity import tokenizer_digest

        return {"tokenizer": tokenizer_digest(self.ev_tokenizer)}

    def judged(self) -> list[tuple[int, int, list[tuple[int, int]]]]:
        """Per text ``(candidates, key tokens, key spans)`` on the evaluator's tokens (runs it the
        first time)."""
        if self._judged is None:
            from tokenweight.evaluate.longppl_fang import key_spans_and_candidates

            model = self.load()
            self._judged = key_spans_and_candidates(
                self.texts,
                model,
                self.ev_tokenizer,
                self.trunc_len,
                self.sliding_window,
                self.alpha,
                self.beta,
                batch_size=self.batch_size,
                batch_tokens=self.batch_tokens,
                encodings=self.ev_encodings,
            )
        return self._judged

    def targets(self) -> list[tuple[list[int], list[int], list[int]]]:
        """Per text, on the evaluated tokenization: ``(ids, key entries, eligible entries)``;
        eligible: the tokens inside the evaluator's candidate region (from its token ``trunc_len``
        on), entries in the ``[n-1]`` NLL alignment."""
        if self._targets is None:
            out = []
            for text, (ev_ids, ev_offsets), (_, _, spans) in zip(self.texts, self.ev_encodings, self.judged()):
                ids, offsets = encode(self.tokenizer, text, add_special_tokens=False)
                region = [(ev_offsets[self.trunc_len][0], len(text))] if len(ev_ids) > self.trunc_len else []
                out.append((ids, spans_to_targets(offsets, spans), spans_to_targets(offsets, region)))
            self._targets = out
        return self._targets

    def score(self, model, name: str = "") -> dict:
        """The results entry ``longppl`` of one model (docs/EVALUATION.md)."""
        from tqdm.auto import tqdm

        from tokenweight.evaluate.batching import token_groups
        from tokenweight.scoring import token_nll

        rows = [t for t in self.targets() if len(t[0]) >= 2]
        key_sum, keys, eligible, tokens, ppl_sum = 0.0, 0, 0, 0, 0.0
        groups = token_groups([len(t[0]) for t in rows], self.batch_size, self.batch_tokens)
        for group in tqdm(groups, desc=f"{name}: LongPPL", disable=None):
            chunk = [rows[i] for i in group]
            nll = token_nll(model, *padded([ids for ids, _, _ in chunk])).double().cpu()
            for r, (row, key, elig) in enumerate(chunk):
                key_sum += float(nll[r, key].sum())
                keys += len(key)
                eligible += len(elig)
                tokens += len(row)
                ppl_sum += len(row) * float(nll[r, : len(row) - 1].mean())
        mean = key_sum / keys if keys else None
        return {
            "longppl": _exp(mean) if keys else None,
            "nll": mean,
            "key_tokens": keys,
            "eligible_tokens": eligible,
            "key_share": keys / eligible if eligible else None,
            "ppl": _exp(ppl_sum / tokens) if tokens else None,
            "tokens": tokens,
        }

    def info(self) -> dict:
        """The results' ``evaluator`` record (counts on the evaluator's own tokens)."""
        judged = self.judged()
        keys = sum(k for _, k, _ in judged)
        candidates = sum(c for c, _, _ in judged)
        return {
            "name": self.name,
            "tokenizer": self.ev_tokenizer_name,
            "trunc_len": self.trunc_len,
            "sliding_window": self.sliding_window,
            "alpha": self.alpha,
            "beta": self.beta,
            "key_tokens": keys,
            "eligible_tokens": candidates,
            "key_share": keys / candidates if candidates else None,
        }


def _evaluator_tokenizer(config, ev_source, tokenizer) -> tuple[Any, str]:
    """``(tokenizer, name)`` of the evaluator: ``evaluator_tokenizer`` when given, else the
    evaluator folder's (or hub id's) own tokenizer, else the run's."""
    from tokenweight.identity import has_tokenizer, is_hub_id, load_tokenizer

    given = config.evaluator_tokenizer
    if given is not None and not isinstance(given, (str, Path)):
        return given, IN_MEMORY
    if given is not None:
        return load_tokenizer(given), str(given)
    if isinstance(ev_source, (str, Path)) and (is_hub_id(ev_source) or has_tokenizer(ev_source)):
        return load_tokenizer(ev_source), str(ev_source)
    return tokenizer, DATA_TOKENIZER


def longppl_judge(
    models: Mapping[str, Any], rows: list[dict], tokenizer, config, load: Callable[[Any], Any]
) -> tuple[KeySpans | None, Any]:
    """``(judge, evaluator source)`` of a run, or ``(None, None)`` without held-out rows or when no
    held-out text has an evaluator token beyond ``longppl_trunc_len`` (a warning says so).

    ``config``: the :class:`tokenweight.stages.evaluate.EvalConfig` (``evaluator``: a name of
    ``models``, a folder or hub id, or a model object; None: the first model); ``load``: the
    runner's model loader.
    """
    if not rows:
        return None, None
    ev = config.evaluator if config.evaluator is not None else next(iter(models))
    ev_model = ev if isinstance(ev, str) and ev in models else None
    ev_source = models[ev_model] if ev_model else ev
    ev_tokenizer, ev_tokenizer_name = _evaluator_tokenizer(config, ev_source, tokenizer)
    texts = [tokenizer.decode(r["input_ids"], skip_special_tokens=True) for r in rows]
    judge = KeySpans(
        lambda: load(ev_source),
        ev_model or (str(ev) if isinstance(ev, (str, Path)) else IN_MEMORY),
        texts,
        tokenizer,
        ev_tokenizer,
        ev_tokenizer_name,
        trunc_len=config.longppl_trunc_len,
        sliding_window=config.longppl_sliding_window,
        alpha=config.longppl_alpha,
        beta=config.longppl_beta,
        batch_size=config.batch_size,
        batch_tokens=getattr(config, "batch_tokens", None),
    )
    if not judge.has_candidates:
        longest = max(len(ids) for ids, _ in judge.ev_encodings)
        warnings.warn(
            f"LongPPL skipped: the longest held-out text has {longest} evaluator tokens, none beyond "
            f"--longppl-trunc-len {config.longppl_trunc_len}: pass a smaller --longppl-trunc-len "
            "(Fang et al.'s 4096 is for texts of 16k-32k tokens)",
            stacklevel=2,
        )
        return None, None
    return judge, ev_source
