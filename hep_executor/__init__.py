"""hep_executor: a self-tuning Coffea executor on ZeroMQ workers.

Public names are imported lazily, so ``import hep_executor`` stays cheap
(a worker does not pay for coffea until a task needs it).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Manager": "hep_executor.manager",
    "TaskResult": "hep_executor.results",
    "TaskReport": "hep_executor.results",
    "HepExecutor": "hep_executor.executor",
    "run_uproot_job": "hep_executor.compat",
    "run": "hep_executor.analysis",
    "errors": "hep_executor.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        msg = f"module 'hep_executor' has no attribute {name!r}"
        raise AttributeError(msg)
    mod = importlib.import_module(module)
    value = mod if name == "errors" else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
