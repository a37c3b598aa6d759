"""Lazy package exports: a layer names its API without importing it.

A package lists ``{name: (module, attribute)}`` (``attribute`` None for a
module itself) and gets a module ``__getattr__`` that imports the owning
module on first use, so ``import hep_executor.engine`` stays cheap and a
worker pays only for what it runs.
"""

from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, table: dict[str, tuple[str, str | None]]):
    """Return ``(__getattr__, __all__)`` for ``package`` exporting ``table``."""

    def __getattr__(name: str):
        entry = table.get(name)
        if entry is None:
            msg = f"module {package!r} has no attribute {name!r}"
            raise AttributeError(msg)
        module_name, attribute = entry
        module = importlib.import_module(module_name)
        value = module if attribute is None else getattr(module, attribute)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__, sorted(table)
