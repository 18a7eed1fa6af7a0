"""Stage ``prepare``: corpus -> tokenizer -> tokenized sequences on disk (docs/DATA.md).

Writes ``out`` with ``train/``, ``validation/`` (``datasets`` folders: ``input_ids``, ``doc_id``,
``episodes``), ``tokenizer/`` and ``manifest.json``, all at once (the folder only ever appears
complete). A call whose inputs and settings match the folder's fingerprint does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenweight.data.pipeline import PrepareConfig

__all__ = ["PrepareConfig", "PrepareResult", "prepare"]


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

    config.validate()
    manifest, wrote = write_prepared(config.out, config, force=config.force)
    return PrepareResult(str(config.out), manifest, wrote)
