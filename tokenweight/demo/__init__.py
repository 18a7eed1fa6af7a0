"""The main job: the paper's experiment in miniature, stage by stage, cached and resumable.

The demo builds one typed config per stage from its :class:`Profile` and calls the stages
(``tokenweight.stages``), so it runs exactly the code a user runs:

1. ``prepare`` the embedded corpus twice, sharing one tokenizer: short sequences (``w`` tokens,
   episodes closer than ``w``) to pretrain on, and disjoint documents in long sequences (``n``
   tokens, episodes up to ``n`` apart) to extend on;
2. ``pretrain`` the short-context base model (the stand-in for the paper's 8k Llama-3): first an
   induction warm-up on a synthetic copy task (``Profile.copy_steps``, ``task="copy"``), because a
   model trained briefly from scratch on natural text does not learn to copy from its context at
   all; then the natural corpus with a share of copy rows mixed in, so that the copy circuit
   survives (docs/TRAINING.md has the measurements behind this); then the gate: the base model must
   already copy episodes closer than ``w`` on held-out pretraining sequences, or the demo stops and
   says the base model is too weak (``skip_gate`` goes on and records the failure in the report).
   The default profile ships this base model (:data:`SHIPPED_BASES`, ``tokenweight/assets/base-default``,
   written by ``export_base`` from exactly these stages, with a BASE.json of command, settings,
   digests, versions and gate): unless ``from_scratch``, the demo prepares the pretraining data with
   its tokenizer (the same one prepare trains: BASE.json), copies it to ``base/model`` instead of
   pretraining, and runs the gate on it as before;
3. ``score`` the extension data once with the base model as frozen scorer;
4. ``train``: extend the context to ``n`` with every scheme of :data:`SCHEMES`, at equal steps and
   tokens, for each seed (seed = data order, paired across schemes);
5. ``evaluate``: base model and every run, side by side, same samples;
6. ``report``: the report folder.

Every stage continues an interrupted call and skips finished work by itself (the stages' resume
contract); the gate's result is kept in ``gate.json``. An interrupted demo therefore continues at
the stage it was in, and a rerun of a finished demo only rebuilds the report. A demo folder
belongs to one set of settings (``demo_settings.json``).

The profiles are the embedded defaults: the shipped YAML configs ``configs/demo_*.yaml`` are
written from them (:func:`default_configs`) and a test checks that they agree.
"""

from __future__ import annotations

from pathlib import Path

from tokenweight.demo.base import check_shipped_base
from tokenweight.demo.defaults import default_configs, render_default_configs
from tokenweight.demo.experiment import Demo
from tokenweight.demo.options import DemoConfig
from tokenweight.demo.profiles import (
    BASE_FORMAT,
    PRETRAIN_FIELDS,
    PROFILES,
    SCHEMES,
    SHIPPED_BASES,
    SPARSE_KAPPA_WHY,
    Profile,
    make_profile,
)

__all__ = [
    "BASE_FORMAT",
    "PRETRAIN_FIELDS",
    "PROFILES",
    "SCHEMES",
    "SHIPPED_BASES",
    "SPARSE_KAPPA_WHY",
    "Demo",
    "DemoConfig",
    "Profile",
    "check_shipped_base",
    "default_configs",
    "make_profile",
    "render_default_configs",
    "run_demo",
]


def run_demo(config: DemoConfig) -> Path:
    """The whole experiment of ``config`` (the library entry of ``tokenweight demo``)."""
    from tokenweight.train.setup import quiet_progress_bars

    config.check()
    quiet_progress_bars()  # no library loading bars in logs (stderr not a terminal); ours stay
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    demo = Demo(
        Path(config.out),
        config.make_profile(),
        skip_gate=config.skip_gate,
        shipped_base=config.shipped_base(),
        runtime=config.runtime_options(),
        corpus=config.corpus,
    )
    if config.export_base is not None:
        return demo.export_base(Path(config.export_base), command=config.command())
    return demo.run()
