"""Lazy package exports: names resolved on first access (PEP 562).

Package ``__init__`` files use this so that importing a package (and the CLI's ``--help``) does
not pay for importing torch, transformers or matplotlib until a name that needs them is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, namespace: dict, exports: Mapping[str, str]) -> tuple[Callable, Callable]:
    """Return ``(__getattr__, __dir__)`` for ``package`` resolving ``exports`` (name -> module)."""

    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace.get("__all__", ())) | set(exports))

    return __getattr__, __dir__
