"""What a worker job asks for and where it connects: the worker command line."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field

__all__ = ["WorkerSpec"]


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
