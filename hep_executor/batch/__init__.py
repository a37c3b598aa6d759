"""Ways to start and stop worker processes: on this machine, Slurm, HTCondor.

Each batch system is a :class:`~hep_executor.batch.base.BatchSystem`;
:func:`get_batch_system` picks one by name.
"""

from __future__ import annotations

from .base import BatchSystem, WorkerSpec, get_batch_system

__all__ = ["BatchSystem", "WorkerSpec", "get_batch_system"]
