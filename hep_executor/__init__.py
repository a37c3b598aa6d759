"""hep_executor: a self-tuning Coffea executor on ZeroMQ workers.

The public API is the names in ``__all__``:

- :class:`HepExecutor`, a coffea ``ExecutorBase`` for ``processor.Runner``;
- :func:`run_uproot_job`, coffea 0.7's call;
- :func:`run`, the executor's own path, returning a :class:`RunResult`;
- :class:`Manager`, the engine (submit / wait / ...), with
  :class:`TaskResult`, :class:`TaskReport` and :class:`WorkerSpec`;
- :mod:`errors` and the error classes a user catches.

Public names are imported lazily, so ``import hep_executor`` stays cheap
(a worker does not pay for coffea until a task needs it).

Layers, top calls down (``import-linter`` contracts in pyproject.toml)::

    cli/                 the hep-executor command, configs, outputs, plots
    executor/, compat    the coffea faces
    analysis/            one run: metadata, chunk plan, tasks, reduction, coverage
    planning/            chunking, sizing, allocation, reduction: pure
    batch/               local, Slurm, HTCondor worker jobs; the factory
    engine/              manager, worker, protocol, transport, serialization
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_ERRORS = (
    "HepExecutorError", "ConfigError", "InputError", "FileMissingError", "CoverageError",
    "TaskError", "ChunkError", "WorkerLostError", "ResourceExhaustedError", "TaskTimeoutError",
)

_EXPORTS = {
    "HepExecutor": "hep_executor.executor",
    "run_uproot_job": "hep_executor.compat",
    "run": "hep_executor.analysis._runner",
    "RunResult": "hep_executor.analysis._runner",
    "Manager": "hep_executor.engine._manager",
    "TaskResult": "hep_executor.engine._results",
    "TaskReport": "hep_executor.engine._results",
    "WorkerSpec": "hep_executor.engine._spec",
    "errors": "hep_executor.errors",
    **{name: "hep_executor.errors" for name in _ERRORS},
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
