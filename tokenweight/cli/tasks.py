"""``tokenweight tasks``: list RULER's 13 tasks, or export samples in RULER's own JSONL format.

    tokenweight tasks                      # the task table
    tokenweight tasks export --tokenizer MODEL_OR_DATA --lengths 4096,8192 --num-samples 500 --out runs/tasks \
        [--haystack essay|noise|FILE|DIR] [--squad dev-v2.0.json] [--hotpotqa hotpot_dev_distractor_v1.json] \
        [--depths 0,0.5,1] [--no-answer-prefix] [--tokens-to-generate N] [--template-tokens N]

Layout (RULER's): OUT/<length>/<task>/validation.jsonl and OUT/manifest.json. RULER's own scripts read it unchanged:
    python scripts/pred/call_api.py --data_dir OUT/4096 --save_dir PRED/4096 --task niah_single_2 ...
    python scripts/eval/evaluate.py --data_dir PRED/4096

Fields of each line, RULER's first, in RULER's order:
  index                  the sample's number (0, 1, 2, ...)
  input                  the prompt WITHOUT the answer prefix (call_api.py sends input + answer_prefix)
  outputs                gold answers: all wanted (string_match_all: NIAH, vt, cwe, fwe) or one (string_match_part: qa)
  length                 tokens of input + answer_prefix (tokenizer.tokenize: no special tokens) + tokens_to_generate,
                         at most the requested length (RULER's max_seq_length)
  length_w_model_temp    length + --template-tokens (RULER's model_template_token)
  answer_prefix          e.g. " The special magic number for X mentioned in the provided text is"
  token_position_answer  NIAH only: tokens of input before the first answer
  task, depth, candidates, tokens_to_generate, meta    ours (RULER's scripts ignore them)

Haystacks (--haystack) fill the essay tasks, niah_single_2/3, niah_multikey_1, niah_multivalue, niah_multiquery:
  essay (default)  the prose of Python's own pydoc_data/topics.py (the language reference, in every CPython),
                   treated as RULER treats Paul Graham's essays: whitespace collapsed, first words first,
                   needles between sentences
  noise            RULER's "The grass is green. The sky is blue. ..." lines
  FILE             RULER's PaulGrahamEssays.json ({"text": ...}) is an essay; any other file is one document
  DIR              a prepared data folder (its validation split decoded) or a folder of .txt/.py/.md/.rst documents
As in RULER, niah_single_1 and vt are always on noise, niah_multikey_2/3 among distractor needles.

QA tasks read the files RULER's download_qa_dataset.sh fetches: qa_1 --squad FILE (SQuAD 2.0 dev-v2.0.json, or 1.1:
{"data": [{"paragraphs": [{"context", "qas": [{"question", "answers": [{"text"}]}]}]}]}), qa_2 --hotpotqa FILE
(hotpot_dev_distractor_v1.json: [{"question", "answer", "context": [[title, [sentence, ...]]]}]). Sample k asks
question k. --tasks all includes qa_1/qa_2 when their file is given.

Generation budget and reasoning models: each length reserves RULER's budget (128 NIAH, 30 vt, 120 cwe, 50 fwe, 32 qa)
unless --tokens-to-generate N. --no-answer-prefix leaves answer_prefix empty and ends input with the prefix's text:
RULER's own pipeline for reasoning models (NeMo-Skills' ruler-remove-prefix) does this and generates up to 4096
tokens past the length; reserve them inside it with --tokens-to-generate 4096. --template-tokens N reserves room for
a chat template the serving side adds (NeMo-Skills reserves 50).

Resume: every file is fingerprinted (tokenizer, haystack text, QA files, task, length, seed, samples, depths,
options); a rerun skips finished files, a folder exported with other settings is refused unless --force; a length
too short for a task is skipped with a warning (the manifest lists it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tokenweight.config import coerce
from tokenweight.errors import UsageError

HELP = "RULER's tasks: list them, or export samples as RULER JSONL"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from tokenweight.evaluate.tasks.sources import HAYSTACK_HELP

    p.add_argument("action", nargs="?", default="list", choices=["list", "export"], help="list (default) or export")
    p.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer folder (HF format) or hub id, or a prepared data folder (uses its tokenizer/)",
    )
    p.add_argument("--tasks", default="all", help="comma-separated task names, or 'all'")
    p.add_argument("--lengths", default="256,512,1024", help="comma-separated RULER lengths (max_seq_length) in tokens")
    p.add_argument("--num-samples", type=int, default=10, help="samples per task, length (and depth)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples (same seed: identical files)")
    p.add_argument(
        "--haystack", default="essay", help=HAYSTACK_HELP.replace(", data (the held-out split of --data)", "")
    )
    p.add_argument("--squad", default=None, metavar="FILE", help="SQuAD JSON for qa_1 (RULER: dev-v2.0.json)")
    p.add_argument(
        "--hotpotqa", default=None, metavar="FILE", help="HotpotQA JSON for qa_2 (RULER: hotpot_dev_distractor_v1.json)"
    )
    p.add_argument(
        "--depths", default=None, help="comma-separated needle depths in [0, 1] (default: RULER's random depths)"
    )
    p.add_argument(
        "--answer-prefix",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write RULER's answer_prefix (--no-answer-prefix: empty, its text ends input; for reasoning models)",
    )
    p.add_argument(
        "--tokens-to-generate",
        default=None,
        metavar="N",
        help="generation budget reserved in every length (default: RULER's per task: 128 NIAH, 30 vt, 120 cwe, "
        "50 fwe, 32 qa)",
    )
    p.add_argument(
        "--template-tokens", type=int, default=0, metavar="N", help="tokens reserved for a chat template added later"
    )
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument(
        "--force",
        action="store_true",
        default=False,
        help="replace an export made with other settings (the old one stays until the new one is complete)",
    )


def _list(value, name: str, item: type) -> list:
    """A comma-separated flag (or a YAML list) of ``item`` values, read as every list option is
    (:func:`tokenweight.config.coerce`); a bad or empty one is one line."""
    try:
        texts = coerce(value, list[str], name)
    except ValueError:  # None
        texts = []
    out = []
    for x in texts:
        try:
            out.append(coerce(x, item, name))
        except ValueError:
            raise UsageError(f"{name} has {x!r}, which is not a valid value: pass a comma-separated list") from None
    if not out:
        raise UsageError(f"{name} is empty: pass a comma-separated list")
    return out


def _int(value, name: str) -> int:
    """An integer flag, read as every integer option is (:func:`tokenweight.config.coerce`)."""
    try:
        return coerce(value, int, name)
    except ValueError:
        raise UsageError(f"{name} {value!r} is not an integer: pass a whole number") from None


def _print_table() -> None:
    from tokenweight.evaluate.tasks import TASKS

    w = max(len(n) for n in TASKS)
    print(f"{'task':<{w}}  {'haystack':<9}  {'depth':<5}  {'metric':<17}  {'budget':>6}  description")
    for t in TASKS.values():
        print(
            f"{t.name:<{w}}  {t.haystack or '-':<9}  {'yes' if t.has_depth else '-':<5}  "
            f"{t.metric:<17}  {t.tokens_to_generate:>6}  {t.description}"
        )


def _load_tokenizer(path):
    if not path:
        raise UsageError("--tokenizer is required for export: pass a tokenizer folder or a prepared data folder")
    from tokenweight.identity import load_tokenizer

    src = Path(path) / "tokenizer" if (Path(path) / "tokenizer").is_dir() else str(path)  # a prepared folder
    return load_tokenizer(src)


def _task_list(spec, qa: dict) -> list[str]:
    """--tasks resolved: ``all`` is every task whose inputs are given (QA tasks need their file)."""
    from tokenweight.evaluate.tasks import TASKS
    from tokenweight.evaluate.tasks.sources import qa_flag

    if str(spec).strip() == "all":
        return [t for t in TASKS if TASKS[t].family != "qa" or TASKS[t].params["dataset"] in qa]
    names = _list(spec, "--tasks", str)
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise UsageError(f"unknown task(s) {', '.join(unknown)}: choose from {', '.join(TASKS)} (or 'all')")
    for t in names:
        if qa_flag(t) and TASKS[t].params["dataset"] not in qa:
            raise UsageError(f"task {t} needs its QA file: pass {qa_flag(t)} FILE (the JSON RULER downloads)")
    return names


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        _print_table()
        return 0

    lengths = _list(args.lengths, "--lengths", int)
    if any(n < 1 for n in lengths):
        raise UsageError(f"--lengths {args.lengths!r} must be positive integers (tokens)")
    depths = None if args.depths in (None, "", "none") else _list(args.depths, "--depths", float)
    if depths is not None and any(not 0.0 <= d <= 1.0 for d in depths):
        raise UsageError(f"--depths {args.depths!r} must lie in [0, 1]")
    num_samples, seed = _int(args.num_samples, "--num-samples"), _int(args.seed, "--seed")
    if num_samples < 1:
        raise UsageError(f"--num-samples {num_samples} must be >= 1")
    budget = (
        None
        if args.tokens_to_generate in (None, "", "none", "auto")
        else _int(args.tokens_to_generate, "--tokens-to-generate")
    )
    template_tokens = _int(args.template_tokens, "--template-tokens")
    if (budget is not None and budget < 0) or template_tokens < 0:
        raise UsageError("--tokens-to-generate and --template-tokens must be >= 0")
    if not args.out:
        raise UsageError("--out is required for export: pass an output folder")
    from tokenweight.evaluate.tasks.sources import load_haystack, load_qa

    qa = load_qa(args.squad, args.hotpotqa)
    names = _task_list(args.tasks, qa)
    tokenizer = _load_tokenizer(args.tokenizer)
    haystack = load_haystack(args.haystack, tokenizer)
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
        identity={"haystack": haystack.source},  # the tokenizer counts by its digest (export_suite), not its path
        warn=lambda msg: print(f"tokenweight: warning: {msg}", file=sys.stderr),
        force=args.force,
        tokens_to_generate=budget,
        answer_prefix=args.answer_prefix,
        template_tokens=template_tokens,
        qa=qa,
    )
    for rel, entry in sorted(manifest["files"].items()):
        print(f"{rel}: {entry['samples']} samples, mean length {entry['mean_length']:.1f} tokens")
    print(f"wrote {len(manifest['files'])} files to {args.out} ({len(manifest['skipped'])} skipped)")
    return 0
