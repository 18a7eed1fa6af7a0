"""RULER-format JSONL: one sample per line, written atomically, readable back into Samples.

RULER's fields are ``index``, ``input``, ``outputs``, ``length`` (RULER's ``length`` also counts the
generation budget; ours is the prompt's own token count, and ``tokens_to_generate`` is written
next to it). Our extra fields (``task``, ``depth``, ``candidates``, ``meta``) ride along; RULER's
scripts ignore fields they do not know.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from tokenweight.evaluate.tasks.sample import LengthTooShortError, Sample
from tokenweight.identity import tokenizer_digest
from tokenweight.io_utils import atomic_write_json, atomic_write_text, fingerprint, output_lock, replace_dir


def sample_record(index: int, s: Sample) -> dict:
    """The JSON object of one sample (RULER's fields first)."""
    return {
        "index": index,
        "input": s.input,
        "outputs": list(s.outputs),
        "length": int(s.length),
        "task": s.task,
        "depth": s.depth,
        "candidates": s.candidates,
        "tokens_to_generate": s.meta.get("tokens_to_generate"),
        "meta": s.meta,
    }


def export_jsonl(samples, path: str | os.PathLike) -> Path:
    """Write ``samples`` to ``path`` as RULER JSONL (atomically); returns the path."""
    lines = [json.dumps(sample_record(i, s), ensure_ascii=False) for i, s in enumerate(samples)]
    path = Path(path)
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return path


def read_jsonl(path: str | os.PathLike) -> list[Sample]:
    """Samples from a JSONL file written by :func:`export_jsonl` (or by RULER: extras optional)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                out.append(
                    Sample(
                        task=d.get("task", ""),
                        input=d["input"],
                        outputs=list(d["outputs"]),
                        length=int(d["length"]),
                        depth=d.get("depth"),
                        candidates=d.get("candidates"),
                        meta=d.get("meta") or {},
                    )
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(
                    f"{path}:{n} is not a task sample ({e}): expected RULER JSONL with input, outputs, length"
                ) from None
    return out


def _haystack_fingerprint(haystack) -> str:
    if haystack is None or haystack.kind == "noise":
        return "noise"
    h = hashlib.sha256()
    for t in haystack.texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return "corpus:" + h.hexdigest()[:16]


def export_suite(
    out: str | os.PathLike,
    tokenizer,
    tasks: Sequence[str],
    lengths: Sequence[int],
    num_samples: int,
    seed: int,
    haystack=None,
    depths: Sequence[float] | None = None,
    identity: dict | None = None,
    warn: Callable[[str], None] | None = None,
    force: bool = False,
) -> dict:
    """Export every (length, task) to ``OUT/<length>/<task>/validation.jsonl``, resumably.

    Each file's fingerprint covers the tokenizer (:func:`tokenweight.identity.tokenizer_digest`),
    ``identity`` (anything else the caller's samples depend on, e.g. the haystack's source), the
    haystack's text, the task, length, seed, sample count and depths; files whose fingerprint is
    already in ``OUT/manifest.json`` and that exist are kept as they are. A length too short for a
    task is skipped (``warn`` is told, the manifest lists it under ``skipped``).

    The resume contract: a killed export rerun the same way continues (finished files whose bytes
    still match their recorded sha256 are kept); a folder exported with other settings (seed,
    samples, depths, haystack, tokenizer, tasks, lengths) is refused with one line naming the first
    difference unless ``force``, which exports into the hidden sibling ``.OUT.force`` and moves it
    onto ``OUT`` when complete. A second process writing ``OUT`` is refused at once.

    Returns:
        The manifest: ``{"settings", "files": {relpath: {"task", "length", "samples",
        "mean_length", "fingerprint"}}, "skipped": [{"task", "length", "minimum", "reason"}]}``.
    """
    from tokenweight import __version__

    out = Path(out)
    settings = {
        "tokenweight_version": __version__,
        "seed": int(seed),
        "num_samples": int(num_samples),
        "depths": None if depths is None else [float(d) for d in depths],
        "haystack_fingerprint": _haystack_fingerprint(haystack),
        "tokenizer_digest": tokenizer_digest(tokenizer),
        **(identity or {}),
    }
    jobs = [(int(length), task) for length in lengths for task in tasks]
    with output_lock(out):
        work, old = _claim(out, {**settings, "jobs": [list(j) for j in jobs]}, force)
        manifest = _export(work, old, settings, jobs, tokenizer, num_samples, seed, haystack, depths, warn)
        if work != out:
            replace_dir(work, out)
    return manifest


def _read_manifest(folder: Path) -> dict:
    try:
        old = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return old if isinstance(old, dict) else {}


def _claim(out: Path, settings: dict, force: bool) -> tuple[Path, dict]:
    """``(folder to write, its old manifest)``: ``out``, or with ``force`` its staging sibling;
    refuses an ``out`` exported with other settings unless ``force``."""
    import shutil

    from tokenweight.errors import UsageError

    settings = json.loads(json.dumps(settings))
    work = out.parent / f".{out.name}.force" if force else out
    old = _read_manifest(work)
    was = {**(old.get("settings") or {}), "jobs": old.get("jobs")} if old else None
    if was is not None and was.get("jobs") is None:  # written before jobs were recorded: not compared
        was["jobs"] = settings["jobs"]
    # another version is not refused: its files are regenerated (their fingerprints differ)
    differs = was is not None and next(
        (k for k in settings if k != "tokenweight_version" and was.get(k) != settings[k]), None
    )
    if differs and not force:
        raise UsageError(
            f"--out {str(out)!r} was exported with {differs} = {was.get(differs)!r}, this command has "
            f"{differs} = {settings[differs]!r}: rerun with the same settings, choose another --out, or pass "
            "--force to replace it"
        )
    if force and was != settings and work.exists():
        shutil.rmtree(work)
        old = {}
    return work, old


def _export(work: Path, old: dict, settings: dict, jobs, tokenizer, num_samples, seed, haystack, depths, warn) -> dict:
    """Write the files that are missing, stale or damaged; keep the others. Returns the manifest."""
    from tqdm import tqdm

    from tokenweight.evaluate.tasks.registry import generate_samples
    from tokenweight.io_utils import sha256_file

    man_path = work / "manifest.json"
    manifest: dict = {"settings": settings, "jobs": [list(j) for j in jobs], "files": {}, "skipped": []}
    for length, task in tqdm(jobs, desc="tasks export", disable=None):
        rel = f"{length}/{task}/validation.jsonl"
        fp = fingerprint({**settings, "task": task, "length": int(length)})
        prev = (old.get("files") or {}).get(rel)
        if prev and prev.get("fingerprint") == fp and (work / rel).is_file():
            if prev.get("sha256") in (None, sha256_file(work / rel)):  # older manifests have no sha256
                manifest["files"][rel] = prev
                continue
        try:
            samples = generate_samples(
                task, tokenizer, int(length), num_samples, seed, haystack=haystack, depths=depths
            )
        except LengthTooShortError as e:
            if warn is not None:
                warn(f"skipped {task} at {length} tokens: {e}")
            manifest["skipped"].append({"task": task, "length": int(length), "minimum": e.minimum, "reason": str(e)})
            continue
        export_jsonl(samples, work / rel)
        manifest["files"][rel] = {
            "task": task,
            "length": int(length),
            "samples": len(samples),
            "mean_length": sum(s.length for s in samples) / max(len(samples), 1),
            "fingerprint": fp,
            "sha256": sha256_file(work / rel),
        }
        atomic_write_json(man_path, manifest)  # progress survives an interruption
    atomic_write_json(man_path, manifest)
    return manifest
