"""Batch: start and stop worker jobs on this machine, Slurm or HTCondor, and the factory.

Each batch system is a :class:`~hep_executor.batch.base.BatchSystem`;
:func:`get_batch_system` picks one by name. The factory keeps a number of
worker jobs alive while a manager has work.

May import: engine (the worker command line, the key, the status client)
and errors. Never imports analysis, planning or cli.
"""

from __future__ import annotations

from hep_executor.batch.base import BatchSystem, WorkerSpec, get_batch_system

__all__ = ["BatchSystem", "WorkerSpec", "get_batch_system"]
