"""Stage ``train``: context extension with a token-weighted loss, the whole step in one place.

A model (``model``, extended to the long context ``n`` with RoPE θ scaled as in the paper, or
``init`` from scratch) is trained on prepared data with a weighting scheme: ``uniform`` is the plain
cross-entropy baseline on the same code path; every other scheme needs short-context NLL from a
scorer: ``scorer="self"`` (the live model on windows of ``window`` tokens, every step) or
``scorer="frozen"`` with ``scores`` (a cache made by :func:`tokenweight.stages.score.score`). A
cache whose window is at least ``n`` holds a reference model's full-context NLL: ``rho1:<κ>`` with
it is Rho-1's selective language modelling (docs/SCORING.md).

Multi-GPU: the same stage under ``accelerate launch``/``torchrun``, or DeepSpeed with
``deepspeed="zero3"`` (docs/TRAINING.md).

Packed data (``prepare --pack``: a ``doc_lengths`` column) is trained per document: document-masked
forward, no target at a document's first token, short windows per document, and with
``weight_norm="document"`` the weights of every document normalised on its own (docs/TRAINING.md,
"Packed data").

The path of one option, e.g. ``--scheme dense:0.75 --scorer frozen``: :class:`TrainConfig` checks the
user's input once (``validate``); :func:`train` below builds the data, the model, the source of
short-context NLL and the token-weighting component, top to bottom;
:func:`tokenweight.train.runner.run_training` owns the run folder and the HF ``Trainer``;
:class:`tokenweight.train.trainer.TokenWeightingMixin` calls the component on every micro-batch;
:class:`tokenweight.token_weighting.TokenWeighting` weighs and sums (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenweight.choices import WEIGHT_NORMS
from tokenweight.config import check_choice, check_float, check_int, option
from tokenweight.context_extension import ROPE_SCALING_TYPES
from tokenweight.errors import UsageError
from tokenweight.stages.runs import RunConfig, RunResult, planned_run
from tokenweight.windows import check_window

__all__ = ["TrainConfig", "train"]

#: the short contexts of self-scoring: docs/METHOD.md's windows, or LongCE's (docs/SCORING.md)
SHORT_CONTEXTS = ("method", "longce")


@dataclass
class TrainConfig(RunConfig):
    """``tokenweight train``: context extension with a token-weighted loss (uniform = plain CE)."""

    scheme: str = option(
        "uniform",
        "weighting scheme: uniform | dense:<λ> | sparse:<κ> | longce:<γ> | ppmi:<s>:<κ> | npmi:<s>:<κ> | rho1:<κ> "
        "| exact:<α>[:<τ>] | <scheme>*exact:<α>[:<τ>] | <scheme>*protect[:<τ>] | custom:... (uniform = plain "
        "cross-entropy)",
        group="token weighting",
    )
    scorer: str = option(
        "none",
        "source of the short-context NLL: the live model (self) or a score cache (frozen)",
        choices=("none", "self", "frozen"),
        group="token weighting",
    )
    scores: str | None = option(
        None, "score cache of tokenweight score (--scorer frozen)", metavar="DIR", group="token weighting"
    )
    window: int | None = option(
        None,
        "short context w (none: the cache's for frozen scoring, else --base-context)",
        group="token weighting",
    )
    stride: int | None = option(None, "window stride s (none: round((1 - w/n)·w))", group="token weighting")
    score_batch_size: int | None = option(
        None, "windows per forward pass of self-scoring (none: ~16k tokens)", group="token weighting"
    )
    short_context: str = option(
        "method",
        "the short context of self-scoring: method (docs/METHOD.md: windows of --window every --stride, BOS put "
        "back) or longce (Fang et al.'s LongCE: raw windows of --longce-trunc-len + --longce-sliding-window "
        "tokens every --longce-sliding-window, the tokens before trunc_len weigh 1)",
        choices=SHORT_CONTEXTS,
        group="token weighting",
    )
    longce_trunc_len: int = option(
        4096, "with --short-context longce: short context of the first scored token (LongCE's)", group="token weighting"
    )
    longce_sliding_window: int = option(
        1024, "with --short-context longce: tokens scored per short window (LongCE's)", group="token weighting"
    )
    weight_norm: str = option(
        "sequence",
        "unit of the weights' normalisation and top-k (T, L1, softmax, top-k share): sequence (a row, the paper's "
        "rule) or document (every document of a packed row on its own, so packing does not change its weights; "
        "recommended for packed data); the same on unpacked data",
        choices=WEIGHT_NORMS,
        group="token weighting",
    )
    sp_size: int = option(
        1,
        "sequence parallelism: every sequence split into this many shards over as many processes (DeepSpeed "
        "Ulysses through the HF Trainer: needs --deepspeed, frozen scoring, unpacked data, n divisible by it); "
        "the weights are those of the whole sequence",
        group="token weighting",
    )
    n: int | None = option(None, "long context in tokens (none: the data's n)", group="context extension")
    rope_theta: float | None = option(
        None,
        "RoPE base for the long run (none: θ·(n/w)^(log 30.6/log 4), the paper's 500k -> 15.3M at 4x)",
        group="context extension",
    )
    rope_scaling: str | None = option(
        None,
        "use the model's RoPE scaling of this type (factor n/w) instead of raising θ",
        choices=ROPE_SCALING_TYPES,
        group="context extension",
    )
    base_context: int | None = option(
        None,
        "the short context w the --model was trained at, where its config already holds a longer one "
        "(none: original_max_position_embeddings of its RoPE parameters, e.g. Llama-3.1's 8192 or Phi-3's, "
        "else max_position_embeddings); the default --window and the base of the extension",
        group="context extension",
    )

    def validate(self) -> None:
        from tokenweight.weighting import WeightingScheme

        super().validate()
        try:
            scheme = WeightingScheme.parse(self.scheme)
        except ValueError as e:
            raise ValueError(f"scheme: {e}") from None
        check_choice(self, "scorer")
        if scheme.needs_short and self.scorer == "none":
            raise ValueError(
                f"scorer: --scheme {scheme} needs short-context NLL: pass --scorer self, or --scorer frozen "
                "--scores DIR (from tokenweight score)"
            )
        if self.scorer == "frozen" and not self.scores:
            raise ValueError("scores: --scorer frozen needs --scores DIR: create it with tokenweight score")
        for name in ("n", "score_batch_size", "stride"):
            check_int(self, name, 1, optional=True)
        check_int(self, "window", 2, optional=True)
        if self.window is not None and self.stride is not None:
            check_window(self.window, self.stride)  # the short-context rule, from its one home
        check_choice(self, "short_context")
        check_choice(self, "weight_norm")
        check_int(self, "longce_trunc_len", 1)
        check_int(self, "longce_sliding_window", 1)
        if self.short_context == "longce" and self.scorer == "frozen":
            raise ValueError(
                "short_context: longce is self-scoring (the live model, as in LongCE); a score cache holds "
                "docs/METHOD.md's windows: pass --scorer self"
            )
        if self.short_context == "longce" and (self.window is not None or self.stride is not None):
            raise ValueError(
                "short_context: --window/--stride set docs/METHOD.md's windows; with --short-context longce "
                "set --longce-trunc-len and --longce-sliding-window instead"
            )
        check_float(self, "rope_theta", low=0, low_open=True, optional=True)
        if self.rope_scaling is not None:
            check_choice(self, "rope_scaling")
        if self.init and self.rope_scaling:
            raise ValueError(
                "rope_scaling extends a trained model (--model); an --init model is built for n directly "
                "(set its base with --rope-theta)"
            )
        check_int(self, "base_context", 2, optional=True)
        if self.init and self.base_context is not None:
            raise ValueError("base_context describes a trained --model; an --init model is built for n directly")
        check_int(self, "sp_size", 1)
        if self.sp_size > 1 and not self.deepspeed:
            raise ValueError(
                "sp_size: sequence parallelism runs on DeepSpeed's Ulysses: pass --deepspeed zero3 (or a config)"
            )
        if self.sp_size > 1 and scheme.needs_short and self.scorer == "self":
            raise ValueError(
                "sp_size: self-scoring under sequence parallelism is not supported (the live model's attention is "
                "split over the processes): score with tokenweight score and pass --scorer frozen --scores DIR"
            )


def train(config: TrainConfig) -> RunResult:
    """Run (or continue, or find finished) the training run ``config.out``."""
    config.check()  # 1. the input, checked once
    with planned_run(config, "train") as plan:  # a finished run is found before anything is loaded
        if plan.state == "done":
            return RunResult(plan.out, plan.summary, already_done=True)
        return RunResult(plan.out, _train(config, plan))


def _train(config: TrainConfig, plan) -> dict:
    """The whole step, top to bottom: data, model, short-context NLL, the component, the run."""
    from tokenweight.context_extension import extend_context, pretrained_context
    from tokenweight.token_weighting import TokenWeighting
    from tokenweight.train.collate import PadCollator, TrainSequences
    from tokenweight.train.runner import run_training
    from tokenweight.train.setup import base_context, build_model, load_train_data, quiet_progress_bars
    from tokenweight.weighting import WeightingScheme

    scheme = WeightingScheme.parse(config.scheme)
    quiet_progress_bars()

    # 2. the data, the long context n, and (frozen scoring) the score cache of the same data
    data = load_train_data(config.data)
    n = config.n or data.n
    if n > data.n:
        raise UsageError(f"--n {n} is longer than the data's sequences (n = {data.n}): prepare the data with n >= {n}")
    cache, window, stride = None, config.window, config.stride
    if config.scorer == "frozen" and scheme.needs_short:
        cache, window, stride = _open_cache(config, data, window, stride)

    # 3. the model, extended from its base context w to n
    model = build_model(config, data.tokenizer, n, config.rope_theta)
    # the context the model was trained at (Llama-3.1: 8192, not its 131072): the default window
    base = (config.base_context or pretrained_context(model)) if config.model else base_context(model)
    longce = scheme.needs_short and config.short_context == "longce"  # LongCE's windows (docs/SCORING.md)
    window, stride = _short_context(config, n, base, window, stride, longce, frozen=cache is not None)
    if config.model:  # a no-op when the model already serves n and no RoPE option is given
        try:
            extend_context(model, n, rope_theta=config.rope_theta, rope_scaling=config.rope_scaling, base_context=base)
        except ValueError as e:
            raise UsageError(f"cannot extend {config.model!r} to n = {n}: {e}") from None

    # 4. where L_short comes from: the cache (the examples' short_nll column), or the live model
    short = None
    if scheme.needs_short and config.scorer == "self":
        from tokenweight.short_nll import LongCEScorer, SelfScorer

        bos, size = data.tokenizer.bos_token_id, config.score_batch_size
        short = (
            LongCEScorer(config.longce_trunc_len, config.longce_sliding_window, batch_size=size)
            if longce
            else SelfScorer(window, stride, bos_token_id=bos, batch_size=size)
        )
    dataset = TrainSequences(data.train, max_length=n, limit=config.max_train_sequences, scores=cache)
    collator = None
    if config.sp_size > 1:  # shards of equal length: every batch padded to n, with global positions
        if dataset.packed:
            raise UsageError("--sp-size: packed data (prepare --pack) under sequence parallelism is not supported")
        if n % config.sp_size:
            raise UsageError(f"--sp-size {config.sp_size} must divide the long context n = {n}: pass another --n")
        pad = data.tokenizer.pad_token_id if data.tokenizer.pad_token_id is not None else data.tokenizer.eos_token_id
        collator = PadCollator(pad or 0, pad_to_multiple_of=n, return_position_ids=True)

    # 5. the token-weighting component: the one place the loss is made (the trainer calls it)
    weighting = TokenWeighting(
        scheme,
        short,
        chunk_size=config.chunk_size,
        loss_kernel=config.loss_kernel,
        weight_norm=config.weight_norm,
        seed=config.seed,
        window=window or base,  # exposure balancing's default tail τ: the base window w
    )
    rope = model.config.get_text_config().rope_parameters
    run_config = {
        **config.to_dict(),
        "command": "train",
        "scheme": str(scheme),
        "n": n,
        "window": window,
        "stride": stride,
        "base_context": base,
        "rope_parameters": dict(rope) if rope else None,
        "packed": dataset.packed,
    }
    # 6. the run: its folder, the HF Trainer with the component, checkpoints, the final model
    return run_training(
        model=model,
        tokenizer=data.tokenizer,
        train_dataset=dataset,
        config=config,
        token_weighting=weighting,
        plan=plan,
        run_config=run_config,
        collator=collator,
    )


def _open_cache(config: TrainConfig, data, window: int | None, stride: int | None):
    """The frozen score cache, checked against the data and the short context of this run."""
    from tokenweight.identity import tokenizer_digest
    from tokenweight.scorecache import ScoreCache

    cache = ScoreCache.open(config.scores)
    window = window or int(cache.meta["window"])
    stride = stride or int(cache.meta["stride"])
    expect = {
        "data": data.manifest.get("fingerprint"),
        "split": "train",
        "n": data.n,
        "window": window,
        "stride": stride,
        "tokenizer": tokenizer_digest(data.tokenizer),
    }
    cache.require(expect, data_path=config.data)
    used = len(data.train) if config.max_train_sequences is None else min(len(data.train), config.max_train_sequences)
    if cache.n_sequences < used:
        raise UsageError(
            f"score cache {config.scores!r} covers {cache.n_sequences} sequences but training uses {used}: pass "
            f"--max-train-sequences {cache.n_sequences} or score all of them"
        )
    return cache, window, stride


def _short_context(config: TrainConfig, n: int, base: int, window, stride, longce: bool, frozen: bool):
    """``(window, stride)`` of the run's short context: the given ones, the cache's, or the model's base
    context w and the recommended stride; UsageError when no short context shorter than n exists."""
    from tokenweight.weighting import WeightingScheme
    from tokenweight.windows import resolve_stride

    needs_short = WeightingScheme.parse(config.scheme).needs_short
    if longce and n <= config.longce_trunc_len:
        raise UsageError(
            f"long context n = {n} must be longer than --longce-trunc-len {config.longce_trunc_len} (every token "
            "before it weighs 1): pass a smaller --longce-trunc-len or a larger --n/data"
        )
    if window is None and needs_short and not longce:
        if config.init or base >= n:
            raise UsageError(
                f"--window is needed: the model has no shorter base context than n = {n} "
                f"(base context {base}: --base-context, else its original_max_position_embeddings or "
                "max_position_embeddings); pass --window w < n"
            )
        window = base
    if window is None:
        return None, stride
    # A frozen cache with w >= n holds a reference model's full-context NLL (Rho-1: L_long - L_ref);
    # only self-scoring needs w < n (with w >= n its short context is the long pass itself: d = 0).
    if n <= window and not frozen:
        raise UsageError(
            f"long context n = {n} must be longer than the short context w = {window}: "
            "pass a smaller --window or a larger --n/data"
        )
    try:
        return window, resolve_stride(n, window, stride)
    except ValueError as e:
        raise UsageError(f"--window/--stride: {e}") from None
