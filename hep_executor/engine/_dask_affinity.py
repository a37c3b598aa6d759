"""Affinity hints of the :class:`~hep_executor.engine._dask_manager.DaskManager`.

An affinity key (plain data from the caller: a file name, say) that ran on a
Dask worker is hinted back to that worker (``workers=[address]``,
``allow_other_workers=True``: loose, so Dask may still place it elsewhere),
while that worker holds no more than its share of hinted tasks.
"""

from __future__ import annotations

import collections
from typing import Callable

__all__ = ["AffinityHints"]


class AffinityHints:
    """Where each affinity key ran last, and how many hinted tasks each worker holds.

    Parameters
    ----------
    share_per_core : int
        Hinted tasks a worker may hold per core before a key that ran there goes unhinted.
    """

    def __init__(self, share_per_core: int = 2):
        self.share_per_core = share_per_core
        self._where: dict[str, str] = {}  # affinity key -> worker that ran it last
        self._hinted: collections.Counter = collections.Counter()

    def hint(self, key: str | None, cores_of: Callable[[str], int]) -> str | None:
        """The worker to hint for ``key`` (counted as held until :meth:`release`), or None."""
        where = self._where.get(key) if key else None
        if where is None or self._hinted[where] >= self.share_per_core * cores_of(where):
            return None
        self._hinted[where] += 1
        return where

    def release(self, worker: str) -> None:
        """A task hinted to ``worker`` finished, was cancelled or is resubmitted."""
        self._hinted[worker] -= 1

    def ran(self, key: str | None, worker: str | None) -> None:
        """``key`` ran on ``worker``: hint it there next."""
        if key and worker:
            self._where[key] = worker
