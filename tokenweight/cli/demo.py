"""``tokenweight demo``: the paper's experiment in miniature, end to end (tokenweight.demo)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run the main job: prepare, pretrain, score, extend with every scheme, evaluate, report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", default="runs/demo", help="demo folder; rerun with the same --out to resume (default runs/demo)"
    )
    g = parser.add_mutually_exclusive_group()
    g.add_argument(
        "--quick",
        action="store_true",
        default=False,
        help="tiny everything (a few minutes at most): what the tests run end to end",
    )
    g.add_argument(
        "--full",
        action="store_true",
        default=False,
        help="3 seeds and more steps (at most ~90 minutes on 2 CPU cores): the README's results",
    )
    parser.add_argument("--seeds", type=int, default=None, help="run every scheme K times (data orders 0..K-1)")
    parser.add_argument(
        "--copy-steps",
        type=int,
        default=None,
        help="override the profile's induction warm-up steps (copy task; 0: none)",
    )
    parser.add_argument("--pretrain-steps", type=int, default=None, help="override the profile's pretraining steps")
    parser.add_argument("--extend-steps", type=int, default=None, help="override the profile's extension steps")
    parser.add_argument(
        "--skip-gate",
        action="store_true",
        default=False,
        help="continue when the base model fails the copy gate (the report records the failure)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")


def run(args) -> int:
    from tokenweight.demo import Demo, make_profile
    from tokenweight.errors import UsageError

    if args.seeds is not None and args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    for flag, low in (("copy_steps", 0), ("pretrain_steps", 1), ("extend_steps", 1)):
        value = getattr(args, flag)
        if value is not None and value < low:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= {low}, got {value}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    name = "quick" if args.quick else "full" if args.full else "default"
    profile = make_profile(
        name,
        seeds=args.seeds,
        copy_steps=args.copy_steps,
        pretrain_steps=args.pretrain_steps,
        extend_steps=args.extend_steps,
    )
    Demo(Path(args.out), profile, skip_gate=args.skip_gate).run()
    return 0
