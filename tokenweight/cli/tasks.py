"""``tokenweight tasks``: list the synthetic RULER-style tasks, or export samples as RULER JSONL.

    tokenweight tasks                      # the task table
    tokenweight tasks export --tokenizer runs/data --tasks all --lengths 256,512,1024 \\
        --num-samples 25 --seed 0 [--haystack noise|FILE|DIR] [--depths 0,0.5,1] --out runs/tasks

Writes ``OUT/<length>/<task>/validation.jsonl`` (RULER's layout: point RULER's prediction scripts at
``OUT/<length>``) and ``OUT/manifest.json``. Every file is written atomically and fingerprinted
(tokenizer, haystack, task, length, seed, samples, depths); a rerun skips files whose fingerprint
matches, so an interrupted export resumes. A length too short for a task's smallest prompt is
skipped with a warning (the manifest lists it) rather than failing the other tasks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tokenweight.errors import UsageError

HELP = "synthetic RULER-style tasks: list them, or export samples as RULER JSONL"
_TEXT_SUFFIXES = (".txt", ".py", ".md", ".rst")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", default="list", choices=["list", "export"], help="list (default) or export")
    p.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer folder (HF format) or hub id, or a prepared data folder (uses its tokenizer/)",
    )
    p.add_argument("--tasks", default="all", help="comma-separated task names, or 'all'")
    p.add_argument("--lengths", default="256,512,1024", help="comma-separated prompt lengths in tokens")
    p.add_argument("--num-samples", type=int, default=10, help="samples per task, length (and depth)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples (same seed: identical files)")
    p.add_argument(
        "--haystack",
        default="noise",
        help="'noise' (RULER's), a text file, a folder of .txt/.py/.md files, or a prepared data folder "
        "(its validation split decoded)",
    )
    p.add_argument(
        "--depths", default=None, help="comma-separated needle depths in [0, 1] (default: RULER's random depths)"
    )
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument(
        "--force",
        action="store_true",
        default=False,
        help="replace an export made with other settings (the old one stays until the new one is complete)",
    )


def _list(value, name: str, cast):
    items = value if isinstance(value, (list, tuple)) else [x for x in str(value).split(",") if x.strip()]
    out = []
    for x in items:
        try:
            out.append(cast(str(x).strip()))
        except ValueError:
            raise UsageError(
                f"{name} has {str(x).strip()!r}, which is not a valid value: pass a comma-separated list"
            ) from None
    if not out:
        raise UsageError(f"{name} is empty: pass a comma-separated list")
    return out


def _int(value, name: str) -> int:
    try:
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise ValueError
        return int(float(value))
    except (TypeError, ValueError):
        raise UsageError(f"{name} {value!r} is not an integer: pass a whole number") from None


def _print_table() -> None:
    from tokenweight.evaluate.tasks import TASKS

    w = max(len(n) for n in TASKS)
    print(f"{'task':<{w}}  {'haystack':<8}  {'depth':<5}  {'metric':<16}  description")
    for t in TASKS.values():
        print(
            f"{t.name:<{w}}  {t.haystack or '-':<8}  {'yes' if t.has_depth else '-':<5}  "
            f"{t.metric:<16}  {t.description}"
        )


def _load_tokenizer(path):
    if not path:
        raise UsageError("--tokenizer is required for export: pass a tokenizer folder or a prepared data folder")
    from tokenweight.identity import load_tokenizer

    src = Path(path) / "tokenizer" if (Path(path) / "tokenizer").is_dir() else str(path)  # a prepared folder
    return load_tokenizer(src)


def _load_haystack(spec: str, tokenizer):
    """(Haystack, description) from --haystack."""
    from tokenweight.evaluate.tasks import Haystack

    if str(spec) == "noise":
        return Haystack.noise(), "noise"
    p = Path(spec)
    if p.is_file():
        texts = [p.read_text(encoding="utf-8", errors="replace")]
    elif (p / "validation").is_dir():
        from datasets import load_from_disk

        ds = load_from_disk(str(p / "validation"))
        if "input_ids" not in ds.column_names:
            raise UsageError(
                f"{str(p / 'validation')!r} has no input_ids column: pass a folder written by 'tokenweight prepare'"
            )
        texts = tokenizer.batch_decode(ds["input_ids"], skip_special_tokens=True)
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in _TEXT_SUFFIXES)
        texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    else:
        raise UsageError(f"--haystack {spec!r} is neither 'noise' nor an existing file or folder")
    try:
        return Haystack.from_texts(texts), str(p)
    except ValueError:
        raise UsageError(f"--haystack {spec!r} holds no text: pass files with text, or 'noise'") from None


def run(args: argparse.Namespace) -> int:
    from tokenweight.evaluate.tasks import TASKS

    if args.action == "list":
        _print_table()
        return 0

    names = list(TASKS) if str(args.tasks).strip() == "all" else _list(args.tasks, "--tasks", str)
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise UsageError(f"unknown task(s) {', '.join(unknown)}: choose from {', '.join(TASKS)} (or 'all')")
    lengths = _list(args.lengths, "--lengths", int)
    if any(n < 1 for n in lengths):
        raise UsageError(f"--lengths {args.lengths!r} must be positive integers (tokens)")
    depths = None if args.depths in (None, "", "none") else _list(args.depths, "--depths", float)
    if depths is not None and any(not 0.0 <= d <= 1.0 for d in depths):
        raise UsageError(f"--depths {args.depths!r} must lie in [0, 1]")
    num_samples, seed = _int(args.num_samples, "--num-samples"), _int(args.seed, "--seed")
    if num_samples < 1:
        raise UsageError(f"--num-samples {num_samples} must be >= 1")
    if not args.out:
        raise UsageError("--out is required for export: pass an output folder")

    tokenizer = _load_tokenizer(args.tokenizer)
    haystack, hay_desc = _load_haystack(args.haystack, tokenizer)
    from tokenweight.evaluate.tasks.export import export_suite

    manifest = export_suite(
        Path(args.out),
        tokenizer,
        tasks=names,
        lengths=sorted(set(lengths)),
        num_samples=num_samples,
        seed=seed,
        haystack=haystack,
        depths=depths,
        identity={"haystack": hay_desc},  # the tokenizer counts by its digest (export_suite), not its path
        warn=lambda msg: print(f"tokenweight: warning: {msg}", file=sys.stderr),
        force=args.force,
    )
    for rel, entry in sorted(manifest["files"].items()):
        print(f"{rel}: {entry['samples']} samples, mean length {entry['mean_length']:.1f} tokens")
    print(f"wrote {len(manifest['files'])} files to {args.out} ({len(manifest['skipped'])} skipped)")
    return 0
