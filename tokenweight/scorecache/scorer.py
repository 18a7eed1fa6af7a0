"""The scorer of a score cache: a model folder, a hub id or a loaded model; its identity (digest),
vocabulary and saved tokenizer, and whether its scores are aligned to the data's tokens by characters."""

from __future__ import annotations

import hashlib
import json

from tokenweight.errors import InputError, UsageError
from tokenweight.identity import (
    check_vocabulary,
    has_tokenizer,
    is_hub_id,
    load_tokenizer,
    resolve_local,
    tokenizer_digest,
)
from tokenweight.scorecache.layout import check_scorer_tokenizer


def _scorer_folder(scorer, data_tok, dtype: str, device: str, attn_implementation: str = "auto", align: str = "auto"):
    """(local folder of the scorer, the model if it had to be loaded to find the folder, else None,
    the scorer's tokenizer when its scores are aligned to the data's tokens by characters, else None).

    Refuses (UsageError) a scorer whose vocabulary or saved tokenizer differs from the data's (unless
    aligned: :func:`_aligned_tokenizer`) before anything is computed or written. A hub id is loaded
    first (that fetches it into the HF cache) and then digested from its cached snapshot, like a
    local folder.
    """
    folder, model, vocab, scorer_tok = _scorer_source(scorer, dtype, device, attn_implementation)
    aligned = _aligned_tokenizer(scorer_tok, vocab, data_tok, str(scorer), align)
    if aligned is None:
        check_scorer_tokenizer(scorer_tok, vocab, data_tok, str(scorer))
    return folder, model, aligned


def _scorer_source(scorer, dtype: str, device: str, attn_implementation: str = "auto"):
    """(local folder of the scorer, the model if it had to be loaded to find the folder, else None,
    its vocabulary size (``config.json``), its saved tokenizer or None). A hub id is loaded first
    (that fetches it into the HF cache) and then read from its cached snapshot, like a local folder.
    UsageError for a missing path, a file, a folder without ``config.json``."""
    from transformers import AutoConfig

    from tokenweight.models import load_model

    model = None
    if is_hub_id(scorer):  # loading fetches it into the HF cache (UsageError when unreachable)
        model = load_model(scorer, dtype=dtype, device=device, attn_implementation=attn_implementation)
    folder = resolve_local(scorer, "scorer")  # UsageError for a missing path or a file
    if not (folder / "config.json").is_file():
        raise UsageError(f"scorer folder {str(scorer)!r} has no config.json: pass a folder saved with save_pretrained")
    vocab = getattr(AutoConfig.from_pretrained(folder).get_text_config(), "vocab_size", None) or 0
    scorer_tok = load_tokenizer(folder) if has_tokenizer(folder) else None
    return folder, model, vocab, scorer_tok


#: values of ``align``: auto = align exactly when the scorer's tokenizer differs from the data's
ALIGN_CHOICES = ("auto", "always", "never")
#: ``alignment`` of an aligned cache's identity: the rule of docs/SCORING.md (character overlap), version 1
ALIGNMENT = "characters-1"


def _aligned_tokenizer(scorer_tok, vocab: int, data_tok, name: str, align: str):
    """The scorer's tokenizer when its scores are to be aligned to the data's tokens by characters
    (docs/SCORING.md), else None (the scorer must then share the data's tokenizer).

    ``align``: ``auto`` aligns when the scorer saved a tokenizer that differs from the data's
    (:func:`tokenweight.identity.tokenizer_digest`); ``always`` also with the same tokenizer (it
    gives the same scores, bitwise: a check of the aligned path); ``never`` refuses another
    tokenizer. Refused in one line: ``always`` without a saved tokenizer, a tokenizer without an
    offset mapping (not a fast tokenizer), a vocabulary larger than the scorer's embeddings.
    """
    if align not in ALIGN_CHOICES:
        raise ValueError(f"align must be one of {', '.join(ALIGN_CHOICES)}, got {align!r}")
    if align == "never" or (
        align == "auto" and (scorer_tok is None or tokenizer_digest(scorer_tok) == tokenizer_digest(data_tok))
    ):
        return None
    if scorer_tok is None:
        raise UsageError(
            f"scorer {name!r} has no saved tokenizer, so its tokens cannot be aligned to the data's: save its "
            "tokenizer into the folder (tokenizer.save_pretrained), or pass --align auto"
        )
    if not getattr(scorer_tok, "is_fast", False):
        raise UsageError(
            f"scorer {name!r} has a tokenizer without character offsets ({type(scorer_tok).__name__}, not a fast "
            "tokenizer), needed to align its tokens to the data's: save it as a fast tokenizer (tokenizer.json)"
        )
    check_vocabulary(
        vocab,
        scorer_tok,
        name=f"scorer {name!r}",
        tokenizer_name="its tokenizer",
        fix="pass a model folder whose tokenizer is the model's own",
    )
    return scorer_tok


# ----------------------------------------------------------------------------- a loaded model or a folder


def _name(scorer) -> str:
    """How the scorer is named in messages and meta.json's ``scorer_path``."""
    import torch

    if isinstance(scorer, torch.nn.Module):
        where = getattr(scorer, "name_or_path", "") or ""
        return f"{type(scorer).__name__}({where})" if where else type(scorer).__name__
    return str(scorer)


def _runtime_of(scorer, dtype: str | None, device: str | None) -> tuple[str, str | None]:
    """``(dtype, device)`` to score with: a loaded model's own (refusing others), else the
    arguments (dtype None: float32; device None: cuda when present, decided by ``_compute``)."""
    import torch

    if not isinstance(scorer, torch.nn.Module):
        return dtype or "float32", device
    p = next(iter(scorer.parameters()), None)
    own_dtype = str(p.dtype).removeprefix("torch.") if p is not None else "float32"
    own_device = p.device if p is not None else torch.device("cpu")
    if dtype is not None and dtype != own_dtype:
        raise InputError(
            f"scorer is a loaded {own_dtype} model but dtype {dtype!r} was asked for: pass dtype=None (the model's "
            f"own), or convert the model (scorer.to(torch.{dtype}))"
        )
    if device is not None and not _same_device(torch.device(device), own_device):
        raise InputError(
            f"scorer is a loaded model on {own_device} but device {device!r} was asked for: pass device=None (the "
            "model's own), or move the model first"
        )
    return own_dtype, str(own_device)


def _same_device(a, b) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _resolve_scorer(scorer, dtype: str, device: str, attn_implementation: str):
    """``(folder or None, loaded model or None, digest, vocabulary size, saved tokenizer or None,
    its config's bos_token_id)``."""
    import torch
    from transformers import AutoConfig

    from tokenweight.identity import model_digest

    if isinstance(scorer, torch.nn.Module):
        config = getattr(scorer, "config", None)
        return None, scorer, _module_digest(scorer), _vocab_of(scorer), None, _config_bos(config)
    folder, model, vocab, tok = _scorer_source(scorer, dtype, device, attn_implementation)
    return folder, model, model_digest(folder), vocab, tok, _config_bos(AutoConfig.from_pretrained(folder))


def _config_bos(config) -> int | None:
    if config is None:
        return None
    bos = getattr(config, "bos_token_id", None)
    if bos is None and hasattr(config, "get_text_config"):
        bos = getattr(config.get_text_config(), "bos_token_id", None)
    return bos if isinstance(bos, int) else None


def _vocab_of(model) -> int:
    """A loaded model's vocabulary: its output layer's size (else its config's ``vocab_size``)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "out_features", None):
        return int(head.out_features)
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(getattr(text, "vocab_size", 0) or 0)


def _module_digest(model, block: int = 1 << 15, blocks: int = 32) -> str:
    """Digest (16 hex) of a loaded model, like :func:`tokenweight.identity.model_digest` of a folder:
    its config (minus volatile keys) and every tensor of its state dict (name, dtype, shape and its
    bytes: all of them up to ``block·blocks`` bytes, else ``blocks`` blocks of ``block`` bytes at
    evenly spaced offsets, first and last included; only those are copied off the device)."""
    import torch

    from tokenweight.identity import VOLATILE_CONFIG_KEYS
    from tokenweight.io_utils import fingerprint

    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        cfg = {k: v for k, v in config.to_dict().items() if k not in VOLATILE_CONFIG_KEYS}
        h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for name, t in model.state_dict().items():
        flat = t.detach().reshape(-1)
        h.update(f"{name}\0{flat.dtype}\0{tuple(t.shape)}\0".encode())
        per = max(1, block // flat.element_size())
        if flat.numel() > per * blocks:
            starts = [(flat.numel() - per) * k // (blocks - 1) for k in range(blocks)]
            flat = torch.cat([flat[s : s + per] for s in starts])
        h.update(flat.contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return fingerprint({"module": h.hexdigest()})
