"""Where a task goes: an index of workers by load, so that placing a task costs O(log W).

:class:`FreeIndex` keeps every registered worker in a heap ordered by its
load (cores in use over cores offered). Picking a worker pops the least
loaded ones until one fits the task: with tasks of one shape the first
fits, and a full least-loaded worker means every worker is full, so the
search ends at once. Entries go stale when a worker's load changes; each
carries the worker's version and is dropped when it no longer matches,
and the heap is rebuilt when stale entries outnumber live ones.
"""

from __future__ import annotations

import heapq
import itertools

__all__ = ["FreeIndex"]

_MAX_TRIES = 64  # workers popped for one task before it counts as fitting none now


def _load(worker) -> float:
    return worker.used_cores / worker.cores


class FreeIndex:
    """Registered workers by load, least loaded first."""

    def __init__(self):
        self._heap: list = []
        self._version: dict[bytes, int] = {}
        self._workers: dict[bytes, object] = {}
        self._tick = itertools.count()

    def __len__(self) -> int:
        return len(self._workers)

    def touch(self, worker) -> None:
        """Add ``worker`` or note that its load changed."""
        version = self._version.get(worker.identity, 0) + 1
        self._version[worker.identity] = version
        self._workers[worker.identity] = worker
        heapq.heappush(self._heap, (_load(worker), next(self._tick), version, worker))
        if len(self._heap) > 4 * len(self._workers) + 64:
            self._rebuild()

    def remove(self, worker) -> None:
        """Forget ``worker`` (its entries go stale)."""
        self._workers.pop(worker.identity, None)
        self._version.pop(worker.identity, None)

    def pick(self, task, prefetch: int = 0):
        """The least loaded worker that takes ``task`` now, or None.

        A worker takes a task that fits in what it has free, or, with
        ``prefetch`` > 0, one it could hold when empty while it holds
        fewer than ``cores * (1 + prefetch)`` cores of work.
        """
        limit = 1 + prefetch
        popped, found = [], None
        while self._heap and len(popped) < _MAX_TRIES:
            entry = self._heap[0]
            load, _, version, worker = entry
            if self._version.get(worker.identity) != version:
                heapq.heappop(self._heap)  # stale
                continue
            if load >= limit:
                break  # the least loaded has no room: none has
            if worker.fits(task) or (prefetch and worker.could_ever_fit(task)):
                found = worker
                break
            popped.append(heapq.heappop(self._heap))
        for entry in popped:
            heapq.heappush(self._heap, entry)
        return found

    def has_room(self, prefetch: int = 0) -> bool:
        """Whether some worker holds less than ``cores * (1 + prefetch)`` cores of work."""
        while self._heap:
            load, _, version, worker = self._heap[0]
            if self._version.get(worker.identity) == version:
                return load < 1 + prefetch
            heapq.heappop(self._heap)
        return False

    def _rebuild(self) -> None:
        self._heap = [(_load(w), next(self._tick), self._version[i], w) for i, w in self._workers.items()]
        heapq.heapify(self._heap)
