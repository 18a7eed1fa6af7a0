"""The demo's base model: the shipped asset (checked against its BASE.json) or an export of it."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from pathlib import Path

from tokenweight.demo.profiles import BASE_FORMAT, PATH_FIELDS, PRETRAIN_FIELDS, Profile, torch_threads
from tokenweight.errors import UsageError
from tokenweight.io_utils import atomic_write_json


def check_shipped_base(folder: Path, profile: Profile | None = None) -> dict:
    """The BASE.json record of the shipped base model ``folder``, checked against the folder.

    ``UsageError`` (one line) when the folder or its BASE.json is missing, when the model or the
    tokenizer is not the one recorded (:func:`tokenweight.identity.model_digest`,
    :func:`~tokenweight.identity.tokenizer_digest`, ``encoder_digest``), or, given ``profile``, when
    the profile's pretraining settings (:data:`PRETRAIN_FIELDS`) are not the ones it was pretrained with.
    """
    from tokenweight.data.tokenizer import encoder_digest
    from tokenweight.identity import load_tokenizer, model_digest, tokenizer_digest

    fix = "reinstall tokenweight (pip install -e .), or pass --from-scratch to pretrain the base model here"
    path = Path(folder) / "BASE.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        why = "missing" if not path.is_file() else f"unreadable ({type(e).__name__})"
        raise UsageError(f"the shipped base model {str(folder)!r} is {why} (no valid BASE.json): {fix}") from None
    if record.get("format") != BASE_FORMAT:
        raise UsageError(f"{str(path)!r} is not a {BASE_FORMAT} record (format {record.get('format')!r}): {fix}")
    tok = load_tokenizer(folder, require_fast=True)
    got = {
        "model_digest": model_digest(folder),
        "tokenizer_digest": tokenizer_digest(tok),
        "encoder_digest": encoder_digest(tok),
    }
    for key, value in got.items():
        if value != record.get(key):
            raise UsageError(
                f"the shipped base model {str(folder)!r} does not match its BASE.json ({key} {value}, "
                f"{record.get(key)} recorded): {fix}"
            )
    if profile is not None:
        want = record["profile_settings"]
        diff = [k for k in PRETRAIN_FIELDS if json.loads(json.dumps(getattr(profile, k))) != want.get(k)]
        if diff:
            shown = ", ".join(f"{k} {getattr(profile, k)} (shipped: {want.get(k)})" for k in diff)
            raise UsageError(
                f"the shipped base model was pretrained with other settings ({shown}): pass --from-scratch to "
                "pretrain the base model with these"
            )
    return record


class BaseModelSteps:
    """The steps of :class:`~tokenweight.demo.experiment.Demo` that install, check or export its base model."""

    def shipped_record(self) -> dict:
        """The shipped base's BASE.json, checked once against the folder and the profile."""
        if self._record is None:
            self._record = check_shipped_base(self.shipped_base, self.profile)
        return self._record

    def base_settings(self) -> dict:
        """Where the base model comes from (``demo_settings.json`` and the report's settings)."""
        if self.shipped_base is None:
            return {"source": "from_scratch"}
        r = self.shipped_record()
        return {
            "source": "shipped",
            "asset": self.shipped_base.name,
            "model_digest": r["model_digest"],
            "tokenizer_digest": r["tokenizer_digest"],
            "command": r["command"],
        }

    def pretraining_settings(self) -> dict:
        """This profile's from-scratch pretraining stages without their paths (recorded in BASE.json)."""
        twin = type(self)(Path("runs/demo"), self.profile)
        pre, warmup = twin.prepare_configs()[0], twin.warmup_config()

        from tokenweight.train.runner import RESUMABLE_CHANGES

        def strip(config) -> dict:  # what decides the weights: no paths, no logging or saving cadence
            return {k: v for k, v in config.to_dict().items() if k not in PATH_FIELDS and k not in RESUMABLE_CHANGES}

        return json.loads(
            json.dumps(
                {
                    "prepare": {"corpus": pre.corpus, **pre.identity()},
                    "warmup": None if warmup is None else strip(warmup),
                    "pretrain": strip(twin.pretrain_config()),
                }
            )
        )

    def install_shipped_base(self) -> None:
        """``base/model`` = a copy of the shipped base model (checked against its BASE.json)."""
        import shutil

        from tokenweight.identity import model_digest
        from tokenweight.io_utils import atomic_dir

        record = self.shipped_record()
        corpus = json.loads((self.pre_data / "manifest.json").read_text())["inputs"]["fingerprint"]
        if corpus != record["corpus"]["fingerprint"]:
            self._say(
                f"note: the shipped base model was pretrained on the standard library of Python "
                f"{record['corpus']['python']}, this is Python {platform.python_version()} with another one: "
                "--from-scratch pretrains on this one"
            )
        target = self.base / "model"
        if (target / "config.json").is_file() and model_digest(target) == record["model_digest"]:
            return
        with atomic_dir(target) as tmp:
            for f in sorted(self.shipped_base.iterdir()):
                if f.is_file():
                    shutil.copyfile(f, tmp / f.name)
        self._say(f"base model: the shipped one, {self.shipped_base} (model {record['model_digest']}; BASE.json)")

    def export_base(self, dest: Path, command: str) -> Path:
        """Pretrain from scratch, pass the gate, and write the base model with its tokenizer and a
        BASE.json (command, settings, digests, versions, gate) to ``dest``: a shipped base."""
        import shutil

        import tokenizers
        import torch
        import transformers

        from tokenweight import __version__
        from tokenweight.data.tokenizer import encoder_digest
        from tokenweight.identity import load_tokenizer, model_digest, tokenizer_digest
        from tokenweight.io_utils import atomic_dir, checksums

        if self.shipped_base is not None:
            raise ValueError("export_base pretrains from scratch: make the Demo with shipped_base=None")
        gate = self.base_ready()
        trained = load_tokenizer(self.pre_data / "tokenizer", require_fast=True)  # what prepare trained here
        trained_ids = {"tokenizer_digest": tokenizer_digest(trained), "encoder_digest": encoder_digest(trained)}
        manifest = json.loads((self.pre_data / "manifest.json").read_text())
        with atomic_dir(dest) as tmp:
            for f in sorted((self.base / "model").iterdir()):
                if f.is_file() and f.name != "training_args.bin":  # a pickle of the trainer's arguments: not shipped
                    shutil.copyfile(f, tmp / f.name)  # the usual permissions (the trainer writes 0600 files)
            tok = load_tokenizer(tmp, require_fast=True)
            ids = {"tokenizer_digest": tokenizer_digest(tok), "encoder_digest": encoder_digest(tok)}
            if ids != trained_ids:
                raise UsageError(
                    f"the base model's tokenizer {ids} is not the one prepare trained ({trained_ids}): "
                    f"delete {str(self.out)!r} and export again"
                )
            files = checksums(tmp)
            record = {
                "format": BASE_FORMAT,
                "command": command,
                "profile": self.profile.name,
                "profile_settings": asdict(self.profile),
                "pretraining": self.pretraining_settings(),
                "model_digest": model_digest(tmp),
                **ids,
                "tokenizer_check": {
                    "trained_by_prepare": trained_ids,
                    "same": True,
                    "how": "tokenizer_digest (vocabulary, BOS/EOS/UNK) and encoder_digest (pre-tokenizer, model) "
                    f"of {self.pre_data / 'tokenizer'}, the tokenizer prepare trained in this run, equal this folder's",
                },
                "corpus": {
                    "fingerprint": manifest["inputs"]["fingerprint"],
                    "python": platform.python_version(),
                    "selection": manifest["selection"],
                },
                "gate": gate,
                "pretrain_seconds": self.stage_times.get("pretrain"),
                "versions": {
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "tokenizers": tokenizers.__version__,
                    "tokenweight": __version__,
                },
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch_threads()},
                "files": files,
                "bytes": sum(c["bytes"] for c in files.values()),
            }
            atomic_write_json(tmp / "BASE.json", record)
        self._say(
            f"exported the base model to {dest} ({record['bytes'] / 1e6:.1f} MB, model {record['model_digest']}, "
            f"tokenizer {record['tokenizer_digest']}; gate: recall {gate['token_accuracy']}, passed {gate['passed']})"
        )
        return dest
