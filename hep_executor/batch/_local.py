"""Worker processes on this machine, under the batch-system face."""

from __future__ import annotations

from hep_executor.batch._base import BatchSystem
from hep_executor.engine import LocalProcesses

__all__ = ["LocalBatch"]


class LocalBatch(LocalProcesses, BatchSystem):
    """Start workers as child processes of this one (see :class:`LocalProcesses`)."""

    name = "local"
