"""The demo's flavours (:class:`Profile`), its schemes, and what decides its base model."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from tokenweight.errors import UsageError

#: (run name, scheme spec, scorer). κ = 0.2 for sparse: see :data:`SPARSE_KAPPA_WHY`. ``exact``:
#: EXACT's exposure balancing (no scorer: positions only; tail τ = the window w, α = 0.5).
SCHEMES = (
    ("uniform", "uniform", "none"),
    ("dense-frozen", "dense:0.75", "frozen"),
    ("sparse-frozen", "sparse:0.2", "frozen"),
    ("longce-self", "longce:5", "self"),
    ("dense-self", "dense:0.75", "self"),
    ("exact", "exact:0.5", "none"),
)

#: the run of the paper's fourth claim ("a much smaller model can be used for scoring without much
#: performance degradation"): dense weights from the frozen scores of a scorer with at least 4x fewer
#: parameters than the base model (``Profile.small_scorer``), pretrained by the demo the same way
SMALL_SCORER_SCHEME = ("dense-frozen-small", "dense:0.75", "frozen-small")
#: the demo's comparison for that claim (label, against): paired by seed, in the report's verdict
SMALL_SCORER_COMPARISON = ("dense-frozen-small", "dense-frozen")
#: the paper's headline run, the one the runs beyond the paper are also compared with (paired by seed)
DENSE_FROZEN = SCHEMES[1][0]
#: the smallest parameter ratio base / small scorer that makes the claim's run ("much smaller")
SMALL_SCORER_MIN_RATIO = 4.0

#: runs of ``--profile full`` beyond the paper's schemes (docs/TRAINING.md): dense frozen times exposure
#: balancing, and first-window protection (the short-context price bargained down) on the schemes
#: with the largest task gains and the largest prices: the points of the report's frontier
COMPOSITIONS = (
    ("dense-frozen-exact", "dense:0.75*exact:0.5", "frozen"),
    ("dense-frozen-protect", "dense:0.75*protect", "frozen"),
    ("sparse-frozen-protect", "sparse:0.2*protect", "frozen"),
    ("longce-self-protect", "longce:5*protect", "self"),
)
#: the run on the selected data (``Profile.select_keep``): plain CE on the documents that LongFilter's
#: score ranks highest, at the same steps and tokens as every other run (their rows repeat more often)
SELECTED_SCHEME = ("uniform-selected", "uniform", "none")

SPARSE_KAPPA_WHY = (
    "sparse keeps the top 20% of tokens by |L_long - L_short| (kappa = 0.2): about ten times the "
    "share of injected episode-value tokens, so every long-range copy token can be kept together "
    "with the strongest natural long-range tokens, while a fifth of each sequence still carries "
    "the language-modelling signal; much smaller kappa leaves a model of a few million parameters "
    "too few tokens per step to keep its short-context ability"
)

#: the base models shipped with the package (``tokenweight/assets``, package data), by profile: the
#: demo uses one instead of pretraining unless ``from_scratch``; each was written by ``export_base``
SHIPPED_BASES = {"default": Path(__file__).resolve().parent.parent / "assets" / "base-default"}
BASE_FORMAT = "tokenweight.base/1"
#: the :class:`Profile` fields that decide the base model (pretraining data, warm-up, pretraining):
#: a shipped base belongs to the values recorded in its BASE.json (a test checks that no other
#: field reaches the pretraining stages)
PRETRAIN_FIELDS = (
    "preset",
    "vocab_size",
    "window",
    "pretrain_tokens",
    "episodes_per_1k",
    "copy_steps",
    "copy_length",
    "copy_batch",
    "copy_lr",
    "copy_fraction",
    "pretrain_steps",
    "pretrain_batch",
    "pretrain_lr",
)


@dataclass
class Profile:
    """Sizes of one demo flavour. ``default`` is sized for a 2-core CPU with no GPU (README.md has its run time)."""

    name: str
    preset: str = "shallow"  # 2 layers: forms an induction head soonest on the copy task (docs/TRAINING.md)
    vocab_size: int = 4096
    window: int = 256
    n: int = 1024
    pretrain_tokens: int = 2_100_000
    extend_tokens: int = 1_200_000
    episodes_per_1k: float = 3.0
    copy_steps: int = 700  # induction warm-up (pretrain --task copy) first; 0: none
    copy_length: int = 64  # tokens per copy row: short rows form the induction head in fewer steps
    copy_batch: int = 32
    copy_lr: float = 3e-3
    copy_fraction: float = 0.25  # share of copy rows among the natural pretraining windows
    pretrain_steps: int = 500
    pretrain_batch: int = 16
    pretrain_lr: float = 2e-3
    extend_steps: int = 150
    extend_batch: int = 4
    extend_lr: float = 5e-4
    seeds: int = 1
    eval_lengths: tuple = (256, 512, 1024)
    eval_tasks: tuple = ("niah_single_1", "niah_single_2", "niah_multikey_1", "vt")
    eval_samples: int = 2  # per needle depth
    eval_depths: tuple = (0.1, 0.5, 0.9)
    eval_sequences: int = 96
    eval_generation: bool = False
    gate: float | None = 0.5  # base model's per-digit recall of episode values closer than w
    gate_sequences: int = 96
    #: preset of a smaller frozen scorer (>= 4x fewer parameters, same tokenizer and recipe) for the
    #: run :data:`SMALL_SCORER_SCHEME`; None: no such run
    small_scorer: str | None = None
    #: more runs (name, scheme, scorer), e.g. :data:`COMPOSITIONS`
    extra_runs: tuple = ()
    #: share of the extension data's documents kept by ``tokenweight select`` (LongFilter's KL under the
    #: uniform run of seed 0) for the run :data:`SELECTED_SCHEME`; None: no selection
    select_keep: float | None = None
    #: the extension data packed (``prepare --pack``: documents' short pieces back to back, document
    #: masks) and trained with ``weight_norm: document``: where exposure balancing's premise holds
    pack: bool = False


PROFILES = {
    "default": Profile("default"),
    "full": Profile(
        "full",
        seeds=3,
        extend_steps=300,
        extend_tokens=2_600_000,
        pretrain_steps=900,
        pretrain_tokens=3_700_000,
        eval_samples=4,
        eval_sequences=192,
        eval_generation=True,
        small_scorer="narrow",
        extra_runs=COMPOSITIONS,
        select_keep=0.5,
    ),
    "quick": Profile(
        "quick",
        preset="tiny",
        vocab_size=512,
        window=64,
        n=256,
        pretrain_tokens=60_000,
        copy_steps=10,
        copy_length=32,
        copy_batch=8,
        extend_tokens=40_000,
        episodes_per_1k=6.0,
        pretrain_steps=30,
        pretrain_batch=8,
        extend_steps=4,
        extend_batch=2,
        eval_lengths=(64, 128, 256),
        eval_tasks=("niah_single_1",),
        eval_samples=1,
        eval_depths=(0.5,),
        eval_sequences=4,
        gate=None,
    ),
}


def make_profile(name: str, **overrides) -> Profile:
    if name not in PROFILES:
        raise UsageError(f"unknown demo profile {name!r}: use one of {', '.join(PROFILES)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    if changes.get("small_scorer") == "none":
        changes["small_scorer"] = None
    return replace(PROFILES[name], **changes)


#: where a shipped config expects the user's folders (paths are given on the command line)
PATH_FIELDS = ("model", "data", "out", "scores")


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()
