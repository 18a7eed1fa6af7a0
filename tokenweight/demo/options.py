"""``DemoConfig``: the options of ``tokenweight demo``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenweight.config import RuntimeOptions, StageConfig, check_choice, check_int, option
from tokenweight.demo.profiles import PROFILES, SHIPPED_BASES, Profile, make_profile


@dataclass
class DemoConfig(RuntimeOptions, StageConfig):
    """Options of ``tokenweight demo``. The runtime options (:class:`tokenweight.config.RuntimeOptions`)
    go to every stage the demo runs; ``dtype`` is checked as for training (the demo trains)."""

    RUNTIME_TRAINING = True

    out: str = option(
        "runs/demo",
        "demo folder; rerun with the same --out to continue (also with more --seeds, which adds runs)",
        metavar="DIR",
    )
    profile: str = option(
        "default",
        "default (the README's run), quick (tiny everything: what the tests run) or full (3 seeds, more steps: "
        "the README's results)",
        choices=tuple(PROFILES),
    )
    seeds: int | None = option(None, "run every scheme K times (data orders 0..K-1; none: the profile's)")
    copy_steps: int | None = option(None, "induction warm-up steps (copy task; 0: none; none: the profile's)")
    pretrain_steps: int | None = option(None, "pretraining steps (none: the profile's)")
    extend_steps: int | None = option(None, "extension steps (none: the profile's)")
    small_scorer: str | None = option(
        None,
        "preset of the smaller frozen scorer of the run dense-frozen-small (>= 4x fewer parameters than the base "
        "model, pretrained the same way; narrow can copy, mini cannot: the ablation; 'none': no such run; none: "
        "the profile's, narrow for full)",
        choices=("narrow", "mini", "tiny", "none"),
    )
    corpus: str | None = option(
        None,
        "run the experiment on this corpus instead of the embedded stdlib (a folder of text files, or any INPUT of "
        "tokenweight prepare): its tokenizer is trained and the base model pretrained on it, with the same "
        "injected episodes",
        metavar="DIR",
    )
    pack: bool = option(
        False,
        "pack the extension data (prepare --pack: documents of mixed length back to back, document masks) and "
        "weigh every document on its own (weight_norm document): the experiment where exposure balancing's "
        "premise holds",
    )
    skip_gate: bool = option(False, "continue when the base model fails the copy gate (the report records it)")
    threads: int | None = option(None, "torch threads (none: torch's own choice)")
    from_scratch: bool = option(
        False,
        "pretrain the base model (copy warm-up, then natural text) instead of using the shipped one; only the "
        "default profile ships one (tokenweight/assets/base-default), the others always pretrain",
    )
    export_base: str | None = option(
        None,
        "pretrain the base model from scratch, run the gate, write it with its tokenizer and BASE.json to DIR "
        "and stop (how tokenweight/assets/base-default is made: docs/TRAINING.md)",
        metavar="DIR",
    )

    def shipped_base(self) -> Path | None:
        """The shipped base model folder this demo uses instead of pretraining (None: it pretrains)."""
        if self.from_scratch or self.export_base is not None or self.corpus is not None:
            return None  # the shipped base knows the stdlib corpus and its tokenizer only
        return SHIPPED_BASES.get(self.profile)

    def command(self) -> str:
        """This config as a ``tokenweight demo`` command line (the options that differ from the defaults)."""
        import dataclasses
        import shlex

        parts = ["tokenweight", "demo", "--profile", self.profile]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "profile" or value == f.default:
                continue
            name = f.name.replace("_", "-")
            if isinstance(value, bool):
                parts.append(f"--{name}" if value else f"--no-{name}")
            else:
                parts += [f"--{name}", shlex.quote(str(value))]
        return " ".join(parts)

    def validate(self) -> None:
        check_choice(self, "profile")
        check_int(self, "seeds", 1, optional=True)
        check_int(self, "copy_steps", 0, optional=True)
        check_int(self, "pretrain_steps", 1, optional=True)
        check_int(self, "extend_steps", 1, optional=True)
        check_int(self, "threads", 1, optional=True)
        if self.small_scorer is not None:
            check_choice(self, "small_scorer")
        if self.corpus is not None and not Path(self.corpus).expanduser().exists():
            raise ValueError(f"corpus {self.corpus!r} does not exist: pass a folder of text files (or a prepare INPUT)")
        if self.export_base is not None and not str(self.export_base).strip():
            raise ValueError("export_base must be a folder to write the base model to, got ''")
        self.validate_runtime()

    def runtime_options(self) -> dict:
        """The runtime options as given (``auto`` unresolved), for the stage configs the demo builds."""
        return {"device": self.device, "dtype": self.dtype, "attn_implementation": self.attn_implementation}

    def make_profile(self) -> Profile:
        return make_profile(
            self.profile,
            seeds=self.seeds,
            copy_steps=self.copy_steps,
            pretrain_steps=self.pretrain_steps,
            extend_steps=self.extend_steps,
            small_scorer=self.small_scorer,
            pack=self.pack or None,
        )
