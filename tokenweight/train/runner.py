"""One training run from start (or checkpoint) to saved model and summary; shared by pretrain and train.

Layout of a run folder ``OUT/``::

    settings.json          what identifies the run (compared when the folder is reused)
    run_config.json        every option of the run, derived values included (for people and reports)
    checkpoint-<step>/     HF checkpoints (safetensors weights, optimizer, scheduler, RNG, trainer state)
                           and ``tokenweight_checkpoint.json``, written once the checkpoint is whole
    log.jsonl              one line per logged step (tokenweight.train.callbacks.JsonlLogger)
    tensorboard/           the same numbers for TensorBoard (with --report-to tensorboard, the default)
    model/                 the final model with its tokenizer (AutoModelForCausalLM.from_pretrained)
    summary.json           steps, tokens, wall time, tokens/s, final losses

The resume contract (docs/TRAINING.md): the same command continues a killed run from its last
*complete* checkpoint (model, optimizer, scheduler, RNG states and the position in the data order
are restored, so it ends bitwise where an uninterrupted run ends); a run killed before its first
checkpoint starts over; a finished run is left as it is (:func:`plan_run` says ``done``); other
settings are refused unless ``force``, which trains in the hidden sibling ``.OUT.force`` and moves
it onto ``OUT`` only when it is complete. The writer holds :func:`tokenweight.outputs.output_lock`
(the output protocol: :mod:`tokenweight.outputs`).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tokenweight.errors import UsageError
from tokenweight.io_utils import atomic_write_json, read_json_object, replace_dir, tmp_dir_for
from tokenweight.outputs import (
    check_not_file,
    first_difference,
    foreign_output,
    from_rank0,
    holds_lock,
    launch_rank,
    move_into_place,
    other_settings,
    output_lock,
    staging_dir,
    work_folder,
)

#: settings that may change between an interrupted run and the command that continues it: they
#: do not change what is trained (where and how often it is saved or logged, how data is loaded).
#: Not ``max_steps``: it shapes the learning-rate schedule and the copy task's rows, and a finished
#: run rerun with more steps must not be taken for done. ``device`` and ``attn_implementation``: where
#: a run continues and with which attention kernel (the same function, other rounding); likewise
#: ``loss_kernel`` (a run begun with ``cce`` on a GPU may continue with ``chunked``); ``dtype``
#: (mixed precision) is part of what is trained.
RESUMABLE_CHANGES = frozenset(
    {
        "save_steps",
        "save_total_limit",
        "logging_steps",
        "report_to",
        "dataloader_workers",
        "out",
        "force",
        "device",
        "attn_implementation",
        "loss_kernel",
    }
)
#: options added after runs were already being made: at their default they are left out of a run's
#: settings, so that a run folder started before the option existed (which did what the default
#: does) is still the same run; any other value is recorded and compared as usual
OMITTED_AT_DEFAULT = frozenset({"weight_norm", "sp_size"})

__all__ = [
    "OMITTED_AT_DEFAULT",
    "RESUMABLE_CHANGES",
    "RunPlan",
    "last_complete_checkpoint",
    "plan_run",
    "run_training",
    "staging_dir",
]

SETTINGS, RUN_CONFIG, SUMMARY, MODEL = "settings.json", "run_config.json", "summary.json", "model"
#: written into ``checkpoint-<step>/`` after every process has saved its part of it
CHECKPOINT_MARK = "tokenweight_checkpoint.json"
_PREFIX = "checkpoint-"


@dataclass(frozen=True)
class RunPlan:
    """What a training command will do with its run folder (:func:`plan_run`).

    ``state``: ``"fresh"`` (train from step 0), ``"resume"`` (continue from ``checkpoint``) or
    ``"done"`` (finished with these settings: nothing to do; ``summary`` is its ``summary.json``).
    ``work``: the folder training writes to: ``out``, or with ``force`` the staging sibling that
    replaces ``out`` once complete.
    """

    out: Path
    state: str
    settings: dict = field(default_factory=dict)
    work: Path | None = None
    checkpoint: Path | None = None
    summary: dict | None = None
    force: bool = False

    def __post_init__(self):
        if self.work is None:
            object.__setattr__(self, "work", self.out)

    @property
    def staged(self) -> bool:
        return self.work != self.out

    def describe(self) -> str:
        """One line for the console."""
        if self.state == "done":
            steps = (self.summary or {}).get("steps")
            return f"{self.out}: finished ({steps} steps) with these settings: nothing to do (--force retrains)"
        where = f" in {self.work} (replaces {self.out} when complete)" if self.staged else ""
        if self.state == "resume":
            return f"{self.out}: continuing from {self.checkpoint.name}{where}"
        return f"{self.out}: training from step 0{where}"


def comparable_settings(settings: dict | None) -> dict:
    """``settings`` without the keys that may change on resume (:data:`RESUMABLE_CHANGES`), as JSON."""
    return json.loads(
        json.dumps({k: v for k, v in (settings or {}).items() if k not in RESUMABLE_CHANGES}, default=str)
    )


def _checkpoints(work: Path) -> list[tuple[int, Path]]:
    """``[(step, folder)]`` of every ``checkpoint-<step>`` folder, complete or not, by step."""
    if not work.is_dir():
        return []
    found = []
    for p in work.iterdir():
        if p.name.startswith(_PREFIX) and p.name[len(_PREFIX) :].isdigit() and p.is_dir():
            found.append((int(p.name[len(_PREFIX) :]), p))
    return sorted(found)


def _checkpoint_complete(step: int, folder: Path, legacy: bool) -> bool:
    """A checkpoint is whole when our marker says so; folders written before the marker existed
    (``legacy``: no settings.json in the run) count when HF's last file, trainer_state.json, is."""
    mark = read_json_object(folder / CHECKPOINT_MARK)
    if mark is not None:
        return mark.get("step") == step
    if legacy:
        state = read_json_object(folder / "trainer_state.json")
        return state is not None and state.get("global_step") == step
    return False


def last_complete_checkpoint(work: str | os.PathLike) -> Path | None:
    """The newest whole checkpoint of a run folder (a kill during a save leaves a partial one:
    it is ignored), or None."""
    work = Path(work)
    legacy = not (work / SETTINGS).is_file()
    done = [p for step, p in _checkpoints(work) if _checkpoint_complete(step, p, legacy)]
    return done[-1] if done else None


def _recorded(folder: Path) -> dict | None:
    """The settings a run folder was started with (settings.json; run_config.json of older runs)."""
    rec = read_json_object(folder / SETTINGS)
    if rec is None and (rec := read_json_object(folder / RUN_CONFIG)) is not None:
        rec = comparable_settings(rec)
    return rec


def _differing_setting(old: dict, new: dict) -> str | None:
    """The first setting of ``new`` that ``old`` lacks or has otherwise; an option of
    :data:`OMITTED_AT_DEFAULT` recorded in ``old`` only (``new`` has it at its default) differs too."""
    return first_difference(old, new, [*new, *(k for k in old if k in OMITTED_AT_DEFAULT and k not in new)])


def _visible(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.is_dir() else []


def _inspect(work: Path, settings: dict) -> tuple[str, Path | None, dict | None]:
    """(state, checkpoint, summary) of a run folder started with ``settings``."""
    summary = read_json_object(work / SUMMARY)
    if summary is not None and (work / MODEL).is_dir():
        return "done", None, summary
    ckpt = last_complete_checkpoint(work)
    return ("resume", ckpt, None) if ckpt is not None else ("fresh", None, None)


def plan_run(out: str | os.PathLike, settings: dict | None, force: bool = False) -> RunPlan:
    """Decide what the training command for run folder ``out`` does; never writes the folder.

    ``settings``: what identifies the run (keys in :data:`RESUMABLE_CHANGES` are ignored); it is
    compared, key by key, with the settings the folder was started with. Cheap (a few small JSON
    files), so call it before loading a model; :func:`run_training` plans again under the lock.
    A folder that another process is writing is refused (:func:`tokenweight.outputs.output_lock`).

    - ``out`` missing or empty: ``fresh``.
    - started or finished with the same settings: ``resume`` from the last complete checkpoint,
      ``fresh`` when it has none (killed before its first checkpoint), ``done`` when finished.
    - other settings, or a folder that is not a run: ``UsageError`` (one line: the first differing
      setting, its old and new value, and the fixes), unless ``force``.
    - ``force``: a new run in :func:`staging_dir` (a forced run killed earlier with the same settings
      is continued there); ``out`` stays as it is until the new run is complete.
    """
    out = Path(out).expanduser()
    new = comparable_settings(settings)
    check_not_file(out, "the run")
    if out.parent.is_dir():  # another process writing ``out`` is refused now, before a model is loaded
        with output_lock(out):
            pass
    if force:
        work = staging_dir(out)
        old = _recorded(work)
        if old is None or _differing_setting(old, new) is not None:
            return RunPlan(out, "fresh", new, work=work, force=True)
        state, ckpt, _ = _inspect(work, new)
        if state == "done":  # complete but not yet moved into place: a zero-step resume finishes it
            state, ckpt = "resume", last_complete_checkpoint(work)
        return RunPlan(out, state if ckpt is not None else "fresh", new, work=work, checkpoint=ckpt, force=True)
    old = _recorded(out)
    if old is None:
        if _visible(out):
            raise foreign_output(out, f"a run folder (no {SETTINGS})")
        return RunPlan(out, "fresh", new)
    state, ckpt, summary = _inspect(out, new)
    if (k := _differing_setting(old, new)) is not None:
        what = "holds a finished run" if state == "done" else "holds a started run"
        raise other_settings(out, what, k, old.get(k), new.get(k, "its default"))
    return RunPlan(out, state, new, checkpoint=ckpt, summary=summary)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _tidy(plan: RunPlan, run_config: dict) -> None:
    """Main process, under the lock: make ``plan.work`` what the plan expects, record the settings.

    Leftovers of killed writers go (temporaries, partial checkpoints, checkpoints newer than the
    one resumed from); a fresh start empties the folder (except ``settings.json``, rewritten last,
    so that a process planning at the same moment never sees a folder without settings).
    """
    work = plan.work
    if plan.staged and plan.state == "fresh" and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    keep_until = int(plan.checkpoint.name[len(_PREFIX) :]) if plan.checkpoint is not None else -1
    for p in work.iterdir():
        if p.name == SETTINGS:
            continue
        if plan.state == "fresh" or p.name.startswith(".") and p.name.endswith((".tmp", ".old")):
            _remove(p)
    for step, p in _checkpoints(work):
        if step > keep_until or not _checkpoint_complete(step, p, legacy=not (work / SETTINGS).is_file()):
            (p / CHECKPOINT_MARK).unlink(missing_ok=True)
            _remove(p)
    atomic_write_json(work / SETTINGS, plan.settings)
    atomic_write_json(work / RUN_CONFIG, run_config)


def _broadcast(value, trainer):
    if trainer.args.world_size <= 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def save_final(trainer, path: Path) -> None:
    """``trainer.save_model`` (weights gathered from every process) into ``path``, atomically."""
    main = trainer.is_world_process_zero()
    tmp = str(tmp_dir_for(path)) if main else None
    tmp = _broadcast(tmp, trainer)
    try:
        trainer.save_model(tmp)  # every process: FSDP/ZeRO-3 gather; the main one writes (with the tokenizer)
        trainer.accelerator.wait_for_everyone()
        if main:
            replace_dir(tmp, path)
    except BaseException:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    trainer.accelerator.wait_for_everyone()


def checkpoint_marker(trainer, keep: int | None):
    """Trainer callback: once every process has saved checkpoint-N, the main process writes
    ``checkpoint-N/tokenweight_checkpoint.json`` and only then deletes the oldest complete
    checkpoints beyond ``keep`` (HF's own rotation is off: it deletes before the new one is whole)."""
    from transformers import TrainerCallback

    class CheckpointMarker(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            trainer.accelerator.wait_for_everyone()
            if state.is_world_process_zero:
                work = Path(args.output_dir)
                step = state.global_step
                atomic_write_json(work / f"{_PREFIX}{step}" / CHECKPOINT_MARK, {"step": step})
                done = [p for s, p in _checkpoints(work) if _checkpoint_complete(s, p, legacy=False)]
                for p in done[:-keep] if keep else []:
                    (p / CHECKPOINT_MARK).unlink(missing_ok=True)  # first: a kill mid-delete leaves it incomplete
                    shutil.rmtree(p, ignore_errors=True)
            trainer.accelerator.wait_for_everyone()
            return control

    return CheckpointMarker()


def _summary(trainer, result, plan: RunPlan, world: int) -> dict:
    state = trainer.state
    last = next((h for h in reversed(state.log_history) if "weighted_loss" in h), {})
    runtime = float(result.metrics.get("train_runtime", 0.0))
    initial = getattr(trainer, "_initial_num_input_tokens_seen", 0) or 0
    session_tokens = int(state.num_input_tokens_seen) - int(initial)
    return {
        "steps": state.global_step,
        "tokens": int(state.num_input_tokens_seen),
        "session_tokens": session_tokens,
        "wall_time_s": runtime,
        "tokens_per_s": session_tokens / runtime if runtime > 0 else 0.0,
        "final_loss": last.get("weighted_loss"),
        "final_plain_loss": last.get("plain_loss"),
        "scheme": str(trainer.scheme),
        "scorer": _scorer_name(trainer.token_weighting),
        "resumed_from": str(plan.out / plan.checkpoint.name) if plan.checkpoint is not None else None,
        "world_size": world,
        "model": str(plan.out / MODEL),
    }


def _scorer_name(token_weighting) -> str | None:
    """What gave the run its short-context NLL: the scorer's repr, the score cache's column, or None."""
    if not token_weighting.scheme.needs_short:
        return None
    return repr(token_weighting.short) if token_weighting.short is not None else "short_nll column (score cache)"


def run_training(
    *,
    model,
    tokenizer,
    train_dataset,
    config,
    token_weighting=None,
    out_dir=None,
    run_config: dict | None = None,
    plan: RunPlan | None = None,
    collator=None,
) -> dict:
    """Train ``model`` on ``train_dataset`` (``TrainSequences``) into the run folder ``out_dir``.

    ``config``: the run's options (a ``RunConfig``: ``tokenweight.stages.runs``), the one channel
    of its settings to the Trainer (:func:`tokenweight.train.recipe.training_arguments`);
    ``out_dir`` defaults to ``config.out``. ``token_weighting``: the loss, a
    :class:`~tokenweight.token_weighting.TokenWeighting` (None: uniform, the config's chunk size,
    kernel and seed). ``run_config``: every option of the run (written to ``run_config.json``).
    ``plan``: the caller's :func:`plan_run` (its settings and ``force`` are used; made while the
    caller holds the folder's lock, as ``tokenweight.stages.runs.planned_run`` does, it is used as
    it is, else made again under the lock; by the main process, and shared with the others); without one, the
    settings are ``run_config`` minus :data:`RESUMABLE_CHANGES` and ``config.force`` applies. A
    ``done`` run is not touched. Under torchrun every rank calls it. Returns the summary (also
    ``OUT/summary.json``); for a run that was already done, that summary plus ``"already_done": True``.
    """
    import transformers

    from tokenweight.token_weighting import TokenWeighting
    from tokenweight.train.callbacks import JsonlLogger, install_progress, place_tensorboard
    from tokenweight.train.collate import PadCollator
    from tokenweight.train.recipe import training_arguments
    from tokenweight.train.trainer import WeightedTrainer

    transformers.logging.set_verbosity_warning()
    out = Path(out_dir if out_dir is not None else config.out).expanduser()
    run_config = dict(run_config or {})
    given = plan if plan is not None and holds_lock(out) else None  # made under the lock held since
    settings = plan.settings if plan is not None else comparable_settings(run_config)
    force = plan.force if plan is not None else bool(getattr(config, "force", False))
    if token_weighting is None:
        token_weighting = TokenWeighting(
            "uniform", chunk_size=config.chunk_size, loss_kernel=config.loss_kernel, seed=config.seed
        )
    with output_lock(out):  # rank 0 only (the launcher stops a refused job's other ranks)
        mine, err = None, None
        if launch_rank() == 0:  # before the process group: the other ranks wait at its set-up
            try:  # the caller's plan when made under the lock it still holds (planned_run), else planned now
                mine = given if given is not None else plan_run(out, settings, force=force)
                if mine.state != "done":
                    _tidy(mine, run_config)
            except UsageError as e:
                err = str(e)
        work = work_folder(out, force)
        args = training_arguments(config, work, getattr(model.config, "_attn_implementation", None) or "sdpa")
        world = args.world_size
        mine, err = from_rank0((mine, err), world)  # the process group exists once TrainingArguments is built
        if err is not None:
            raise UsageError(err)
        plan = mine
        if plan.state == "done":
            return {**(plan.summary or {}), "already_done": True}
        keep = args.save_total_limit
        args.save_total_limit = None  # rotation: CheckpointMarker, after the new checkpoint is marked
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        trainer = WeightedTrainer(
            model=model,
            args=args,
            train_dataset=train_dataset,
            data_collator=collator or PadCollator(pad),
            processing_class=tokenizer,
            token_weighting=token_weighting,
            callbacks=[JsonlLogger(work / "log.jsonl")],  # trackers: args.report_to (HF's own callbacks)
        )
        trainer.add_callback(checkpoint_marker(trainer, keep))
        install_progress(trainer)
        place_tensorboard(trainer, work / "tensorboard")
        checkpoint = str(plan.checkpoint) if plan.checkpoint is not None else None
        result = trainer.train(resume_from_checkpoint=checkpoint)
        save_final(trainer, work / MODEL)
        summary = _summary(trainer, result, plan, world)
        if trainer.is_world_process_zero():
            atomic_write_json(work / SUMMARY, summary)
            move_into_place(work, out)  # the old run stays whole until here
        trainer.accelerator.wait_for_everyone()
    return summary
