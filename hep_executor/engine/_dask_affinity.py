"""Affinity hints of the :class:`~hep_executor.engine._dask_manager.DaskManager`.

An affinity key is plain data from the caller (a file name, say): tasks
with the same key run fastest where the key is warm (the file already
open in that Dask worker process). Each key becomes a loose hint
(``workers=[address]``, ``allow_other_workers=True``, so Dask may still
place it elsewhere):

- to the key's home: the worker where it is warm, i.e. where it ran or was
  hinted recently, most often (a key counts as warm where it is hinted, so
  its next tasks follow before the first one ends); each worker remembers
  its last ``keys_per_worker`` keys, as many as its process keeps warm;
- to the least loaded worker when the key is warm nowhere, or when its home
  holds ``share_per_core`` hinted tasks per core more than the least loaded
  worker: a new key is spread over the workers, and a busy key spills over
  to keep an idle worker fed, without moving its home.

Load is counted as hinted tasks held per core, so keeping every keyed
task hinted keeps the workers evenly fed and leaves Dask's work stealing
little to move.
"""

from __future__ import annotations

import collections

__all__ = ["AffinityHints"]


class AffinityHints:
    """Where each affinity key is warm, and how many hinted tasks each worker holds.

    Parameters
    ----------
    share_per_core : int
        Hinted tasks per core a key's home may hold above the least loaded worker before the key's
        next task goes to that worker.
    keys_per_worker : int
        Affinity keys a worker keeps warm (its process's cache of open files).
    """

    def __init__(self, share_per_core: int = 3, keys_per_worker: int = 4):
        self.share_per_core = share_per_core
        self.keys_per_worker = keys_per_worker
        self._warm: dict[str, collections.OrderedDict] = collections.defaultdict(collections.OrderedDict)
        self._held: collections.Counter = collections.Counter()

    def hint(self, key: str | None, workers: dict[str, int]) -> str | None:
        """The worker to hint for ``key`` among ``workers`` (address -> cores), held until :meth:`release`.

        None when the task has no key or no worker is known.
        """
        if not key or not workers:
            return None
        warm = [w for w in workers if key in self._warm[w]]
        # the worker that ran the key most stays its home: a task spilled elsewhere does not split the key
        pick = max(warm, key=lambda w: (self._warm[w][key], -self._load(w, workers)[0])) if warm else None
        least = min(workers, key=lambda w: self._load(w, workers))
        if pick is None or self._held[pick] - self._held[least] >= self.share_per_core * max(1, workers[pick]):
            pick = least
        self._held[pick] += 1
        self.ran(key, pick)  # warm there from now on: the key's next tasks follow before this one ends
        return pick

    def release(self, worker: str) -> None:
        """A task hinted to ``worker`` finished, was cancelled or is resubmitted."""
        self._held[worker] -= 1

    def ran(self, key: str | None, worker: str | None) -> None:
        """``key`` ran on ``worker``: it is warm there now (the worker's oldest key drops out)."""
        if not key or not worker:
            return
        keys = self._warm[worker]
        keys[key] = keys.get(key, 0) + 1  # how often it ran or was hinted there
        keys.move_to_end(key)
        while len(keys) > self.keys_per_worker:
            keys.popitem(last=False)

    def _load(self, worker: str, workers: dict[str, int]) -> tuple[float, str]:
        return self._held[worker] / max(1, workers[worker]), worker
