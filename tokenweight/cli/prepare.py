"""``tokenweight prepare``: corpus -> tokenizer -> tokenized sequences on disk.

Writes ``--out DIR`` with ``train/``, ``validation/`` (``datasets`` folders: ``input_ids``,
``doc_id``, ``episodes``), ``tokenizer/`` and ``manifest.json`` (docs/DATA.md). Rerunning with the
same inputs and options finds the fingerprint unchanged and does nothing; ``--force`` redoes.

Examples::

    tokenweight prepare --out data/pre --n 256 --max-tokens 2600000 --episode-distance 16:200
    tokenweight prepare --out data/ext --n 1024 --tokenizer data/pre/tokenizer --after data/pre \\
        --max-tokens 1500000 --episode-distance 16:
    tokenweight prepare books/ --out data/books --n 32768 --tokenizer meta-llama/Meta-Llama-3-8B
"""

from __future__ import annotations

from tokenweight.errors import UsageError

HELP = "tokenize a corpus (text folder, jsonl, parquet, saved/hub dataset, or the stdlib) into n-token sequences"


def add_arguments(parser) -> None:
    from tokenweight.data.pipeline import DEFAULT_EPISODES_PER_1K, PrepareConfig

    d = PrepareConfig()
    a = parser.add_argument
    a(
        "inputs",
        nargs="*",
        default=[],
        metavar="INPUT",
        help="folders of text files, .jsonl/.parquet files, saved dataset folders or hub dataset ids "
        "(none: the embedded stdlib corpus)",
    )
    a("--out", default=None, help="output folder (required)")
    a(
        "--corpus",
        default=None,
        choices=("stdlib", "stdlib-no-tests"),
        help="embedded corpus: the .py files of this Python's standard library (default when no INPUT)",
    )
    a("--text-field", default=d.text_field, help=f"text column of jsonl/parquet/datasets (default {d.text_field})")
    a("--split", default=d.split, help=f"split of a dataset dict or hub dataset (default {d.split})")
    a("--dataset-config", default=None, help="configuration name of a hub dataset")
    a(
        "--tokenizer",
        default=None,
        help="HF tokenizer folder or hub id (default: train a byte-level BPE with single-digit tokens)",
    )
    a(
        "--vocab-size",
        type=int,
        default=d.vocab_size,
        help=f"vocabulary of the trained tokenizer (default {d.vocab_size})",
    )
    a(
        "--tokenizer-train-chars",
        type=int,
        default=d.tokenizer_train_chars,
        help=f"characters of training documents the tokenizer learns from (default {d.tokenizer_train_chars})",
    )
    a("--n", type=int, default=d.n, help=f"sequence length in tokens, BOS included (default {d.n})")
    a(
        "--val-fraction",
        type=float,
        default=d.val_fraction,
        help=f"share of documents held out as validation (whole documents; default {d.val_fraction})",
    )
    a(
        "--keep-tails",
        action="store_true",
        default=False,
        help="keep each document's incomplete last sequence (when at least --min-tail tokens)",
    )
    a(
        "--min-tail",
        type=int,
        default=None,
        help="smallest kept tail in tokens, BOS included (implies --keep-tails; default 2 with --keep-tails)",
    )
    a("--max-documents", type=int, default=None, help="use at most this many documents")
    a("--max-tokens", type=int, default=None, help="stop once train holds this many tokens")
    a(
        "--skip-documents",
        type=int,
        default=d.skip_documents,
        help="skip this many documents of the corpus' fixed order first (disjoint slices for several runs)",
    )
    a(
        "--after",
        default=None,
        metavar="PREPARED_DIR",
        help="start after the last document used by that prepared folder (same corpus): disjoint data",
    )
    a(
        "--episodes-per-1k",
        type=float,
        default=None,
        help=f"injected definition-use episodes per 1000 tokens (default {DEFAULT_EPISODES_PER_1K} for the "
        "stdlib corpus, 0 = off for inputs)",
    )
    a(
        "--episode-distance",
        default=None,
        metavar="MIN:MAX",
        help="token distance between definition and use values (default 16: = up to what fits in a sequence)",
    )
    a(
        "--episode-digits",
        type=int,
        default=d.episode_digits,
        help=f"digits of an episode value (default {d.episode_digits})",
    )
    a(
        "--episode-style",
        choices=("restate", "assert"),
        default=d.episode_style,
        help="the line that repeats an episode's value: restate (NAME = VALUE again, copyable; default) or "
        "assert (assert NAME == VALUE / print(NAME, VALUE), a harder look-up)",
    )
    a("--seed", type=int, default=d.seed, help=f"seed of the episodes (default {d.seed})")
    a(
        "--workers",
        type=int,
        default=d.workers,
        help="0: the tokenizer's own threads (default); 1: one thread; K > 1: K processes",
    )
    a("--force", action="store_true", default=False, help="redo even when the output is up to date")


def config_from_args(args):
    """``PrepareConfig`` from parsed arguments (``--keep-tails`` folds into ``min_tail``)."""
    from tokenweight.data.pipeline import PrepareConfig

    if not args.out:
        raise UsageError("--out is required: tokenweight prepare [INPUT ...] --out DIR")
    inputs = [args.inputs] if isinstance(args.inputs, str) else list(args.inputs or [])
    min_tail = args.min_tail if args.min_tail is not None else (2 if args.keep_tails else None)
    return PrepareConfig(
        inputs=inputs,
        corpus=args.corpus,
        text_field=args.text_field,
        split=args.split,
        dataset_config=args.dataset_config,
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size,
        tokenizer_train_chars=args.tokenizer_train_chars,
        n=args.n,
        val_fraction=args.val_fraction,
        min_tail=min_tail,
        max_documents=args.max_documents,
        max_tokens=args.max_tokens,
        skip_documents=args.skip_documents,
        after=args.after,
        episodes_per_1k=args.episodes_per_1k,
        episode_distance=args.episode_distance,
        episode_digits=args.episode_digits,
        episode_style=args.episode_style,
        seed=args.seed,
        workers=args.workers,
    )


def run(args) -> int:
    from tokenweight.data.pipeline import prepare

    cfg = config_from_args(args)
    manifest, wrote = prepare(args.out, cfg, force=args.force)
    c = manifest["counts"]
    if not wrote:
        print(f"{args.out}: up to date (fingerprint {manifest['fingerprint']}); --force to redo")
        return 0
    ep = manifest["episodes"]
    eps = f", {ep['recorded']['train']} + {ep['recorded']['validation']} episodes" if ep.get("enabled") else ""
    print(
        f"{args.out}: n={manifest['n']}, train {c['train']['sequences']} sequences / {c['train']['tokens']} tokens "
        f"from {c['train']['documents']} documents, validation {c['validation']['sequences']} sequences / "
        f"{c['validation']['tokens']} tokens{eps}; {c['skipped_files']} file(s) skipped"
    )
    return 0
