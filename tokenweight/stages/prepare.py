"""Stage ``prepare``: corpus -> tokenizer -> tokenized sequences on disk (docs/DATA.md).

Writes ``out`` with ``train/``, ``validation/`` (``datasets`` folders: ``input_ids``, ``doc_id``,
``episodes``), ``tokenizer/`` and ``manifest.json``, all at once (the folder only ever appears
complete). A call whose inputs and settings match the folder's fingerprint does nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tokenweight.config import StageConfig, check_choice, check_float, check_int, check_required, option
from tokenweight.data.corpus import STDLIB_CORPORA
from tokenweight.data.episodes import EpisodeConfig, parse_distance
from tokenweight.data.sequences import capacity
from tokenweight.data.tokenizer import DEFAULT_VOCAB_SIZE, MAX_VOCAB_SIZE, MIN_VOCAB_SIZE

__all__ = ["PrepareConfig", "PrepareResult", "prepare"]

MAX_N = 1 << 20
DEFAULT_EPISODES_PER_1K = 2.0


@dataclass
class PrepareConfig(StageConfig):
    """Stage ``prepare``: every option (``tokenweight prepare --help``; docs/DATA.md)."""

    inputs: list[str] = option(
        factory=list,
        help="folders of text files, .jsonl/.parquet files, saved dataset folders or hub dataset ids "
        "(none: the embedded stdlib corpus)",
        positional=True,
        metavar="INPUT",
    )
    out: str | None = option(None, "output folder (required)", metavar="DIR")
    corpus: str | None = option(
        None,
        "embedded corpus: the .py files of this Python's standard library (the default when no INPUT)",
        choices=STDLIB_CORPORA,
    )
    text_field: str = option("text", "text column of jsonl/parquet/datasets")
    split: str = option("train", "split of a dataset dict or hub dataset")
    dataset_config: str | None = option(None, "configuration name of a hub dataset")
    tokenizer: str | None = option(
        None, "HF tokenizer folder or hub id (none: train a byte-level BPE with single-digit tokens)"
    )
    vocab_size: int = option(DEFAULT_VOCAB_SIZE, "vocabulary of the trained tokenizer")
    tokenizer_train_chars: int = option(5_000_000, "characters of training documents the tokenizer learns from")
    n: int = option(1024, "sequence length in tokens, BOS included")
    val_fraction: float = option(0.05, "share of documents held out as validation (whole documents)")
    min_tail: int | None = option(
        None,
        "keep each document's incomplete last sequence when it has at least this many tokens (none: drop tails; "
        "with --pack: keep every tail of >= 2 tokens)",
    )
    pack: bool = option(
        False,
        "pack documents' short pieces (tails, short documents) back to back into rows of at most n tokens, with "
        "a doc_lengths column (models attend within a document only)",
    )
    max_documents: int | None = option(None, "use at most this many documents")
    max_tokens: int | None = option(None, "stop once train holds this many tokens")
    mix: list[float] | None = option(
        None,
        "a mixture: one sampling ratio per INPUT, the share of the --max-tokens train tokens it gives (e.g. 0.6,0.4; "
        "normalised to sum 1); each input keeps its own documents, in the corpus' fixed order",
        metavar="R1,R2,...",
    )
    skip_documents: int = option(
        0, "skip this many documents of the corpus' fixed order first (disjoint slices for several runs)"
    )
    after: str | None = option(
        None,
        "start after the last document used by that prepared folder (same corpus): disjoint data",
        metavar="PREPARED_DIR",
    )
    episodes_per_1k: float | None = option(
        None,
        f"injected definition-use episodes per 1000 tokens (none: {DEFAULT_EPISODES_PER_1K} for the stdlib "
        "corpus, 0 = off for inputs)",
    )
    episode_distance: str | None = option(
        None, "token distance between definition and use values (none: 16: = up to what fits)", metavar="MIN:MAX"
    )
    episode_digits: int = option(7, "digits of an episode value")
    episode_style: str = option(
        "restate",
        "the line that repeats an episode's value: restate (NAME = VALUE again, copyable) or assert "
        "(assert NAME == VALUE / print(NAME, VALUE), a harder look-up)",
        choices=("restate", "assert"),
    )
    seed: int = option(0, "seed of the episodes")
    workers: int = option(0, "0: the tokenizer's own threads; 1: one thread; K > 1: K processes")
    force: bool = option(False, "redo even when the output is up to date, and replace one made with other settings")

    def is_stdlib(self) -> bool:
        return self.corpus in STDLIB_CORPORA or (self.corpus is None and not self.inputs)

    def kept_tail(self) -> int | None:
        """The smallest kept tail in tokens (BOS included; None: tails dropped): ``min_tail``, and
        with ``pack`` 2 when not given (every tail that has a target is packed)."""
        return 2 if self.pack and self.min_tail is None else self.min_tail

    def episode_config(self) -> EpisodeConfig | None:
        """None when episodes are off (the default for user corpora)."""
        per_1k = self.episodes_per_1k
        if per_1k is None:
            per_1k = DEFAULT_EPISODES_PER_1K if self.is_stdlib() else 0.0
        if per_1k == 0:
            return None
        lo, hi = parse_distance(self.episode_distance or "16:")
        return EpisodeConfig(
            per_1k=float(per_1k), min_distance=lo, max_distance=hi, digits=self.episode_digits, style=self.episode_style
        )

    def mix_ratios(self) -> list[float] | None:
        """The mixture's ratios normalised to sum 1 (rounded to 1e-9, so that 1,1 and 0.5,0.5 agree)."""
        if self.mix is None:
            return None
        total = float(sum(self.mix))
        return [round(float(r) / total, 9) for r in self.mix]

    def validate(self) -> None:
        """Raise ValueError naming the option, the value and its valid range."""
        check_required(self, "out", usage="tokenweight prepare [INPUT ...] --out DIR")
        check_int(self, "n", 2, high=MAX_N)
        check_float(self, "val_fraction", low=0, high=1, high_open=True)
        check_int(self, "min_tail", 2, high=self.n, optional=True)
        check_int(self, "max_documents", 1, optional=True)
        check_int(self, "max_tokens", self.n, optional=True)
        check_int(self, "skip_documents", 0)
        if self.mix is not None:
            if len(self.inputs) < 2 or len(self.mix) != len(self.inputs):
                raise ValueError(
                    f"mix needs one ratio per INPUT and at least two inputs, got {len(self.mix)} ratio(s) for "
                    f"{len(self.inputs)} input(s)"
                )
            if any(not isinstance(r, (int, float)) or r <= 0 or r != r for r in self.mix):
                raise ValueError(f"mix ratios must be positive numbers, got {self.mix!r}")
            if self.max_tokens is None:
                raise ValueError("mix: the ratios are shares of the train tokens: pass --max-tokens T as well")
            if self.pack:
                raise ValueError("mix: mixtures of packed rows are not supported: drop --pack or --mix")
        if self.tokenizer is None:
            check_int(self, "vocab_size", MIN_VOCAB_SIZE, high=MAX_VOCAB_SIZE)
        check_int(self, "tokenizer_train_chars", 1)
        check_int(self, "workers", 0)
        if self.corpus is not None:
            check_choice(self, "corpus")
        check_choice(self, "episode_style")
        try:
            ep = self.episode_config()
        except ValueError as e:
            raise ValueError(
                f"episode options: {e}: check --episodes-per-1k (0-20), --episode-distance MIN:MAX, "
                "--episode-digits (1-18) and --episode-style"
            ) from None
        if ep is not None:
            fits = ep.max_fitting(capacity(self.n, 0))
            if ep.min_distance > fits:
                raise ValueError(
                    f"episode_distance {self.episode_distance!r}: with n={self.n} an episode fits only up to "
                    f"~{fits} tokens apart: lower MIN or raise --n"
                )

    def identity(self) -> dict:
        """The options that change the output (not ``workers``, not the ``after`` path itself)."""
        d = asdict(self)
        for k in ("workers", "after", "inputs", "corpus", "out", "force"):  # inputs: by content, after: as the skip
            d.pop(k)
        if self.tokenizer is not None:  # a given tokenizer counts by its definition, not its path
            for k in ("tokenizer", "vocab_size", "tokenizer_train_chars"):
                d.pop(k)
        ep = self.episode_config()
        d["episodes_per_1k"] = ep.to_dict() if ep else None
        d.pop("episode_distance"), d.pop("episode_digits"), d.pop("episode_style")
        if self.mix is None:  # absent when off: folders prepared before --mix existed keep their fingerprint
            d.pop("mix")
        else:  # the mixture as applied: its normalised ratios
            d["mix"] = self.mix_ratios()
        if self.pack:  # min_tail as applied: --pack alone and --pack --min-tail 2 give the same folder
            d["min_tail"] = self.kept_tail()
        else:  # absent when off: folders prepared before --pack existed keep their fingerprint
            d.pop("pack")
        return d


@dataclass
class PrepareResult:
    out: str
    manifest: dict
    wrote: bool  # False: the folder was already up to date

    def line(self) -> str:
        m = self.manifest
        if not self.wrote:
            return f"{self.out}: up to date (fingerprint {m['fingerprint']}); --force to redo"
        c, ep = m["counts"], m["episodes"]
        eps = f", {ep['recorded']['train']} + {ep['recorded']['validation']} episodes" if ep.get("enabled") else ""
        pad = c["train"].get("padding_share")
        packed = "packed, " if m.get("options", {}).get("packed") else ""
        padding = f" ({packed}padding {pad:.1%})" if pad is not None else ""
        return (
            f"{self.out}: n={m['n']}, train {c['train']['sequences']} sequences / {c['train']['tokens']} tokens "
            f"from {c['train']['documents']} documents{padding}, validation {c['validation']['sequences']} "
            f"sequences / {c['validation']['tokens']} tokens{eps}; {c['skipped_files']} file(s) skipped"
        )


def prepare(config: PrepareConfig) -> PrepareResult:
    """Write (or find up to date) the prepared folder ``config.out``."""
    from tokenweight.data.pipeline import prepare as write_prepared

    manifest, wrote = write_prepared(config.out, config, force=config.force)
    return PrepareResult(str(config.out), manifest, wrote)
