"""User-facing errors.

Library functions raise ``ValueError`` for bad arguments (the message names the parameter, the
value and the valid range). Pipeline code raises :class:`UsageError` for bad *input* (a missing
file, a stale cache, an empty corpus): the CLI prints its message as one line, without a
traceback, and exits with code 2. The message should say what is wrong and how to fix it.
"""


class UsageError(Exception):
    """Bad input from the user: the CLI prints ``tokenweight: error: <message>`` and exits 2."""


EXIT_USAGE = 2


class ConfigError(ValueError):
    """A stage config that failed its ``validate()`` (:meth:`tokenweight.config.StageConfig.check`):
    a ``ValueError`` for Python callers; the CLI writes the field's name as its flag, prints one line
    and exits 2. ``config_class``: the config whose field the message names."""

    def __init__(self, message: str, config_class: type):
        super().__init__(message)
        self.config_class = config_class


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what a
    one-line error quotes of a failure it explains."""
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


class InputError(UsageError, ValueError):
    """Bad input to a library function that is also a command: a ``ValueError`` for Python callers
    (``tokenweight.scorecache.add_short_nll``), a :class:`UsageError` (one line, exit 2) for the CLI."""
