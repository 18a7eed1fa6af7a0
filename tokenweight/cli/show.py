"""``tokenweight show``: the token heat map of any model, scorer and text, as a self-contained HTML page.

Example::

    tokenweight show --model runs/extended --scorer runs/base --text tokenweight/scoring.py \\
        --scheme dense:0.75 --scheme sparse:0.3 --scheme longce:5 --out heatmap.html

Each token of the text is coloured by its weight under each scheme; hovering shows its long- and
short-context NLL (tokenweight.report.heatmap). Defaults: the scorer is the model itself
(self-scoring), the window is the scorer's ``max_position_embeddings`` when it is a separate model
(a frozen short-context model scores at its native length) and a quarter of the model's otherwise
(the paper's 8k -> 32k ratio), the stride docs/METHOD.md's ``(1 - w/n)·w``.

``--data PREPARED_DIR --row K`` shows a prepared row instead of a text file; a packed row (several
documents, ``doc_lengths``) is scored as training scores it: document-masked long pass, short
windows restarting at every document, documents' first tokens unscored, boundaries drawn.
"""

from __future__ import annotations

import argparse
import html
from pathlib import Path

from tokenweight.errors import UsageError

HELP = "draw the token heat map: a text coloured by each scheme's token weights (HTML)"

DEFAULT_SCHEMES = ["dense:0.75", "sparse:0.3", "longce:5"]


class _Schemes(argparse.Action):
    """``--scheme`` may repeat; given on the command line, it replaces the config's list (not extends it)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if not getattr(namespace, "_schemes_from_cli", False):
            setattr(namespace, self.dest, [])
            namespace._schemes_from_cli = True
        getattr(namespace, self.dest).append(values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model folder (HF format) or hub id: its long-context NLL")
    parser.add_argument(
        "--scorer",
        default=None,
        help="short-context model (default: the model itself, self-scoring); with another tokenizer than the "
        "model's, its NLL is moved onto the model's tokens by characters",
    )
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer folder (default: the model's folder, else the scorer's)"
    )
    parser.add_argument("--text", default=None, metavar="FILE", help="UTF-8 text file to show")
    parser.add_argument(
        "--data",
        default=None,
        metavar="PREPARED_DIR",
        help="instead of --text: a row of a prepared folder (a packed row: document-masked, boundaries drawn)",
    )
    parser.add_argument("--row", type=int, default=0, help="with --data: the row to show (default 0)")
    parser.add_argument("--split", default="validation", help="with --data: train or validation (default)")
    parser.add_argument(
        "--scheme",
        dest="scheme",
        action=_Schemes,
        default=list(DEFAULT_SCHEMES),
        metavar="SPEC",
        help=f"weighting scheme, repeatable (default: {' '.join(DEFAULT_SCHEMES)})",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=None,
        help="short-context window w (default: the scorer's max_position_embeddings, or "
        "the model's / 4 when self-scoring)",
    )
    parser.add_argument("--stride", type=int, default=None, help="window stride s (default: (1 - w/n)·w)")
    parser.add_argument("--max-tokens", type=int, default=1024, help="use the first N tokens of the text")
    from tokenweight.config import RUNTIME_GROUP
    from tokenweight.runtime import ATTN_IMPLEMENTATIONS, RUNTIME_DTYPES

    runtime = parser.add_argument_group(RUNTIME_GROUP)  # the same options as the stages' RuntimeOptions
    runtime.add_argument(
        "--device", default="auto", help="torch device: auto (cuda when present, else cpu), cpu, cuda, cuda:N"
    )
    runtime.add_argument(
        "--dtype", default="float32", help=f"compute dtype of the models (default float32; {', '.join(RUNTIME_DTYPES)})"
    )
    runtime.add_argument(
        "--attn-implementation",
        default="auto",
        help="attention (default auto: the best the model supports; one of " + ", ".join(ATTN_IMPLEMENTATIONS) + ")",
    )
    parser.add_argument("--out", default="heatmap.html", help="output HTML file")


def _read_text(path: str | None) -> str:
    if not path:
        raise UsageError("no text given: pass --text FILE (a UTF-8 text file) or --data PREPARED_DIR (a row of it)")
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"text file {path!r} does not exist: pass an existing UTF-8 file to --text")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(
            f"text file {path!r} is not UTF-8 ({e.reason} at byte {e.start}): convert it to UTF-8"
        ) from None
    if not text.strip():
        raise UsageError(f"text file {path!r} is empty: pass a file with some text")
    return text


def _schemes(specs) -> list:
    from tokenweight.weighting import WeightingScheme

    if isinstance(specs, str):  # a config's `scheme: dense:0.75`
        specs = [specs]
    if not specs:
        raise UsageError("no weighting scheme: pass --scheme SPEC (e.g. dense:0.75)")
    out = []
    for spec in specs:
        try:
            out.append(WeightingScheme.parse(str(spec)))
        except ValueError as e:
            raise UsageError(f"bad --scheme: {e}") from None
    return out


def _max_positions(model) -> int | None:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return getattr(config, "max_position_embeddings", None)


def _tokenizer(args):
    from tokenweight.identity import load_tokenizer

    if args.tokenizer:
        return load_tokenizer(args.tokenizer)
    if getattr(args, "data", None):  # the prepared folder's own tokenizer
        return load_tokenizer(str(Path(args.data) / "tokenizer"))
    for src in (args.model, args.scorer):
        if src and (Path(src) / "tokenizer_config.json").is_file():
            return load_tokenizer(src)
    if not Path(args.model).exists():  # a hub id carries its tokenizer
        return load_tokenizer(args.model)
    raise UsageError(f"model folder {args.model!r} holds no tokenizer: pass --tokenizer FOLDER")


def _scorer_tokenizer(scorer):
    """The scorer's own tokenizer, if it saved one: another than the model's is aligned by characters
    (docs/SCORING.md, as ``tokenweight score`` does)."""
    from tokenweight.identity import has_tokenizer, is_hub_id, load_tokenizer

    if not scorer or not (is_hub_id(scorer) or has_tokenizer(scorer)):
        return None
    try:
        return load_tokenizer(scorer)
    except UsageError:  # a hub model without a tokenizer: the model's is used, as before
        return None


def _check_stride(stride: int | None, window: int) -> None:
    """The short-context rule (:func:`tokenweight.windows.check_window`) as a one-line usage error."""
    from tokenweight.windows import check_window

    if stride is not None:
        try:
            check_window(window, stride)
        except ValueError as e:
            raise UsageError(f"--window/--stride: {e}") from None


def page(body: str, title: str) -> str:
    """A complete, self-contained HTML page around a fragment."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{margin:2em auto;max-width:1100px;padding:0 1em;font-family:system-ui,sans-serif}"
        ".meta{color:#666;font-size:.9em}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def _runtime(args):
    """The checked runtime options (tokenweight.runtime.resolve_runtime), bad ones as one line."""
    from tokenweight.runtime import resolve_runtime

    try:
        return resolve_runtime(args.device, args.dtype, args.attn_implementation)
    except ValueError as e:
        head, sep, rest = str(e).partition(" ")
        raise UsageError(f"--{head.replace('_', '-')}{sep}{rest}") from None


def _prepared_row(args) -> tuple[list[int], list[int] | None]:
    """``(ids, doc_lengths)`` of ``--data``'s row ``--row`` of ``--split``, cut to ``--max-tokens``
    (a packed row: to its documents' tokens, the last one cut there; doc_lengths None: unpacked)."""
    from tokenweight.data import load_prepared
    from tokenweight.evaluate.packed import read_doc_lengths

    splits, _ = load_prepared(args.data)
    if args.split not in splits:
        raise UsageError(f"--split {args.split!r} is not a split of {args.data!r}: pass one of {', '.join(splits)}")
    ds = splits[args.split]
    if not 0 <= args.row < len(ds):
        raise UsageError(f"--row {args.row} is not a row of {args.split} ({len(ds)} rows): pass 0 to {len(ds) - 1}")
    row = ds.select([args.row])
    ids = [int(i) for i in row[0]["input_ids"]]
    lengths = read_doc_lengths(row, f"{args.data!r}, {args.split}")
    if lengths is None:
        return ids[: args.max_tokens], None
    cut, left = [], min(args.max_tokens, sum(lengths[0]))
    for length in lengths[0]:
        if left > 0:
            cut.append(min(length, left))
            left -= cut[-1]
    return ids[: sum(cut)], cut


def run(args) -> int:
    runtime = _runtime(args)
    if getattr(args, "data", None) and args.text:
        raise UsageError("both --text and --data given: pass one of them (a text file, or a prepared folder's row)")
    text = None if getattr(args, "data", None) else _read_text(args.text)
    schemes = _schemes(args.scheme)
    if not args.model:
        raise UsageError("no model given: pass --model FOLDER (a model saved with save_pretrained)")
    for name in ("window", "stride", "max_tokens"):
        v = getattr(args, name)
        if v is not None and v < (1 if name == "stride" else 2):
            raise UsageError(f"--{name.replace('_', '-')} is {v}: pass an integer >= {1 if name == 'stride' else 2}")
    if args.window is not None:
        _check_stride(args.stride, args.window)
    from tokenweight.io_utils import atomic_write_text
    from tokenweight.report.heatmap import compute_heatmap, compute_heatmap_ids, sample_html

    row = _prepared_row(args) if text is None else None

    model = runtime.load(args.model)
    scorer = runtime.load(args.scorer) if args.scorer else model
    tokenizer = _tokenizer(args)
    window = args.window
    if window is None:
        window = _max_positions(scorer) if args.scorer else max(2, (_max_positions(model) or 8) // 4)
        _check_stride(args.stride, window)
    if row is None:
        sample = compute_heatmap(
            model,
            scorer,
            tokenizer,
            text,
            schemes,
            window=window,
            stride=args.stride,
            max_tokens=args.max_tokens,
            scorer_tokenizer=_scorer_tokenizer(args.scorer),
        )
        source, title = f"text {html.escape(str(args.text))}", Path(args.text).name
    else:
        if len(row[0]) < 2:
            raise UsageError(f"--row {args.row} holds fewer than 2 tokens: pass another --row or a larger --max-tokens")
        sample = compute_heatmap_ids(
            model, scorer, tokenizer, row[0], schemes, window, args.stride, _scorer_tokenizer(args.scorer), row[1]
        )
        docs = f", {len(row[1])} documents (packed)" if row[1] is not None else ""
        source = f"{html.escape(str(args.data))} {args.split} row {args.row}{docs}"
        title = f"{Path(args.data).name} {args.split} row {args.row}"
    n = len(sample["tokens"])
    note = "the model itself (self-scoring)" if sample["self_scored"] else html.escape(str(args.scorer))
    meta = (
        f"<p class='meta'>model {html.escape(str(args.model))}; short-context scorer {note}; "
        f"{source}, {n} tokens; window w = {window}, stride s = {sample['stride']}"
        + ("; the text is no longer than the window, so the short context equals the long one" if n <= window else "")
        + ".</p>"
    )
    atomic_write_text(args.out, page(meta + sample_html(sample), f"Token weights: {title}"))
    print(f"wrote {args.out} ({n} tokens, {len(schemes)} scheme(s))")
    return 0
