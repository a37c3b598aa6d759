"""The face every batch system offers: submit worker jobs, cancel them, ask their state."""

from __future__ import annotations

import abc

from hep_executor.engine import WorkerSpec
from hep_executor.errors import ConfigError

__all__ = ["BatchSystem", "WorkerSpec", "get_batch_system"]


class BatchSystem(abc.ABC):
    """Starts worker jobs and stops them.

    Subclasses implement :meth:`submit`, :meth:`cancel` and :meth:`status`.
    Job ids are strings whatever the system.
    """

    name: str = "base"

    @abc.abstractmethod
    def submit(self, spec: WorkerSpec, count: int = 1) -> list[str]:
        """Submit ``count`` worker jobs; return their job ids."""

    @abc.abstractmethod
    def cancel(self, job_ids: list[str]) -> None:
        """Cancel (or kill) the given jobs; unknown or finished ids are ignored."""

    @abc.abstractmethod
    def status(self, job_ids: list[str]) -> dict[str, str]:
        """Map each job id to ``"pending"``, ``"running"`` or ``"done"``."""

    def close(self) -> None:
        """Release whatever the batch system holds (default: nothing)."""


def get_batch_system(name: str, **options) -> BatchSystem:
    """Return the batch system called ``name`` (``local``, ``slurm``, ``condor``)."""
    if name == "local":
        from hep_executor.batch._local import LocalBatch

        return LocalBatch(**options)
    if name == "slurm":
        from hep_executor.batch._slurm import SlurmBatch

        return SlurmBatch(**options)
    if name == "condor":
        from hep_executor.batch._condor import CondorBatch

        return CondorBatch(**options)
    msg = f"unknown batch system {name!r}: choose one of 'local', 'slurm', 'condor'"
    raise ConfigError(msg)
