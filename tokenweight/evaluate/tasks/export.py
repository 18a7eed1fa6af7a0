"""RULER-format JSONL: one sample per line, written atomically, readable back into Samples.

Each line holds RULER's fields first, as RULER's generators write them (``scripts/data/synthetic/
*.py``): ``index`` (the sample's number), ``input`` (the prompt *without* the answer prefix),
``outputs``, ``length`` (tokens of input and answer prefix plus ``tokens_to_generate``),
``length_w_model_temp`` (``length`` plus the chat-template tokens reserved, RULER's
``model_template_token``; equal to ``length`` unless ``template_tokens`` was given),
``answer_prefix`` and, for NIAH, ``token_position_answer`` (tokens of ``input`` before the first
answer). RULER's ``call_api.py`` sends ``input + answer_prefix`` and keeps ``index``, ``outputs``,
``length``; its ``evaluate.py`` scores ``pred`` against ``outputs``. Our extra fields (``task``,
``depth``, ``candidates``, ``tokens_to_generate``, ``meta``) follow; RULER's scripts ignore them.

One difference on purpose: RULER's ``niah.py`` overwrites ``index`` with the character offset of the
answer (a variable reused for ``token_position_answer``), which can repeat within a file and then
makes ``call_api.py``'s resume skip samples; here ``index`` is always the sample's number, as in
every other RULER task.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tokenweight.evaluate.tasks.sample import LengthTooShortError, Sample
from tokenweight.identity import tokenizer_digest
from tokenweight.io_utils import atomic_write_json, atomic_write_text, fingerprint, read_json_object
from tokenweight.outputs import first_difference, move_into_place, other_settings, output_lock, work_folder

#: RULER's fields, in RULER's order (``token_position_answer``: NIAH only)
RULER_FIELDS = ("index", "input", "outputs", "length", "length_w_model_temp", "answer_prefix", "token_position_answer")


def sample_record(index: int, s: Sample) -> dict:
    """The JSON object of one sample: RULER's fields, then ours."""
    meta = {k: v for k, v in s.meta.items() if k != "token_position_answer"}
    record = {
        "index": index,
        "input": s.input,
        "outputs": list(s.outputs),
        "length": int(s.length),
        "length_w_model_temp": int(s.length) + int(s.meta.get("template_tokens") or 0),
        "answer_prefix": s.answer_prefix,
    }
    if "token_position_answer" in s.meta:
        record["token_position_answer"] = int(s.meta["token_position_answer"])
    record.update(
        task=s.task, depth=s.depth, candidates=s.candidates, tokens_to_generate=int(s.tokens_to_generate), meta=meta
    )
    return record


def export_jsonl(samples, path: str | os.PathLike) -> Path:
    """Write ``samples`` to ``path`` as RULER JSONL (atomically; ASCII, as RULER's ``write_manifest``)."""
    lines = [json.dumps(sample_record(i, s)) for i, s in enumerate(samples)]
    path = Path(path)
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return path


def read_jsonl(path: str | os.PathLike) -> list[Sample]:
    """Samples from a JSONL file written by :func:`export_jsonl` or by RULER (our extras optional)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                meta = dict(d.get("meta") or {})
                if "token_position_answer" in d:
                    meta["token_position_answer"] = int(d["token_position_answer"])
                out.append(
                    Sample(
                        task=d.get("task", ""),
                        input=d["input"],
                        outputs=list(d["outputs"]),
                        length=int(d["length"]),
                        depth=d.get("depth"),
                        candidates=d.get("candidates"),
                        meta=meta,
                        answer_prefix=str(d.get("answer_prefix") or ""),
                        tokens_to_generate=int(d.get("tokens_to_generate") or 0),
                    )
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(
                    f"{path}:{n} is not a task sample ({e}): expected RULER JSONL with input, outputs, length"
                ) from None
    return out


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
    *,
    tokens_to_generate: int | None = None,
    answer_prefix: bool = True,
    template_tokens: int = 0,
    qa: Mapping | None = None,
) -> dict:
    """Export every (length, task) to ``OUT/<length>/<task>/validation.jsonl``, resumably.

    RULER's layout: ``OUT/<length>`` is what RULER's ``call_api.py --data_dir`` takes (it reads
    ``<data_dir>/<task>/validation.jsonl``). ``haystack`` (None: the shipped essay),
    ``tokens_to_generate``, ``answer_prefix``, ``template_tokens`` are
    :func:`~tokenweight.evaluate.tasks.registry.generate_samples`'s; ``qa`` maps ``"squad"`` /
    ``"hotpotqa"`` to the :class:`~tokenweight.evaluate.tasks.qa.QADataset` of ``qa_1`` / ``qa_2``.

    Each file's fingerprint covers the tokenizer (:func:`tokenweight.identity.tokenizer_digest`),
    ``identity`` (anything else the caller's samples depend on, e.g. the haystack's source), the
    haystack's text, the QA files' bytes, the task, length, seed, sample count, depths and the
    prompt options; files whose fingerprint is already in ``OUT/manifest.json`` and that exist are
    kept as they are. A length too short for a task is skipped (``warn`` is told, the manifest lists
    it under ``skipped``).

    The resume contract: a killed export rerun the same way continues (finished files whose bytes
    still match their recorded sha256 are kept); a folder exported with other settings (seed,
    samples, depths, haystack, tokenizer, tasks, lengths) is refused with one line naming the first
    difference unless ``force``, which exports into the hidden sibling ``.OUT.force`` and moves it
    onto ``OUT`` when complete. A second process writing ``OUT`` is refused at once (the output
    protocol: :mod:`tokenweight.outputs`).

    Returns:
        The manifest: ``{"settings", "files": {relpath: {"task", "length", "samples",
        "mean_length", "fingerprint"}}, "skipped": [{"task", "length", "minimum", "reason"}]}``.
    """
    from tokenweight import __version__
    from tokenweight.evaluate.tasks.haystack import default_essay
    from tokenweight.evaluate.tasks.registry import TASKS

    out = Path(out)
    qa = dict(qa or {})
    if haystack is None and any(TASKS[t].haystack == "essay" for t in tasks):
        haystack = default_essay()
    settings = {
        "tokenweight_version": __version__,
        "seed": int(seed),
        "num_samples": int(num_samples),
        "depths": None if depths is None else [float(d) for d in depths],
        "haystack_fingerprint": "unused" if haystack is None else haystack.fingerprint(),
        "tokenizer_digest": tokenizer_digest(tokenizer),
        "tokens_to_generate": tokens_to_generate,
        "answer_prefix": bool(answer_prefix),
        "template_tokens": int(template_tokens),
        "qa": {k: v.digest for k, v in sorted(qa.items())},
        **(identity or {}),
    }
    options = {
        "haystack": haystack,
        "depths": depths,
        "tokens_to_generate": tokens_to_generate,
        "answer_prefix": answer_prefix,
        "template_tokens": template_tokens,
    }
    jobs = [(int(length), task) for length in lengths for task in tasks]
    with output_lock(out):
        work, old = _claim(out, {**settings, "jobs": [list(j) for j in jobs]}, force)
        manifest = _export(work, old, settings, jobs, tokenizer, num_samples, seed, options, qa, warn)
        move_into_place(work, out)
    return manifest


def _claim(out: Path, settings: dict, force: bool) -> tuple[Path, dict]:
    """``(folder to write, its old manifest)``: ``out``, or with ``force`` its staging sibling;
    refuses an ``out`` exported with other settings unless ``force``."""
    import shutil

    settings = json.loads(json.dumps(settings))
    work = work_folder(out, force)
    old = read_json_object(work / "manifest.json") or {}
    was = {**(old.get("settings") or {}), "jobs": old.get("jobs")} if old else None
    if was is not None and was.get("jobs") is None:  # written before jobs were recorded: not compared
        was["jobs"] = settings["jobs"]
    # another version is not refused: its files are regenerated (their fingerprints differ)
    differs = was is not None and first_difference(was, settings, [k for k in settings if k != "tokenweight_version"])
    if differs and not force:
        raise other_settings(out, "was exported", differs, was.get(differs), settings[differs])
    if force and was != settings and work.exists():
        shutil.rmtree(work)
        old = {}
    return work, old


def _export(work: Path, old: dict, settings: dict, jobs, tokenizer, num_samples, seed, options, qa, warn) -> dict:
    """Write the files that are missing, stale or damaged; keep the others. Returns the manifest."""
    from tqdm import tqdm

    from tokenweight.evaluate.tasks.registry import TASKS, generate_samples
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
            data = qa.get(TASKS[task].params.get("dataset"))
            samples = generate_samples(task, tokenizer, int(length), num_samples, seed, qa=data, **options)
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
