"""The shipped YAML configs ``configs/demo_*.yaml``: written from the default profile, checked by a test."""

from __future__ import annotations

from pathlib import Path

from tokenweight.demo.experiment import Demo
from tokenweight.demo.profiles import PATH_FIELDS, PROFILES

_CONFIG_HEADERS = {
    "demo_warmup": (
        "The embedded default, step 1 of 3: the induction warm-up of the short-context base model (a copy\n"
        "task; --data only gives the tokenizer). docs/TRAINING.md explains why it is needed.\n"
        "  tokenweight pretrain --config tokenweight/configs/demo_warmup.yaml --data DATA --out runs/warmup"
    ),
    "demo_pretrain": (
        "The embedded default, step 2 of 3: pretrain the base model at w tokens on the natural corpus, with\n"
        "a share of copy rows, continuing from the warm-up.\n"
        "  tokenweight pretrain --config tokenweight/configs/demo_pretrain.yaml --model runs/warmup/model \\\n"
        "      --data DATA --out runs/base"
    ),
    "demo_train": (
        "The embedded default, step 3 of 3: extend the base model from w to the data's n with the paper's\n"
        "best general setting, dense with lambda = 0.75, self-scored (the baseline: --scheme uniform).\n"
        "  tokenweight train --config tokenweight/configs/demo_train.yaml --model runs/base/model \\\n"
        "      --data DATA --out runs/dense"
    ),
}


def default_configs() -> dict[str, dict]:
    """The default profile's training stages as the shipped ``configs/demo_*.yaml`` hold them:
    every setting that differs from its config class's default, without paths (given per run)."""
    import dataclasses

    demo = Demo(Path("runs/demo"), PROFILES["default"])
    configs = {
        "demo_warmup": demo.warmup_config(),
        "demo_pretrain": demo.pretrain_config(),
        "demo_train": demo.train_config("dense-self", "dense:0.75", "self", 0),
    }
    out = {}
    for name, config in configs.items():
        if config is None:
            continue
        fresh = type(config)()
        out[name] = {
            f.name: getattr(config, f.name)
            for f in dataclasses.fields(config)
            if f.name not in PATH_FIELDS and getattr(config, f.name) != getattr(fresh, f.name)
        }
    return out


def render_default_configs() -> dict[str, str]:
    """``{file name: YAML text}`` of :func:`default_configs`: how the shipped files are written."""
    import yaml

    texts = {}
    for name, values in default_configs().items():
        header = "".join(f"# {line}".rstrip() + "\n" for line in _CONFIG_HEADERS[name].splitlines())
        note = "# Written by tokenweight.demo.render_default_configs() from the default profile (tested).\n"
        texts[f"{name}.yaml"] = header + note + yaml.safe_dump(values, sort_keys=False)
    return texts
