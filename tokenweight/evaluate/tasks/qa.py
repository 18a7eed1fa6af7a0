"""RULER's QA tasks, ``qa_1`` (SQuAD) and ``qa_2`` (HotpotQA), over files the user provides.

RULER (``scripts/data/synthetic/qa.py``) reads SQuAD 2.0's dev set (``dev-v2.0.json``) and
HotpotQA's dev set in the distractor setting (``hotpot_dev_distractor_v1.json``), which its
``download_qa_dataset.sh`` fetches. Nothing downloads here: pass the same files
(``tokenweight tasks export --squad FILE --hotpotqa FILE``, ``EvalConfig(squad=..., hotpotqa=...)``).
:func:`read_qa` reads them as RULER's ``read_squad``/``read_hotpotqa`` do:

- SQuAD: ``{"data": [{"paragraphs": [{"context": str, "qas": [{"question": str, "answers":
  [{"text": str}, ...], "is_impossible": bool}, ...]}, ...]}, ...]}``. Documents: the distinct
  paragraph contexts, sorted. Questions: every answerable one (``is_impossible`` false; SQuAD 1.1
  has no such key, so all of its questions count), in file order; its gold document is its
  paragraph, and the other paragraphs of the same article come next.
- HotpotQA: ``[{"question": str, "answer": str, "context": [[title, [sentence, ...]], ...]}, ...]``.
  Documents: ``title + "\\n" + "".join(sentences)``, distinct, sorted. Gold documents: every
  paragraph of the question's ``context`` (its 2 supporting and 8 distractor paragraphs).

Sample ``k`` asks question ``k`` (RULER: ``QAS[index]``; past the last question it wraps around)
over as many documents as fit the length: its gold documents, then (SQuAD) the rest of its article,
then randomly drawn other documents (the whole set repeated when the length needs more, as RULER
does), in a random order, each as ``"Document {i}:\\n{text}"``, joined by blank lines, inside
RULER's template. RULER shuffles the chosen documents with one fixed permutation; here each chosen
position gets a random key once, so the order of the first ``m`` documents is stable while ``m`` is
fitted. The metric is ``string_match_part`` (any gold answer), the budget 32 tokens.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from tokenweight.evaluate.tasks.fit import TooShort, fit_length
from tokenweight.evaluate.tasks.sample import (
    LengthTooShortError,
    Sample,
    TaskSpec,
    count_tokens,
    piece_token_counts,
    require,
)

TEMPLATE = (
    "Answer the question based on the given documents. Only give me the answer and do not output any other "
    "words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on the given "
    "documents. Only give me the answer and do not output any other words.\n\nQuestion: {query}"
)
ANSWER_PREFIX = " Answer:"
DOCUMENT = "Document {i}:\n{document}"
NUM_DISTRACTORS = 9
#: dataset name -> (what RULER downloads, the shape expected)
SHAPES = {
    "squad": (
        "SQuAD 2.0 dev-v2.0.json",
        '{"data": [{"paragraphs": [{"context": ..., "qas": [{"question": ..., "answers": [{"text": ...}]}]}]}]}',
    ),
    "hotpotqa": (
        "HotpotQA hotpot_dev_distractor_v1.json",
        '[{"question": ..., "answer": ..., "context": [[title, [sentence, ...]], ...]}, ...]',
    ),
}


@dataclass
class QADataset:
    """Documents and questions of one QA file (RULER's ``DOCS`` and ``QAS``).

    Attributes:
        kind: ``"squad"`` or ``"hotpotqa"``.
        docs: the distinct documents, sorted.
        questions: ``{"query", "outputs", "context": [doc index], "more_context": [doc index]}``.
        source: the file's path; digest: sha256 of its bytes (what the samples depend on).
    """

    kind: str
    docs: list[str]
    questions: list[dict]
    source: str = ""
    digest: str = ""
    _counts: dict = field(default_factory=dict, repr=False)
    _counted_with: object = field(default=None, repr=False)

    def doc_tokens(self, tokenizer, indices: list[int]) -> list[int]:
        """Estimated tokens of each document as it is shown (``"Document 1:\\n..."``), cached."""
        if self._counted_with is not tokenizer:
            self._counts, self._counted_with = {}, tokenizer
        todo = list(dict.fromkeys(i for i in indices if i not in self._counts))
        if todo:
            texts = [DOCUMENT.format(i=1, document=self.docs[i]) + "\n\n" for i in todo]
            self._counts.update(zip(todo, piece_token_counts(tokenizer, texts)))
        return [self._counts[i] for i in indices]


def _bad(kind: str, path, what: str):
    from tokenweight.errors import UsageError

    name, shape = SHAPES[kind]
    return UsageError(f"--{kind} {str(path)!r} is not {name} ({what}): expected {shape}")


def _squad(data, path) -> tuple[list[str], list[dict]]:
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise _bad("squad", path, 'no "data" list at the top')
    articles = []
    for a, article in enumerate(data["data"]):
        paras = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paras, list):
            raise _bad("squad", path, f'data[{a}] has no "paragraphs" list')
        for p, para in enumerate(paras):
            if not (
                isinstance(para, dict) and isinstance(para.get("context"), str) and isinstance(para.get("qas"), list)
            ):
                raise _bad("squad", path, f'data[{a}].paragraphs[{p}] lacks "context" or "qas"')
        articles.append(paras)
    docs = sorted({p["context"] for paras in articles for p in paras})
    index = {c: i for i, c in enumerate(docs)}
    questions = []
    for a, paras in enumerate(articles):
        article_docs = [index[p["context"]] for p in paras]
        for para in paras:
            gold = index[para["context"]]
            for q in para["qas"]:
                ok = isinstance(q, dict) and isinstance(q.get("question"), str) and isinstance(q.get("answers"), list)
                if not ok or not all(isinstance(x, dict) and isinstance(x.get("text"), str) for x in q["answers"]):
                    raise _bad("squad", path, f'a question of data[{a}] lacks "question" or "answers" texts')
                if q.get("is_impossible", False):
                    continue
                outputs = [x["text"] for x in q["answers"]]
                if any(o.strip() for o in outputs):
                    more = [i for i in article_docs if i != gold]
                    questions.append(
                        {"query": q["question"], "outputs": outputs, "context": [gold], "more_context": more}
                    )
    return docs, questions


def _hotpot(data, path) -> tuple[list[str], list[dict]]:
    if not isinstance(data, list):
        raise _bad("hotpotqa", path, "the top level is not a list of questions")
    parsed = []
    for n, d in enumerate(data):
        ctx = d.get("context") if isinstance(d, dict) else None
        if not (isinstance(ctx, list) and isinstance(d.get("question"), str) and isinstance(d.get("answer"), str)):
            raise _bad("hotpotqa", path, f'entry {n} lacks "question", "answer" or a "context" list')
        try:
            texts = [f"{t}\n{''.join(p)}" for t, p in ctx]
        except (TypeError, ValueError):
            raise _bad("hotpotqa", path, f"entry {n}'s context is not [[title, [sentence, ...]], ...]") from None
        parsed.append((d["question"], d["answer"], texts))
    docs = sorted({t for _, _, texts in parsed for t in texts})
    index = {c: i for i, c in enumerate(docs)}
    questions = [
        {"query": q, "outputs": [a], "context": [index[t] for t in texts], "more_context": []}
        for q, a, texts in parsed
        if a.strip()
    ]
    return docs, questions


def read_qa(path: str | Path, kind: str) -> QADataset:
    """Read a SQuAD (``kind="squad"``) or HotpotQA (``"hotpotqa"``) file as RULER does.

    Raises:
        ValueError: ``kind`` is neither.
        UsageError: the file is missing, not JSON, of the wrong shape (one line naming what is
            wrong and the shape expected), or holds no answerable question.
    """
    from tokenweight.errors import UsageError

    if kind not in SHAPES:
        raise ValueError(f"kind={kind!r} must be 'squad' or 'hotpotqa'")
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--{kind} {str(p)!r} does not exist: pass the {SHAPES[kind][0]} file RULER downloads")
    raw = p.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise _bad(kind, p, f"not JSON: {str(e).splitlines()[0]}") from None
    docs, questions = (_squad if kind == "squad" else _hotpot)(data, p)
    if not questions:
        raise _bad(kind, p, "no answerable question")
    return QADataset(kind, docs, questions, str(p), hashlib.sha256(raw).hexdigest()[:16])


def _candidates(qa: QADataset, q: dict, rng: random.Random, index: int) -> list[str]:
    """Answers of other questions, none equal to a gold answer (the rank metric's distractors)."""
    golds = {o.strip().lower() for o in q["outputs"]}
    out: list[str] = []
    for _ in range(20 * NUM_DISTRACTORS):
        if len(out) == NUM_DISTRACTORS or len(qa.questions) < 2:
            break
        other = qa.questions[rng.randrange(len(qa.questions))]
        a = next((o for o in other["outputs"] if o.strip()), "")
        if other is not q and a.strip() and a.strip().lower() not in golds and a not in out:
            out.append(a)
    return out


def generate_qa(
    spec: TaskSpec, tokenizer, length: int, rng: random.Random, haystack=None, depth=None, *, index=0, qa=None, **_
) -> Sample:
    """Sample ``index``: question ``index`` of ``qa`` over documents filling at most ``length``
    prompt tokens (``haystack``/``depth`` unused)."""
    kind = spec.params["dataset"]
    if not isinstance(qa, QADataset) or qa.kind != kind:
        raise ValueError(f"task {spec.name!r} needs qa, a QADataset of kind {kind!r} (read_qa(path, {kind!r}))")
    qi = index % len(qa.questions)
    q = qa.questions[qi]
    gold = list(dict.fromkeys(q["context"]))
    more = [i for i in q["more_context"] if i not in gold]
    rng.shuffle(more)
    key_seed, other_seed, cand_seed = rng.getrandbits(64), rng.getrandbits(64), rng.getrandbits(64)
    taken = set(gold) | set(more)

    def candidates(k: int) -> list[int]:
        """The first documents in the order they are added: gold, article, ``k`` random others."""
        others = random.Random(other_seed).sample(range(len(qa.docs)), min(k, len(qa.docs)))
        order = gold + more + [i for i in others if i not in taken]
        if k >= len(qa.docs):  # every document is in: repeat the set, as RULER does
            order = order * (1 + -(-length // max(1, sum(qa.doc_tokens(tokenizer, order)))))
        return order

    k = 64
    while True:
        order = candidates(k)
        sizes = qa.doc_tokens(tokenizer, order)
        if sum(sizes) > length or k >= len(qa.docs):
            break
        k *= 2
    keys = random.Random(key_seed)
    key = [keys.random() for _ in order]
    texts: dict[int, str] = {}

    def build(m: int) -> str:
        shown = sorted(range(m), key=lambda j: key[j])
        context = "\n\n".join(DOCUMENT.format(i=n + 1, document=qa.docs[order[j]]) for n, j in enumerate(shown))
        return (TEMPLATE + ANSWER_PREFIX).format(context=context, query=q["query"])

    def measure(m: int) -> int:
        texts[m] = build(m)
        return count_tokens(tokenizer, texts[m])

    estimate = [0]
    for s in sizes:
        estimate.append(estimate[-1] + s)
    try:
        m, n_tokens = fit_length(measure, length, len(gold), len(order), estimate=estimate)
    except TooShort as e:
        raise LengthTooShortError(spec.name, length, e.minimum) from None
    prompt = texts[m]
    for d in gold:
        require(qa.docs[d] in prompt, f"{spec.name}: a gold document of question {qi} is missing from the input")
    shown = sorted(range(m), key=lambda j: key[j])
    golds = list(dict.fromkeys(q["outputs"]))
    return Sample(
        task=spec.name,
        input=prompt,
        outputs=list(q["outputs"]),
        length=n_tokens,
        depth=None,
        candidates=golds + _candidates(qa, q, random.Random(cand_seed), qi),
        meta={
            "dataset": kind,
            "source": qa.digest,
            "question": qi,
            "documents": m,
            "gold_documents": [n + 1 for n, j in enumerate(shown) if order[j] in gold],
        },
    )
