"""Training on the HF Trainer with the token-weighted loss (docs/METHOD.md).

- ``collate``: examples with their dataset index (whole sequences, or short windows for
  pretraining) and the padding collator;
- ``scorers``: short-context NLL for the weights (self-scoring, frozen score cache);
- ``trainer``: ``WeightedTrainer`` (chunked weighted loss, exact normalisation, statistics, NaN guard);
- ``callbacks``: JSONL and TensorBoard logging, progress bar;
- ``recipe``: our options -> ``TrainingArguments``;
- ``runner``: one run end to end (resume, final model, summary), used by ``tokenweight pretrain``/``train``.
"""
