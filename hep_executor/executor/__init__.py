"""The coffea executor face: :class:`HepExecutor` (``processor.Runner(executor=HepExecutor(...))``).

Holds the executor (``_executor``), the workers that it and its clones
share (``_pool``), what it shows while Runner's calls run
(``_progress``), the metadata call's tasks (``_metadata_call``) and a
run's task rows and log files (``_task_logs``).

May import: analysis, engine, batch, errors, coffea. Imported by compat
and cli; never imports them.
"""

from __future__ import annotations

from hep_executor._lazy import lazy_exports

_EXPORTS = {
    "HepExecutor": ("hep_executor.executor._executor", "HepExecutor"),
    "WorkerPool": ("hep_executor.executor._pool", "WorkerPool"),
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
