"""Entry point of the ``tokenweight`` program: a thin layer over the stages.

Each subcommand has its one-line help in :data:`SUMMARIES`. A stage subcommand's module
``tokenweight.cli.<name>`` defines ``CONFIG``
(its config class, ``tokenweight.config.StageConfig``) and ``run(config) -> int | None``: the
flags come from the config's fields (``tokenweight.cli.options``), ``--config FILE.yaml`` fills the
same fields (dashes or underscores; unknown keys refused), flags given on the command line override
it, and a ``ValueError`` of the config (a bad value) or a ``UsageError`` of the stage (bad input)
becomes one line ``tokenweight: error: ...`` and exit code 2 -- here, and nowhere else.

The other subcommands (``tasks``, ``show``) define ``add_arguments(parser)`` and ``run(args)``.
Only the chosen subcommand's module and options are loaded, so ``tokenweight --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from tokenweight.errors import EXIT_USAGE, ConfigError, UsageError

#: subcommand name -> module under tokenweight.cli
SUBCOMMANDS = {
    "prepare": "prepare",
    "pretrain": "pretrain",
    "score": "score",
    "select": "select",
    "train": "train",
    "eval": "eval",
    "report": "report",
    "tasks": "tasks",
    "show": "show",
    "demo": "demo",
}

#: one-line help of each subcommand, for ``tokenweight --help`` without importing every module
SUMMARIES = {
    "prepare": "tokenize a corpus (text folder, jsonl, parquet, saved/hub dataset, the stdlib) into n-token sequences",
    "pretrain": "pretrain at short context w with plain cross-entropy (the short-context base model)",
    "score": "cache the short-context NLL of every training sequence under a frozen scorer, or add it to any dataset "
    "as a column (resumable, multi-process)",
    "select": "keep the documents of prepared data whose text needs long context most (LongFilter's KL or the "
    "paper's mean |d|), as a new prepared folder",
    "train": "train with token-weighted loss at long context (self or frozen scoring; uniform = plain CE)",
    "eval": "evaluate models side by side: perplexity by position, LongPPL, episode recall, long-context tasks",
    "report": "build a report (markdown, html, plots) from an evaluation and its training runs",
    "tasks": "synthetic RULER-style tasks: list them, or export samples as RULER JSONL",
    "show": "token heat map of long/short NLL and the weights of weighting schemes for one text",
    "demo": "run the main job: prepare, pretrain, score, extend with every scheme, evaluate, report",
}


def load_module(name: str):
    return importlib.import_module(f"tokenweight.cli.{SUBCOMMANDS[name]}")


def load_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML config: a mapping of option names to values."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file {str(p)!r} does not exist: pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        line = str(e).splitlines()[0]
        raise UsageError(f"config file {str(p)!r} is not valid YAML ({line}): fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {str(p)!r} must hold a mapping of option: value, not a {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """The program's parser; only ``command``'s options are added (None: none)."""
    parser = argparse.ArgumentParser(
        prog="tokenweight",
        description="Token-weighted training for long-context language models "
        "(Helm, Daheim, Gurevych, NAACL 2025 Findings, and beyond).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        if name != command:
            sub.add_parser(name, help=SUMMARIES[name])
            continue
        mod = load_module(name)
        sp = sub.add_parser(
            name,
            help=SUMMARIES[name],
            description=(mod.__doc__ or SUMMARIES[name]).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sp.add_argument("--config", metavar="YAML", help="YAML file of option: value (flags override it)")
        if hasattr(mod, "CONFIG"):
            from tokenweight.cli.options import add_config_arguments

            add_config_arguments(sp, mod.CONFIG)
        else:
            mod.add_arguments(sp)
    return parser


def stage_config(cls, args: argparse.Namespace):
    """The config of a stage from ``--config`` and the flags (a value that does not parse ->
    UsageError); the stage function validates it (:meth:`tokenweight.config.StageConfig.check`)."""
    from tokenweight.cli.options import config_from_args, flag_message

    base = load_yaml(args.config) if getattr(args, "config", None) else {}
    try:
        return config_from_args(cls, args, base)
    except ValueError as e:
        raise UsageError(flag_message(str(e), cls)) from None


def _command(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        command = _command(argv)
        parser = build_parser(command if command in SUBCOMMANDS else None)
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return EXIT_USAGE
        mod = load_module(args.command)
        if hasattr(mod, "CONFIG"):
            rc = mod.run(stage_config(mod.CONFIG, args))
        else:
            if getattr(args, "config", None):
                sub = next(a for a in parser._actions if a.dest == "command").choices[args.command]
                values = load_yaml(args.config)
                unknown = sorted(set(values) - {a.dest for a in sub._actions})
                if unknown:
                    raise UsageError(
                        f"unknown option(s) in config: {', '.join(unknown)}; valid options are the flags of "
                        f"'tokenweight {args.command} --help'"
                    )
                sub.set_defaults(**values)  # explicit flags still win
                args = parser.parse_args(argv)
            rc = mod.run(args)
        return int(rc or 0)
    except UsageError as e:
        print(f"tokenweight: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as e:  # a stage's config refused by its validate(): the field as its flag
        from tokenweight.cli.options import flag_message

        print(f"tokenweight: error: {flag_message(str(e), e.config_class)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("tokenweight: interrupted (outputs written so far are complete; rerun to continue)", file=sys.stderr)
        return 130


def entry() -> None:
    """Console-script and ``python -m`` entry: run, then exit with the command's code.

    Under torchrun/accelerate (``WORLD_SIZE`` > 1) the process ends with ``os._exit`` once every
    output is written and flushed: with the gloo backend, a run sometimes aborted at interpreter
    shutdown ("terminate called without an active exception") after all work was done, which made
    the launcher report the whole job as failed; ``os._exit`` skips that teardown (docs/TRAINING.md).
    """
    rc = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":
    entry()
