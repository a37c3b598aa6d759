"""The face every batch system offers: submit worker jobs, cancel them, ask their state."""

from __future__ import annotations

import abc
import shlex
import sys
from dataclasses import dataclass, field

from ..errors import ConfigError

__all__ = ["BatchSystem", "WorkerSpec", "get_batch_system"]


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker job asks for and where it connects.

    Parameters
    ----------
    manager : str
        The manager's address, ``tcp://HOST:PORT``.
    key_file : str or None
        Path of the shared key file (see ``hep-executor keygen``).
    cores, memory_mb, disk_mb : int
        Resources the worker advertises and the batch job requests.
    walltime : str or None
        Batch wall-time limit (``HH:MM:SS``), or None for the system default.
    python : str
        The Python interpreter that runs ``-m hep_executor.worker``.
    extra_args : tuple of str
        Further arguments for the worker command line.
    """

    manager: str
    key_file: str | None = None
    cores: int = 1
    memory_mb: int = 2000
    disk_mb: int = 4000
    walltime: str | None = None
    python: str = field(default_factory=lambda: sys.executable)
    extra_args: tuple[str, ...] = ()

    def command(self) -> list[str]:
        """The worker command line as an argument list."""
        cmd = [
            self.python, "-m", "hep_executor.worker",
            "--manager", self.manager,
            "--cores", str(self.cores),
            "--memory", str(self.memory_mb),
            "--disk", str(self.disk_mb),
        ]
        if self.key_file:
            cmd += ["--key-file", str(self.key_file)]
        return cmd + list(self.extra_args)

    def shell_command(self) -> str:
        """The worker command line as one shell-quoted string."""
        return shlex.join(self.command())


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
        from .local import LocalBatch

        return LocalBatch(**options)
    if name == "slurm":
        from .slurm import SlurmBatch

        return SlurmBatch(**options)
    if name == "condor":
        from .condor import CondorBatch

        return CondorBatch(**options)
    msg = f"unknown batch system {name!r}: choose one of 'local', 'slurm', 'condor'"
    raise ConfigError(msg)
