"""Haystacks: the filler text that needles hide in, cut to length and with needles placed by depth.

Three kinds, RULER's two and a corpus:

- :meth:`Haystack.noise`: RULER's repeated noise line ("The grass is green. The sky is blue. ..."),
  one per line (``type_haystack: noise``). Out of domain for every model, identical everywhere.
- :meth:`Haystack.essay`: RULER's ``type_haystack: essay``, treated as RULER treats Paul Graham's
  essays: every whitespace run collapsed to one space (RULER's ``re.sub``), every sample's
  haystack the first words of the text (repeated when the length asks for more words than it has),
  needles between sentences. The default text is the prose shipped with every CPython
  (:mod:`tokenweight.evaluate.tasks.essay`); RULER's own essay JSON or any prose can replace it.
- :meth:`Haystack.from_texts`: documents of a corpus (for a model trained on Python code, its
  validation split decoded makes the haystack in-domain). Each sample starts at a document chosen
  by the sample's generator and runs through the following documents (wrapping around), separated
  by blank lines; whitespace is kept (code stays code).

A haystack is cut into *pieces*: a run of whitespace plus up to 8 non-space characters (the essay:
whole words, as RULER cuts it), so that concatenating the first ``m`` pieces gives a prefix of the
text, and a length can be fitted to a couple of tokens (a piece is rarely more than 2-3 tokens).
Needles go in only at *boundaries*: before a piece whose leading whitespace holds a newline, or
after a piece ending a sentence (``.``, ``!``, ``?``), and at both ends. A needle at depth ``d`` goes
to the boundary whose share of the haystack's (estimated) tokens before it is closest to ``d``;
depth is therefore measured in the model's tokens (RULER: in sentences), not in characters.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from dataclasses import dataclass, field

import numpy as np

from tokenweight.evaluate.tasks.sample import piece_token_counts

#: RULER's noise haystack line (``type_haystack: repeat`` and variable tracking)
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

_PIECE = re.compile(r"\s*\S{1,8}")
_WORD = re.compile(r"\s*\S+")
_SENTENCE_END = (".", "!", "?")


@dataclass
class Stream:
    """A haystack text cut into pieces, with estimated token counts and allowed needle slots.

    Attributes:
        pieces: the text pieces; ``"".join(pieces[:m])`` is the haystack with ``m`` pieces.
        cum: ``[len(pieces) + 1]`` estimated tokens of ``pieces[:m]`` (each piece tokenized alone).
        slots: sorted indices ``j`` in ``[0, len(pieces)]`` where a needle may go before piece ``j``
            (``0`` and ``len(pieces)`` always; the end of a cut prefix is always allowed too).
        sep: separator put around a needle where the text offers no whitespace of its own.
    """

    pieces: list[str]
    cum: np.ndarray
    slots: np.ndarray
    sep: str = "\n"
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_text(cls, text: str, tokenizer, sep: str = "\n", meta: dict | None = None, words: bool = False) -> Stream:
        """Cut ``text`` into pieces (``words``: whole words) and tokenize each piece once (one batched call)."""
        pieces = (_WORD if words else _PIECE).findall(text)
        counts = piece_token_counts(tokenizer, pieces)
        cum = np.zeros(len(pieces) + 1, dtype=np.int64)
        np.cumsum(counts, out=cum[1:])
        ok = [True]
        for j in range(1, len(pieces)):
            p = pieces[j]
            ws = p[: len(p) - len(p.lstrip())]
            ok.append(bool(ws) and ("\n" in ws or pieces[j - 1].endswith(_SENTENCE_END)))
        ok.append(True)
        return cls(pieces, cum, np.flatnonzero(np.array(ok)), sep, dict(meta or {}))

    def __len__(self) -> int:
        return len(self.pieces)

    def slot_for(self, m: int, depth: float) -> int:
        """The allowed slot in the first ``m`` pieces closest (in tokens) to ``depth`` of them."""
        slots = self.slots[: int(np.searchsorted(self.slots, m, side="left"))]
        slots = np.append(slots, m)  # the end of the cut text is always a slot
        pos = self.cum[slots]
        want = depth * self.cum[m]
        k = int(np.searchsorted(pos, want))
        if k == len(slots) or (k > 0 and want - pos[k - 1] <= pos[k] - want):
            k -= 1
        return int(slots[k])

    def depth_of(self, m: int, slot: int) -> float:
        """Share of the first ``m`` pieces' estimated tokens that lie before ``slot``."""
        total = float(self.cum[m])
        return float(self.cum[slot]) / total if total > 0 else 0.0

    def render(self, m: int, inserts: list[tuple[int, str]]) -> str:
        """The first ``m`` pieces with each ``(slot, text)`` inserted before piece ``slot``.

        Insertions at the same slot keep their order. The separator around an insertion is the
        text's own line break (or space) when the next piece starts with one, else ``sep``.
        """
        if not inserts:
            return "".join(self.pieces[:m])
        out: list[str] = []
        last = 0
        by_slot: dict[int, list[str]] = {}
        for slot, text in inserts:
            if not 0 <= slot <= m:
                raise ValueError(f"slot={slot} is outside [0, {m}]")
            by_slot.setdefault(slot, []).append(text)
        for slot in sorted(by_slot):
            out.append("".join(self.pieces[last:slot]))
            nxt = self.pieces[slot] if slot < m else ""
            lead = nxt[: len(nxt) - len(nxt.lstrip())]
            if "\n" in lead:
                sep = "\n"
            elif lead:
                sep = " "
            else:
                sep = self.sep
            block = sep.join(by_slot[slot])
            if slot > 0:
                out.append(sep)
            out.append(block)
            if slot < m and not lead:
                out.append(sep)
            last = slot
        out.append("".join(self.pieces[last:m]))
        return "".join(out)


class Haystack:
    """Filler text for needle tasks: RULER's noise, an essay, or documents of a corpus."""

    def __init__(self, kind: str, texts: tuple[str, ...] = (), source: str | None = None):
        if kind not in ("noise", "essay", "corpus"):
            raise ValueError(f"kind={kind!r} must be 'noise', 'essay' or 'corpus'")
        self.kind = kind
        self.texts = texts
        self.source = source or kind
        self._words: list[str] | None = None
        self._streams: dict = {}  # (tokenizer id, words) -> (tokenizer, Stream): the same for every sample

    @classmethod
    def noise(cls) -> Haystack:
        """RULER's repeated noise sentences."""
        return cls("noise")

    @classmethod
    def essay(cls, text: str | None = None, source: str | None = None) -> Haystack:
        """RULER's essay haystack over ``text`` (None: the prose shipped with CPython,
        :func:`tokenweight.evaluate.tasks.essay.essay_text`); whitespace collapsed as RULER does."""
        if text is None:
            from tokenweight.evaluate.tasks.essay import essay_source, essay_text

            text = essay_text()
            info = essay_source()
            source = source or f"essay: {info['source']}, Python {info['python']}"
        collapsed = re.sub(r"\s+", " ", text).strip()
        if not collapsed:
            raise ValueError("text holds no words: an essay haystack needs prose")
        return cls("essay", (collapsed,), source or "essay")

    @classmethod
    def from_texts(cls, texts: list[str], source: str | None = None) -> Haystack:
        """Held-out documents (e.g. a validation split decoded); empty ones are dropped."""
        if isinstance(texts, str):
            raise ValueError("texts must be a list of documents, not one string: wrap it in a list")
        docs = tuple(t.replace("\r\n", "\n").strip() for t in texts)
        docs = tuple(t for t in docs if t)
        if not docs:
            raise ValueError(f"texts holds no non-empty document (got {len(texts)} texts)")
        return cls("corpus", docs, source or "corpus")

    def __repr__(self) -> str:
        if self.kind == "noise":
            return "Haystack('noise')"
        return f"Haystack({self.kind!r}, {len(self.texts)} documents)"

    def fingerprint(self) -> str:
        """``"noise"``, or the kind and a digest of the text: what samples depend on."""
        if self.kind == "noise":
            return "noise"
        h = hashlib.sha256()
        for t in self.texts:
            h.update(t.encode("utf-8"))
            h.update(b"\0")
        return f"{self.kind}:{h.hexdigest()[:16]}"

    def stream(self, tokenizer, rng: random.Random, min_tokens: int) -> Stream:
        """A piece stream holding at least ``min_tokens`` estimated tokens.

        The corpus start document is drawn from ``rng`` (one draw, whatever ``min_tokens``), so a
        sample's haystack at a longer length extends the one at a shorter length. The essay always
        starts at its first word (RULER's ``haystack[:num_haystack]``).
        """
        if self.kind == "noise":
            per_line = sum(piece_token_counts(tokenizer, _PIECE.findall("\n" + NOISE)))
            lines = max(1, -(-min_tokens // max(per_line, 1)) + 1)
            return Stream.from_text("\n".join([NOISE] * lines), tokenizer, meta={"haystack": "noise"})
        if self.kind == "essay":
            return self._essay_stream(tokenizer, min_tokens)
        start = rng.randrange(len(self.texts))
        chars_per_token = 2  # generous: corpus text is rarely under 2 characters per token
        while True:
            docs, chars, i = [], 0, start
            while chars < min_tokens * chars_per_token:
                docs.append(self.texts[i % len(self.texts)])
                chars += len(docs[-1]) + 2
                i += 1
            s = Stream.from_text("\n\n".join(docs), tokenizer, meta={"haystack": "corpus", "first_document": start})
            if s.cum[-1] >= min_tokens:
                s.meta["documents"] = len(docs)
                return s
            chars_per_token *= 2

    def _essay_stream(self, tokenizer, min_tokens: int) -> Stream:
        """The first words of the essay (cycled, as RULER repeats its haystack) with at least
        ``min_tokens`` estimated tokens."""
        if self._words is None:
            self._words = self.texts[0].split(" ")
        words = self._words
        n = max(16, min_tokens)  # a word is at least one token
        while True:  # the stream depends on min_tokens only (never on what was asked before)
            hit = self._streams.get((id(tokenizer), n))
            if hit is not None and hit[0] is tokenizer:
                s = hit[1]
            else:
                text = " ".join(words[i % len(words)] for i in range(n))
                meta = {"haystack": "essay", "source": self.source}
                s = Stream.from_text(text, tokenizer, sep=" ", meta=meta, words=True)
                if len(self._streams) >= 8:
                    self._streams.pop(next(iter(self._streams)))
                self._streams[(id(tokenizer), n)] = (tokenizer, s)
            if s.cum[-1] >= min_tokens:
                return s
            n *= 2


def fit_haystack(make_stream, build, tokenizer, length: int, task: str) -> tuple[Stream, int, str, int]:
    """Cut a haystack so that ``build(stream, m)`` is as long as possible within ``length`` tokens.

    Args:
        make_stream: ``min_tokens -> Stream`` (deterministic: a larger request extends the text).
        build: ``(stream, m) -> prompt`` with the first ``m`` pieces and the needles.
        length: the target length in tokens (special tokens included).

    Returns:
        ``(stream, m, prompt, tokens)``; raises :class:`LengthTooShortError` when the prompt
        without any haystack is already longer than ``length``.
    """
    from tokenweight.evaluate.tasks.fit import TooShort, fit_length
    from tokenweight.evaluate.tasks.sample import LengthTooShortError, count_tokens

    min_tokens = length + 32
    while True:
        stream = make_stream(min_tokens)
        texts: dict[int, str] = {}

        def measure(m: int) -> int:
            texts[m] = build(stream, m)
            return count_tokens(tokenizer, texts[m])

        try:
            m, n = fit_length(measure, length, 0, len(stream), estimate=stream.cum)
        except TooShort as e:
            raise LengthTooShortError(task, length, e.minimum) from None
        if m < len(stream) or n == length:
            return stream, m, texts[m], n
        min_tokens *= 2  # the stream ran out before the target: ask for more text


@functools.lru_cache(maxsize=1)
def default_essay() -> Haystack:
    """The essay haystack of the essay tasks when none is given (one object: its stream is cached)."""
    return Haystack.essay()
