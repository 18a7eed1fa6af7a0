"""The essay haystack: English prose that every CPython carries, in place of RULER's essays.

RULER's essay tasks (``niah_single_2``/``_3``, ``niah_multikey_1``, ``niah_multivalue``,
``niah_multiquery``: ``type_haystack: essay``) hide needles in Paul Graham's essays, which RULER
downloads. Nothing downloads here, so the default essay is prose that is present on every machine
that runs this package: the Python language reference as CPython ships it for ``help()``,
``pydoc_data/topics.py`` (part of CPython's ``Lib/``, so of every installation with the standard
library; a build that strips it gets a one-line error asking for ``--haystack FILE``; ~460 000
characters in 3.11). Only its prose is kept (:func:`prose`): paragraphs of whole
sentences; code examples, grammar rules, tables, headings and paragraphs that introduce a dropped
block are left out. What is left is running English text, the shape of an essay: in Python 3.11,
771 paragraphs, 190 000 characters, 30 000 words (longer lengths repeat it, as RULER repeats its
essays when a length asks for more words than they have).

The text is the running Python's: another Python version ships another reference, so samples
record :func:`essay_source` (the Python version and the text's sha256) and export fingerprints
cover the text itself. RULER's own file works too: ``--haystack PaulGrahamEssays.json`` (a JSON
object with a ``"text"`` string, :func:`read_essay_json`) gives RULER's exact haystack text.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sys
from pathlib import Path

_UNDERLINE = re.compile(r"[*=\-~^\"'+`#]{3,}")
_FOOTNOTES = re.compile(r"-\[ .* \]-")
_BULLET = re.compile(r"(\* |- |\d+\. )")
_NOT_PROSE = (">>>", "...", "|", "+-", "+=")
_SENTENCE_END = (".", "!", "?", '."', ".\u201d", ".)")


def prose(text: str) -> list[str]:
    """The sentences-only paragraphs of one pydoc topic, each joined onto one line.

    Paragraphs start at column 0 (a bullet item's text, marker removed, continues on the lines
    indented under it); dropped are indented blocks (code, grammar), doctest and table lines,
    headings (a line over an underline) with their underlines, footnote markers, and every
    paragraph that does not end a sentence (one ending with ``:`` introduced a dropped block).
    """
    lines = text.splitlines()
    out: list[str] = []
    cur: list[str] = []
    hang = 0  # indentation of a bullet item's continuation lines

    def close() -> None:
        if cur:
            out.append(" ".join(cur))
            cur.clear()

    for i, line in enumerate(lines):
        stripped = line.strip()
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        indent = len(line) - len(line.lstrip())
        if cur and hang and indent == hang and stripped:
            cur.append(stripped)
            continue
        bullet = _BULLET.match(line)
        junk = (
            not stripped
            or indent > 0
            or stripped.startswith(_NOT_PROSE)
            or _UNDERLINE.fullmatch(stripped)
            or _FOOTNOTES.fullmatch(stripped)
            or _UNDERLINE.fullmatch(nxt) is not None
        )
        if bullet or junk:
            close()
            hang = 0
            if bullet:
                cur.append(line[bullet.end() :].strip())
                hang = bullet.end()
            continue
        cur.append(stripped)
    close()
    return [p for p in out if p.endswith(_SENTENCE_END)]


@functools.lru_cache(maxsize=1)
def essay_text() -> str:
    """The default essay: the prose of ``pydoc_data.topics``, topics in the module's order.

    Raises:
        UsageError: this Python has no ``pydoc_data`` (a stripped-down build): pass a text instead.
    """
    try:
        from pydoc_data.topics import topics
    except ImportError:
        from tokenweight.errors import UsageError

        raise UsageError(
            "the essay haystack is the prose of Python's pydoc_data/topics.py, which this Python lacks: "
            "pass --haystack FILE (a text file, a folder, or RULER's PaulGrahamEssays.json)"
        ) from None
    paragraphs = [p for text in topics.values() for p in prose(text)]
    return "\n\n".join(paragraphs)


def essay_source() -> dict:
    """Where the default essay comes from: ``{"source", "python", "sha256", "characters"}``."""
    text = essay_text()
    return {
        "source": "pydoc_data.topics (prose)",
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "characters": len(text),
    }


def read_essay_json(path: str | Path) -> str:
    """The ``"text"`` of a RULER essay file (``PaulGrahamEssays.json``: ``{"text": str}``).

    Raises:
        UsageError: the file is not JSON or holds no ``"text"`` string.
    """
    from tokenweight.errors import UsageError

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"--haystack {str(path)!r} is not readable JSON ({e}): pass RULER's essay JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("text"), str) or not data["text"].strip():
        raise UsageError(
            f'--haystack {str(path)!r} is not an essay file: expected a JSON object {{"text": "..."}} '
            "as RULER's PaulGrahamEssays.json"
        )
    return data["text"]
