"""Trainer callbacks: per-step JSONL log, TensorBoard at a fixed place, quiet progress bar.

The numbers themselves are produced by ``WeightedTrainer.log`` (weighted and plain loss, weight
statistics, learning rate, step time, tokens/s); these callbacks only write them down:

- :class:`JsonlLogger`: one JSON object per training log to ``OUT/log.jsonl`` (flushed line by
  line, so a killed run keeps every finished step). On resume the lines of steps after the
  checkpoint (from the interrupted run) are dropped first, so the file always describes one
  consistent run.
- :func:`place_tensorboard`: the trackers of ``--report-to`` are HF's own integrations
  (``TrainingArguments.report_to``, one callback each, added by the Trainer); this only points
  HF's TensorBoard callback at ``OUT/tensorboard`` instead of its time-stamped default, unless
  ``TENSORBOARD_LOGGING_DIR`` says otherwise. No second TensorBoard writer is ever added.
- :class:`QuietProgress`: HF's tqdm progress bar without its per-step ``print(logs)`` (the logs go
  to the files above); like every bar of the package it is silent when stderr is not a terminal.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from tokenweight.io_utils import atomic_write_text


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class JsonlLogger(TrainerCallback):
    """Append every training log (those with a ``loss``) as ``{"step": …, …}`` to ``path``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        kept = []
        if state.global_step > 0 and self.path.is_file():  # resumed: keep the steps up to the checkpoint
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
                if rec.get("step", math.inf) <= state.global_step:
                    kept.append(line + "\n")
        atomic_write_text(self.path, "".join(kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        record = {"step": state.global_step, **{k: _clean(v) for k, v in logs.items()}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()


def place_tensorboard(trainer, log_dir: str | os.PathLike) -> None:
    """Make HF's ``TensorBoardCallback`` of ``trainer`` (present when ``report_to`` has
    tensorboard) write to ``log_dir``; ``TENSORBOARD_LOGGING_DIR``, when set, wins as in HF."""
    from transformers.integrations import TensorBoardCallback

    if os.getenv("TENSORBOARD_LOGGING_DIR"):
        return
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TensorBoardCallback):
            cb.logging_dir = str(log_dir)


class QuietProgress(ProgressCallback):
    """HF's progress bar, without printing every log dict."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return


def install_progress(trainer) -> None:
    """Replace HF's printing progress/printer callbacks with :class:`QuietProgress` on a terminal."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if sys.stderr.isatty():
        trainer.add_callback(QuietProgress())
