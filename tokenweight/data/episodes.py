"""Long-range definition-use episodes injected into real documents.

Why: a tiny model trained briefly on natural text learns almost nothing that needs more than a
few dozen tokens of context (docs/DATA.md), so long-context training (and token weighting) has
nothing to work with. An *episode* is a line ``NAME = 4096217`` inserted at a line boundary and,
``d`` tokens later in the same document, a line that repeats the value. NAME is a fresh random
upper-case identifier and the value is random, so once the cue before the repeated value is read
the value is predictable *only* by copying it from the definition ``d`` tokens back: a controlled
long-range dependency inside real text.

Two styles of the repeating line (:data:`USE_TEMPLATES`):

- ``restate`` (default): the definition line again, ``NAME = 4096217``. The cue ``NAME =`` is the
  same token sequence as before the defined value, so plain copying (an induction head: find the
  earlier occurrence of the current context, predict what followed it) recalls the value; it is
  what the demo's gate checks (its base model learns this only with a copy warm-up:
  docs/TRAINING.md).
- ``assert``: ``assert NAME == 4096217`` or ``print(NAME, 4096217)``. The cue differs from the
  definition's (``==`` vs ``=``), so the model must look the name up and skip ahead; kept as a
  harder probe (docs/DATA.md has the measured recall of both styles).

How the distances are hit exactly (in tokens, ``d = use_start - def_start`` of the value tokens):

1. tokenize the original document (character offsets give the token index of every line start);
2. sample target episodes per future sequence (``per_1k`` per 1000 tokens, distance uniform in the
   range, the whole definition line and the use value inside one sequence of ``capacity`` tokens);
3. walk the line boundaries in order, adding the token cost of every inserted line (tokenized in
   its indentation context, ``_Meter``), and place each definition at the first boundary after
   its target and each use at the boundary whose value position is closest to ``definition + d``
   (``_plan``); on the stdlib these predicted positions match the final tokens exactly;
4. insert the lines, re-tokenize, and *verify* every episode on the final tokens: value spans cover
   exactly the value characters (plus, for tokenizers that glue it to numbers, the one space
   before), equal ids at both sites, distance in range, NAME, value and use inside one sequence.
   A document with failing episodes (tokenization drift with an unusual tokenizer or context) is
   planned again without their targets, until every remaining episode passes.

Everything is driven by a per-document ``numpy`` generator, so results do not depend on batching
or on the number of worker processes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import NamedTuple

import numpy as np

from tokenweight.data.tokenizer import Encoded

DEF_TEMPLATE = "{name} = {value}"
#: the line that repeats the value, per episode style (one template drawn at random per episode)
USE_TEMPLATES = {"restate": ("{name} = {value}",), "assert": ("assert {name} == {value}", "print({name}, {value})")}
#: the planner keeps this many tokens away from the edges of the allowed window (and from the first
#: tokens of a sequence), so that tokenization drift at an insertion rarely fails verification
MARGIN = 2
#: tokens assumed before a definition's value when sampling targets (names are 7-11 characters;
#: their actual token lengths are used when placing)
_PREFIX_ESTIMATE = 12
MAX_PER_1K = 20.0
MAX_DIGITS = 18
_INDENT = re.compile(r"[ \t]*")


@dataclass(frozen=True)
class EpisodeConfig:
    """Episode settings. ``max_distance=None``: as far as fits in one sequence."""

    per_1k: float
    min_distance: int = 16
    max_distance: int | None = None
    digits: int = 7
    style: str = "restate"

    def __post_init__(self):
        if self.style not in USE_TEMPLATES:
            raise ValueError(f"style must be one of {', '.join(USE_TEMPLATES)}, got {self.style!r}")
        if not (isinstance(self.per_1k, (int, float)) and 0 <= self.per_1k <= MAX_PER_1K):
            raise ValueError(
                f"per_1k must be a number in [0, {MAX_PER_1K}] episodes per 1000 tokens, got {self.per_1k!r}"
            )
        if not (isinstance(self.min_distance, int) and self.min_distance >= 1):
            raise ValueError(f"min_distance must be an int >= 1 token, got {self.min_distance!r}")
        if self.max_distance is not None and not (
            isinstance(self.max_distance, int) and self.max_distance >= self.min_distance
        ):
            raise ValueError(
                f"max_distance must be None or an int >= min_distance={self.min_distance}, got {self.max_distance!r}"
            )
        if not (isinstance(self.digits, int) and 1 <= self.digits <= MAX_DIGITS):
            raise ValueError(f"digits must be an int in [1, {MAX_DIGITS}], got {self.digits!r}")

    def max_fitting(self, capacity: int) -> int:
        """Largest distance (tokens) that can fit in a sequence of ``capacity`` document tokens."""
        return capacity - self.digits - _PREFIX_ESTIMATE - MARGIN

    def to_dict(self) -> dict:
        return asdict(self)


def parse_distance(spec: str) -> tuple[int, int | None]:
    """``"MIN:MAX"`` (or ``"MIN:"``, max = what fits) -> ``(min, max)``; ValueError when malformed."""
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d*)\s*", str(spec))
    if not m:
        raise ValueError(f"episode distance must look like MIN:MAX or MIN: (tokens), got {spec!r}")
    lo, hi = int(m.group(1)), (int(m.group(2)) if m.group(2) else None)
    if lo < 1 or (hi is not None and hi < lo):
        raise ValueError(f"episode distance {spec!r} needs 1 <= MIN <= MAX")
    return lo, hi


@dataclass
class _Candidate:
    """One episode's text: a fresh name, a random value and the two lines that carry it."""

    name: str
    value: str
    def_line: str
    use_line: str


class _LineCost(NamedTuple):
    """Token cost of an inserted line (:class:`_Meter`)."""

    pre: int  # tokens from the boundary to the value
    length: int  # tokens added
    vlen: int  # value tokens


@dataclass
class _Placement:
    """Where :func:`_plan` puts one episode: the boundaries of its two lines, and their place in the
    execution order (``*_seq``), which orders lines inserted at the same boundary."""

    cand: int  # index of the candidate
    def_boundary: int
    use_boundary: int
    def_seq: int
    use_seq: int


@dataclass
class _DocPlan:
    """What :func:`inject_batch` plans one document from, until every episode verifies."""

    targets: list[tuple[int, int]]  # (def_line_position, distance), from :func:`_sample_targets`
    candidates: list[_Candidate]  # one per target
    bounds: np.ndarray  # character position of every line boundary
    tokpos: np.ndarray  # per boundary, the index of the first original token at or after it
    excluded: set[int] = field(default_factory=set)  # targets left out after failing (or abandoned)


@dataclass
class _Built:
    """A document with its planned lines inserted (:func:`_build`), before verification.

    ``chars``: per episode, the character positions ``[def_name_start, def_value_start,
    def_value_end, use_value_start, use_value_end]`` in ``text``.
    """

    placed: list[_Placement]
    text: str
    chars: list[list[int]]


class _Meter:
    """Exact token cost of inserting a line at a boundary with a given indentation (cached).

    Measured in the context ``"\\n" + indent + line + indent + "x"`` against ``"\\n" + indent + "x"``,
    which is how an inserted line sits between a newline and the indented next line, so that
    tokens merging across the boundary (newline + indentation runs) are accounted for. Returns
    ``(pre, length, vlen)``: tokens from the boundary to the value, tokens added, value tokens.
    Exactness is not assumed: every episode is verified on the final tokens.
    """

    def __init__(self, encode):
        self.encode = encode
        self.cache: dict[tuple[str, str, str], tuple[int, int, int]] = {}

    def __call__(self, line: str, value: str, indent: str) -> tuple[int, int, int]:
        key = (line, value, indent)
        if key not in self.cache:
            base, full = self.encode(["\n" + indent + "x", "\n" + indent + line + indent + "x"])
            v = 1 + len(indent) + line.index(value)
            at = int(np.searchsorted(full.starts, 1, "left"))  # the boundary, as ``tokpos`` counts it
            v0 = int(np.searchsorted(full.ends, v, "right"))
            v1 = int(np.searchsorted(full.starts, v + len(value), "left"))
            self.cache[key] = (v0 - at, len(full.ids) - len(base.ids), v1 - v0)
        return self.cache[key]


@dataclass
class DocEpisodes:
    """Result for one document: final text tokens and verified episode spans.

    ``ids``: int32 ``[T]`` tokens of the text with episodes (no special tokens);
    ``spans``: int64 ``[E, 5]`` rows ``[def_cue, def_start, def_end, use_start, use_end]`` in
    document token coordinates (``def_cue``: the token holding the first character of the
    definition's NAME, so that a sequence can be required to contain the name with its value);
    ``planned`` / ``injected``: episodes sampled / present after verification.
    """

    ids: np.ndarray
    spans: np.ndarray
    planned: int = 0
    injected: int = 0


def _random_name(rng: np.random.Generator, text: str, used: set[str]) -> str:
    """``ABC_DEFG``: two parts of 3-5 random capitals, new to the document."""
    while True:
        a, b = (int(x) for x in rng.integers(3, 6, size=2))
        letters = bytes((65 + rng.integers(0, 26, size=a + b)).astype(np.uint8).tolist()).decode()
        name = f"{letters[:a]}_{letters[a:]}"
        if name not in used and name not in text:
            used.add(name)
            return name


def _sample_targets(
    n_text: int, extra: int, cfg: EpisodeConfig, capacity: int, tail_min: int | None, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """``(def_line_position, distance)`` targets in final document coordinates, sorted.

    The final length is estimated from the expected number of inserted tokens; chunks that will
    be dropped (an incomplete tail unless kept) get no episodes.
    """
    ep_tokens = 2 * (_PREFIX_ESTIMATE + cfg.digits + 2)
    total = (n_text + extra) / max(1e-9, 1 - cfg.per_1k * ep_tokens / 1000)
    n_full, rest = divmod(int(total), capacity)
    lengths = [capacity] * n_full + ([rest] if tail_min is not None and rest >= tail_min else [])
    targets = []
    for k, length in enumerate(lengths):
        slack = cfg.digits + _PREFIX_ESTIMATE + MARGIN
        hi_d = length - slack if cfg.max_distance is None else min(cfg.max_distance, length - slack)
        m = int(np.floor(cfg.per_1k * length / 1000 + rng.random()))
        for _ in range(m):
            if hi_d < cfg.min_distance:
                break
            d = int(rng.integers(cfg.min_distance, hi_d + 1))
            pos = k * capacity + int(rng.integers(0, length - slack - d + 1))
            targets.append((pos, d))
    targets.sort()
    return targets


def _plan(
    text: str,
    bounds: np.ndarray,
    tokpos: np.ndarray,
    targets: list[tuple[int, int]],
    cands: list[_Candidate],
    cfg: EpisodeConfig,
    capacity: int,
    meter: _Meter,
):
    """Place episodes at line boundaries.

    Returns ``(placed, abandoned)``: ``placed`` lists the :class:`_Placement` of each placed
    episode; ``abandoned`` the candidates whose use found no boundary after their
    definition was counted in (later insertions pushed the window past the lines): the caller
    must plan again without them, since every position after their definition is off.

    ``bounds[b]``: character position of line boundary ``b``; ``tokpos[b]``: index of the first
    original token at or after it. The walk keeps ``shift`` = tokens inserted so far, so boundary
    ``b`` sits at ``tokpos[b] + shift`` in the final text as long as every insertion so far is at a
    boundary ``<= b``: events (a definition reaching its target, a use reaching its best boundary)
    are executed in boundary order. ``*_seq`` is the execution order, which orders lines inserted at
    the same boundary. A definition is placed only when some boundary can hold its use.
    """
    n_b = len(tokpos)
    dmax = cfg.max_distance if cfg.max_distance is not None else 1 << 62
    shift, cur, ti, seq = 0, 0, 0, 0
    pending: list[dict] = []
    placed, abandoned = [], []

    def cost(ci: int, use: bool, b: int) -> _LineCost:
        c = cands[ci]
        return _LineCost(
            *meter(c.use_line if use else c.def_line, c.value, _INDENT.match(text, int(bounds[b])).group(0))
        )

    def use_choice(e):
        guess = cost(e["cand"], True, min(max(cur, 0), n_b - 1)).pre
        b_hi = max(cur, int(np.searchsorted(tokpos, e["U"] - shift - guess, "left")))
        best = None
        for b in (b_hi - 1, b_hi):
            if cur <= b < n_b:
                u = int(tokpos[b]) + shift + cost(e["cand"], True, b).pre
                if e["lo"] <= u <= e["hi"] and (best is None or abs(u - e["U"]) < best[1]):
                    best = (b, abs(u - e["U"]))
        return None if best is None else best[0]

    while True:
        events = []  # (boundary, 0 = use / 1 = definition, tie-break, pending entry)
        for e in pending:
            b = use_choice(e)
            events.append((-1 if b is None else b, 0, e["U"], e))
        if ti < min(len(targets), len(cands)):
            b = max(cur, int(np.searchsorted(tokpos, targets[ti][0] - shift, "left")))
            if b < n_b:
                events.append((b, 1, 0, None))
            else:
                ti = len(targets)
        if not events:
            break
        b, kind, _, e = min(events, key=lambda x: x[:3])
        if kind == 0:
            pending.remove(e)
            if b < 0:
                abandoned.append(e["cand"])
                continue
            placed.append(_Placement(e["cand"], e["b_def"], b, e["seq"], seq))
            shift += cost(e["cand"], True, b).length
            cur, seq = b, seq + 1
            continue
        ci, d = ti, targets[ti][1]
        ti += 1
        pre, length, vlen = cost(ci, False, b)
        name_pos = int(tokpos[b]) + shift
        if name_pos % capacity < MARGIN:  # a cue on a sequence's first tokens could slip back
            continue
        p_val = name_pos + pre
        chunk_end = (name_pos // capacity + 1) * capacity
        use_pre = cost(ci, True, b).pre
        lo = p_val + max(cfg.min_distance + MARGIN, length - pre + use_pre)
        hi = min(p_val + dmax - MARGIN, chunk_end - vlen - MARGIN)
        if lo > hi:
            continue
        # is there a boundary >= b whose use value would land in [lo, hi]?
        after = shift + length + use_pre
        b1 = max(b, int(np.searchsorted(tokpos, lo - after, "left")))
        if b1 >= n_b or int(tokpos[b1]) + after > hi:
            continue
        shift += length
        pending.append({"cand": ci, "b_def": b, "seq": seq, "lo": lo, "hi": hi, "U": min(max(p_val + d, lo), hi)})
        cur, seq = b, seq + 1
    return placed, abandoned


def _build(text: str, bounds: np.ndarray, placed: list[_Placement], cands: list[_Candidate]):
    """Insert the planned lines (each with the indentation of the line it precedes).

    Returns the new text and per episode the character positions
    ``[def_name_start, def_value_start, def_value_end, use_value_start, use_value_end]``.
    """
    ins = sorted(
        [(p.def_boundary, p.def_seq, ei, False) for ei, p in enumerate(placed)]
        + [(p.use_boundary, p.use_seq, ei, True) for ei, p in enumerate(placed)]
    )
    pieces, pos, out_len = [], 0, 0
    chars = [[0] * 5 for _ in placed]
    for b, _, ei, is_use in ins:
        c = int(bounds[b])
        pieces.append(text[pos:c])
        out_len += c - pos
        pos = c
        cand = cands[placed[ei].cand]
        indent = _INDENT.match(text, c).group(0)
        line = indent + (cand.use_line if is_use else cand.def_line)
        v = out_len + line.index(cand.value)
        if is_use:
            chars[ei][3:5] = [v, v + len(cand.value)]
        else:
            chars[ei][0:3] = [out_len + len(indent), v, v + len(cand.value)]
        pieces.append(line)
        out_len += len(line)
    pieces.append(text[pos:])
    return "".join(pieces), chars


def _token_span(enc: Encoded, text: str, a: int, b: int) -> tuple[int, int] | None:
    """Tokens covering exactly ``text[a:b]`` (optionally with the one space before it), else None."""
    i0, i1 = enc.token_at(a), enc.token_at(b - 1) + 1
    if not 0 <= i0 < i1 <= len(enc.ids):
        return None
    s, e = enc.chars(i0)[0], enc.chars(i1 - 1)[1]
    if e != b or not (s == a or (s == a - 1 and text[a - 1] == " ")):
        return None
    return i0, i1


def _verify(enc: Encoded, text: str, chars, cfg: EpisodeConfig, capacity: int):
    """Token spans ``[def_cue, def_start, def_end, use_start, use_end]`` of the episodes that pass
    every check, and the indices of those that fail."""
    dmax = cfg.max_distance if cfg.max_distance is not None else 1 << 62
    spans, failed = [], []
    for i, (name_c, da, db, ua, ub) in enumerate(chars):
        d = _token_span(enc, text, da, db)
        u = _token_span(enc, text, ua, ub)
        ok = d is not None and u is not None and d[1] - d[0] == u[1] - u[0]
        if ok:
            cue = enc.token_at(name_c)
            ok = (
                np.array_equal(enc.ids[d[0] : d[1]], enc.ids[u[0] : u[1]])
                and cfg.min_distance <= u[0] - d[0] <= dmax
                and cue // capacity == (u[1] - 1) // capacity
            )
        if ok:
            spans.append([cue, d[0], d[1], u[0], u[1]])
        else:
            failed.append(i)
    return spans, failed


def _candidates(rng: np.random.Generator, n: int, text: str, digits: int, style: str) -> list[_Candidate]:
    used: set[str] = set()
    out = []
    templates = USE_TEMPLATES[style]
    for _ in range(n):
        name = _random_name(rng, text, used)
        value = str(int(rng.integers(10 ** (digits - 1), 10**digits)))
        use = templates[int(rng.integers(len(templates)))]
        out.append(
            _Candidate(
                name,
                value,
                DEF_TEMPLATE.format(name=name, value=value) + "\n",
                use.format(name=name, value=value) + "\n",
            )
        )
    return out


def inject_batch(
    texts: Sequence[str],
    encode: Callable[[Sequence[str]], list[Encoded]],
    cfg: EpisodeConfig | None,
    capacity: int,
    tail_min: int | None,
    extra_tokens: int,
    seeds: Sequence,
) -> list[DocEpisodes]:
    """Tokenize a batch of documents, injecting episodes when ``cfg`` asks for them.

    Args:
        texts: the documents.
        encode: batch encoder without special tokens (``tokenizer.Encoder``).
        cfg: episode settings; None or ``per_1k == 0``: plain tokenization.
        capacity: document tokens per sequence (``n - 1`` with BOS, else ``n``).
        tail_min: smallest kept tail in document tokens (None: tails are dropped).
        extra_tokens: tokens appended after the text (1 for EOS), counted in the length.
        seeds: per document, the entropy of its generator (e.g. ``[seed, doc_id]``).
    """
    base = encode(texts)
    empty = np.zeros((0, 5), dtype=np.int64)
    if cfg is None or cfg.per_1k == 0:
        return [DocEpisodes(e.ids, empty) for e in base]
    meter = _Meter(getattr(encode, "short", encode))
    results: list[DocEpisodes] = []
    plans: dict[int, _DocPlan] = {}  # documents still to (re)plan
    for i, (text, enc, seed) in enumerate(zip(texts, base, seeds)):
        rng = np.random.default_rng(list(seed) if isinstance(seed, (list, tuple)) else seed)
        targets = _sample_targets(len(enc.ids), extra_tokens, cfg, capacity, tail_min, rng)
        results.append(DocEpisodes(enc.ids, empty, planned=len(targets)))
        if targets:
            # line starts (the end of the text counts only when the text ends with a newline)
            bounds = np.array([0] + [m.end() for m in re.finditer("\n", text)], dtype=np.int64)
            tokpos = enc.first_from(bounds)
            plans[i] = _DocPlan(targets, _candidates(rng, len(targets), text, cfg.digits, cfg.style), bounds, tokpos)
    # plan, build, re-tokenize, verify; a document with failing episodes is planned again without
    # their targets (removing lines instead would shift every later episode out of place)
    while plans:
        built: dict[int, _Built] = {}
        for i, plan in plans.items():
            while True:
                keep = [j for j in range(len(plan.targets)) if j not in plan.excluded]
                placed, abandoned = _plan(
                    texts[i],
                    plan.bounds,
                    plan.tokpos,
                    [plan.targets[j] for j in keep],
                    [plan.candidates[j] for j in keep],
                    cfg,
                    capacity,
                    meter,
                )
                if not abandoned:
                    break
                plan.excluded.update(keep[a] for a in abandoned)
            placed = [replace(p, cand=keep[p.cand]) for p in placed]  # indices into plan.candidates
            if placed:
                built[i] = _Built(placed, *_build(texts[i], plan.bounds, placed, plan.candidates))
        encs = dict(zip(built, encode([doc.text for doc in built.values()])))
        nxt = {}
        for i, doc in built.items():
            spans, failed = _verify(encs[i], doc.text, doc.chars, cfg, capacity)
            if failed:
                plans[i].excluded.update(doc.placed[j].cand for j in failed)
                nxt[i] = plans[i]
                continue
            results[i] = DocEpisodes(
                encs[i].ids,
                np.asarray(spans, dtype=np.int64).reshape(-1, 5),
                planned=results[i].planned,
                injected=len(spans),
            )
        plans = nxt
    return results
