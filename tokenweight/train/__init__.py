"""Training on the HF Trainer with the token-weighted loss (docs/METHOD.md).

- ``collate``: examples (whole sequences with their cached ``short_nll``, or short windows for
  pretraining) and the padding collator;
- ``trainer``: ``TokenWeightingMixin`` (the token-weighting component of ``tokenweight.token_weighting``
  inside any HF Trainer: exact normalisation, statistics, NaN guard) and ``WeightedTrainer``;
- ``stats``: the logged loss and weight statistics, step time;
- ``callbacks``: JSONL and TensorBoard logging, progress bar;
- ``recipe``: our options -> ``TrainingArguments``;
- ``runner``: one run end to end (resume, final model, summary), used by ``tokenweight pretrain``/``train``.
"""
