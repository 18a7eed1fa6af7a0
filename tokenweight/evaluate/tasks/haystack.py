"""Haystacks: the filler text that needles hide in, cut to length and with needles placed by depth.

Two kinds, as in RULER:

- :meth:`Haystack.noise`: RULER's repeated noise line ("The grass is green. The sky is blue. ..."),
  one per line. Out of domain for every model, identical everywhere: the cleanest retrieval test.
- :meth:`Haystack.from_texts`: held-out documents of a corpus (RULER uses Paul Graham's essays; for
  a model trained on Python code, its validation split decoded makes the haystack in-domain). Each
  sample starts at a document chosen by the sample's generator and runs through the following
  documents (wrapping around), separated by blank lines; whitespace is kept (code stays code).

A haystack is cut into *pieces*: a run of whitespace plus up to 8 non-space characters, so that
concatenating the first ``m`` pieces gives a prefix of the text, and a length can be fitted to a
couple of tokens (a piece is rarely more than 2-3 tokens). Needles go in only at *boundaries*:
before a piece whose leading whitespace holds a newline, or after a piece ending a sentence
(``.``, ``!``, ``?``), and at both ends. A needle at depth ``d`` goes to the boundary whose share of
the haystack's (estimated) tokens before it is closest to ``d``; depth is therefore measured in the
model's tokens, not in characters or sentences.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import numpy as np

from tokenweight.evaluate.tasks.sample import piece_token_counts

#: RULER's noise haystack line (``type_haystack: repeat`` and variable tracking)
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

_PIECE = re.compile(r"\s*\S{1,8}")
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
    def from_text(cls, text: str, tokenizer, sep: str = "\n", meta: dict | None = None) -> Stream:
        """Cut ``text`` into pieces and tokenize each piece once (one batched call)."""
        pieces = _PIECE.findall(text)
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
    """Filler text for needle tasks: RULER's noise, or documents of a corpus."""

    def __init__(self, kind: str, texts: tuple[str, ...] = ()):
        if kind not in ("noise", "corpus"):
            raise ValueError(f"kind={kind!r} must be 'noise' or 'corpus'")
        self.kind = kind
        self.texts = texts

    @classmethod
    def noise(cls) -> Haystack:
        """RULER's repeated noise sentences."""
        return cls("noise")

    @classmethod
    def from_texts(cls, texts: list[str]) -> Haystack:
        """Held-out documents (e.g. a validation split decoded); empty ones are dropped."""
        if isinstance(texts, str):
            raise ValueError("texts must be a list of documents, not one string: wrap it in a list")
        docs = tuple(t.replace("\r\n", "\n").strip() for t in texts)
        docs = tuple(t for t in docs if t)
        if not docs:
            raise ValueError(f"texts holds no non-empty document (got {len(texts)} texts)")
        return cls("corpus", docs)

    def __repr__(self) -> str:
        return f"Haystack({self.kind!r}, {len(self.texts)} documents)" if self.kind == "corpus" else "Haystack('noise')"

    def stream(self, tokenizer, rng: random.Random, min_tokens: int) -> Stream:
        """A piece stream holding at least ``min_tokens`` estimated tokens.

        The corpus start document is drawn from ``rng`` (one draw, whatever ``min_tokens``), so a
        sample's haystack at a longer length extends the one at a shorter length.
        """
        if self.kind == "noise":
            per_line = sum(piece_token_counts(tokenizer, _PIECE.findall("\n" + NOISE)))
            lines = max(1, -(-min_tokens // max(per_line, 1)) + 1)
            return Stream.from_text("\n".join([NOISE] * lines), tokenizer, meta={"haystack": "noise"})
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
