"""Stage ``train``: context extension with a token-weighted loss.

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
"""

from __future__ import annotations

from tokenweight.errors import UsageError
from tokenweight.stages.runs import RunResult, plan_stage
from tokenweight.train.config import TrainConfig

__all__ = ["TrainConfig", "train"]


def _open_cache(config: TrainConfig, data, window: int | None, stride: int | None):
    """The frozen score cache, checked against the data and the short context of this run."""
    from tokenweight.identity import tokenizer_digest
    from tokenweight.scorecache import ScoreCache

    probe = ScoreCache.open(config.scores)
    window = window or int(probe.meta["window"])
    stride = stride or int(probe.meta["stride"])
    expect = {
        "data": data.manifest.get("fingerprint"),
        "split": "train",
        "n": data.n,
        "window": window,
        "stride": stride,
        "tokenizer": tokenizer_digest(data.tokenizer),
    }
    cache = ScoreCache.open(config.scores, expect=expect, data_path=config.data)
    used = len(data.train) if config.max_train_sequences is None else min(len(data.train), config.max_train_sequences)
    if cache.n_sequences < used:
        raise UsageError(
            f"score cache {config.scores!r} covers {cache.n_sequences} sequences but training uses {used}: pass "
            f"--max-train-sequences {cache.n_sequences} or score all of them"
        )
    return cache, window, stride


def train(config: TrainConfig) -> RunResult:
    """Run (or continue, or find finished) the training run ``config.out``."""
    from tokenweight.models import pretrained_context
    from tokenweight.scoring import resolve_stride
    from tokenweight.token_weighting import check_trainable
    from tokenweight.train.runner import run_training
    from tokenweight.train.setup import base_context, build_model, load_train_data, quiet_progress_bars
    from tokenweight.weighting import WeightingScheme

    config.validate()
    scheme = WeightingScheme.parse(config.scheme)
    out, plan = plan_stage(config, "train")
    if plan.state == "done":
        return RunResult(out, plan.summary, already_done=True)
    quiet_progress_bars()
    data = load_train_data(config.data)
    n = config.n or data.n
    if n > data.n:
        raise UsageError(f"--n {n} is longer than the data's sequences (n = {data.n}): prepare the data with n >= {n}")
    cache, window, stride = None, config.window, config.stride
    if config.scorer == "frozen" and scheme.needs_short:
        cache, window, stride = _open_cache(config, data, window, stride)

    model = build_model(config, data.tokenizer, n, config.rope_theta)
    check_trainable(model, config.model or config.init)  # before any work: one line naming the model
    _check_loss_kernel(config, model)
    # the context the model was trained at (Llama-3.1: 8192, not its 131072): the default window
    base = (config.base_context or pretrained_context(model)) if config.model else base_context(model)
    longce = scheme.needs_short and config.short_context == "longce"  # LongCE's windows (docs/SCORING.md)
    if longce and n <= config.longce_trunc_len:
        raise UsageError(
            f"long context n = {n} must be longer than --longce-trunc-len {config.longce_trunc_len} (every token "
            "before it weighs 1): pass a smaller --longce-trunc-len or a larger --n/data"
        )
    if window is None and scheme.needs_short and not longce:
        if config.init or base >= n:
            raise UsageError(
                f"--window is needed: the model has no shorter base context than n = {n} "
                f"(base context {base}: --base-context, else its original_max_position_embeddings or "
                "max_position_embeddings); pass --window w < n"
            )
        window = base
    if window is not None:
        # A frozen cache with w >= n holds a reference model's full-context NLL (Rho-1: L_long - L_ref);
        # only self-scoring needs w < n (with w >= n its short context is the long pass itself: d = 0).
        if n <= window and cache is None:
            raise UsageError(
                f"long context n = {n} must be longer than the short context w = {window}: "
                "pass a smaller --window or a larger --n/data"
            )
        try:
            stride = resolve_stride(n, window, stride)
        except ValueError as e:
            raise UsageError(f"--window/--stride: {e}") from None

    if config.model:  # a no-op when the model already serves n and no RoPE option is given
        from tokenweight.models import extend_context

        try:
            extend_context(model, n, rope_theta=config.rope_theta, rope_scaling=config.rope_scaling, base_context=base)
        except ValueError as e:
            raise UsageError(f"cannot extend {config.model!r} to n = {n}: {e}") from None

    scorer = None  # frozen: the cache becomes the examples' short_nll column (TrainSequences)
    if scheme.needs_short and config.scorer != "frozen":
        from tokenweight.short_nll import LongCEScorer, SelfScorer

        if longce:
            scorer = LongCEScorer(
                config.longce_trunc_len, config.longce_sliding_window, batch_size=config.score_batch_size
            )
        else:
            scorer = SelfScorer(
                window, stride, bos_token_id=data.tokenizer.bos_token_id, batch_size=config.score_batch_size
            )

    from tokenweight.train.collate import PadCollator, TrainSequences

    dataset = TrainSequences(data.train, max_length=n, limit=config.max_train_sequences, scores=cache)
    collator = None
    if config.sp_size > 1:  # shards of equal length: every batch padded to n, with global positions
        if dataset.packed:
            raise UsageError("--sp-size: packed data (prepare --pack) under sequence parallelism is not supported")
        if n % config.sp_size:
            raise UsageError(f"--sp-size {config.sp_size} must divide the long context n = {n}: pass another --n")
        pad = data.tokenizer.pad_token_id if data.tokenizer.pad_token_id is not None else data.tokenizer.eos_token_id
        collator = PadCollator(pad or 0, pad_to_multiple_of=n, return_position_ids=True)
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
    summary = run_training(
        model=model,
        tokenizer=data.tokenizer,
        train_dataset=dataset,
        recipe=config,
        out_dir=out,
        plan=plan,
        scheme=scheme,
        scorer=scorer,
        chunk_size=config.chunk_size,
        run_config=run_config,
        trainer_class=_trainer_class(config, window or base),
        collator=collator,
    )
    return RunResult(out, summary)


def _check_loss_kernel(config, model) -> None:
    """``--loss-kernel cce``: the model's output layer must map onto CCE (the device, the package and
    the dtype were checked by ``validate()``); UsageError naming the model otherwise."""
    if config.loss_kernel == "cce":
        from tokenweight.loss_kernels import cce_model_problem

        problem = cce_model_problem(model)
        if problem is not None:
            raise UsageError(f"model {config.model or config.init!r}: {problem}")


def _trainer_class(config, window: int | None = None):
    """``WeightedTrainer`` with the run's ``--loss-kernel`` (and ``--weight-norm``: train only);
    ``window``: the base window w (exposure balancing's default tail, ``exact:<α>``)."""
    from functools import partial

    from tokenweight.train.trainer import WeightedTrainer

    norm = getattr(config, "weight_norm", "sequence")
    return partial(WeightedTrainer, loss_kernel=config.loss_kernel, weight_norm=norm, window=window)
