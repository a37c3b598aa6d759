"""Where a task goes: an index of workers by load, so that placing a task costs O(log W).

:class:`DispatchSteps` is the manager's dispatch step (a part of
:class:`~hep_executor.engine._manager.Manager`): affinity first, then each
waiting task to the least loaded worker that takes it, then one message
per worker. It works on the manager's ``table``, ``endpoint``, ``stats``,
``_functions``, ``_wall_ewma``, ``prefetch``, ``unfit_grace_s`` and
``_local_target``.

:class:`FreeIndex` keeps every registered worker in a heap ordered by its
load (cores in use over cores offered). Picking a worker pops the least
loaded ones until one fits the task: with tasks of one shape the first
fits, and a full least-loaded worker means every worker is full, so the
search ends at once. A change of load only marks the worker; its new
entry is pushed when the index is next read (a worker whose load changes
ten times between two dispatch passes costs one push). Entries go stale
when a worker's load changes; each carries the worker's version and is
dropped when it no longer matches, and the heap is rebuilt when stale
entries outnumber live ones.
"""

from __future__ import annotations

import heapq
import itertools
import time

from hep_executor.engine import _protocol as protocol
from hep_executor.engine._results import failed
from hep_executor.errors import TaskError

__all__ = ["DispatchSteps", "FreeIndex"]

_PREFETCH_SECONDS = 0.05  # queue about this much work per worker when tasks are short
_MAX_PREFETCH = 64
_LOOKAHEAD = 64  # waiting tasks examined for one whose affinity key a free worker holds

_SEND_GROUP = 64  # Tasks messages signed before they are sent back to back ...
_SEND_GROUP_TASKS = 512  # ... or fewer, once they carry this many tasks

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
        self._changed: dict[bytes, object] = {}  # workers whose load changed since the last read

    def __len__(self) -> int:
        return len(self._workers)

    def touch(self, worker) -> None:
        """Add ``worker`` or note that its load changed."""
        self._workers[worker.identity] = worker
        self._changed[worker.identity] = worker

    def _push_changed(self) -> None:
        """Give each worker whose load changed a fresh entry (its older ones go stale)."""
        for identity, worker in self._changed.items():  # remove() drops a worker from here too
            version = self._version.get(identity, 0) + 1
            self._version[identity] = version
            heapq.heappush(self._heap, (_load(worker), next(self._tick), version, worker))
        self._changed.clear()
        if len(self._heap) > 4 * len(self._workers) + 64:
            self._rebuild()

    def remove(self, worker) -> None:
        """Forget ``worker`` (its entries go stale)."""
        self._workers.pop(worker.identity, None)
        self._version.pop(worker.identity, None)
        self._changed.pop(worker.identity, None)

    def pick(self, task, prefetch: int = 0):
        """The least loaded worker that takes ``task`` now, or None.

        A worker takes a task that fits in what it has free, or, with
        ``prefetch`` > 0, one it could hold when empty while it holds
        fewer than ``cores * (1 + prefetch)`` cores of work.
        """
        if self._changed:
            self._push_changed()
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
        if self._changed:
            self._push_changed()
        while self._heap:
            load, _, version, worker = self._heap[0]
            if self._version.get(worker.identity) == version:
                return load < 1 + prefetch
            heapq.heappop(self._heap)
        return False

    def _rebuild(self) -> None:
        self._heap = [(_load(w), next(self._tick), self._version[i], w) for i, w in self._workers.items()]
        heapq.heapify(self._heap)


class DispatchSteps:
    """The manager's dispatch step (a part of the Manager class)."""

    def _prefetch_depth(self, category: str) -> int:
        wall = self._wall_ewma.get(category)
        if not self.prefetch or wall is None or wall >= _PREFETCH_SECONDS:
            return 0
        return min(_MAX_PREFETCH, int(_PREFETCH_SECONDS / max(wall, 1e-4)))

    def _dispatch_waiting_tasks(self) -> int:
        """Place waiting tasks on workers (affinity first), then send each worker its batch."""
        waiting = self.table.waiting
        if not waiting or not self.table.workers:
            return 0
        batches: dict[bytes, list] = {}
        self._dispatch_affine(waiting, batches)
        self._place_waiting(waiting, batches)
        return self._send_batches(batches)

    def _place_waiting(self, waiting, batches: dict) -> None:
        """Give each waiting task the least loaded worker that takes it; set aside those none takes now.

        A task set aside does not stop the ones behind it; the pass ends
        when no worker has room left. Tasks of a shape that found no worker
        in this pass are set aside without a search.
        """
        index = self.table.index
        skipped: list = []
        unplaced: set = set()  # (cores, memory_mb, prefetch) that found no worker in this pass
        depth: dict[str, int] = {}  # prefetch depth per category, fixed for this pass
        most_prefetch = 0
        while waiting:
            task = waiting.popleft()
            if task.category not in depth:
                depth[task.category] = self._prefetch_depth(task.category)
                most_prefetch = max(most_prefetch, depth[task.category])
            shape = (task.cores, task.memory_mb, depth[task.category])
            worker = None if shape in unplaced else index.pick(task, depth[task.category])
            if worker is None:
                unplaced.add(shape)
                if not self._fail_if_too_big(task):
                    skipped.append(task)
                if not index.has_room(most_prefetch):
                    break  # every worker is full: nothing later in the queue can go either
                continue
            self.table.assign(task, worker)
            batches.setdefault(worker.identity, []).append(task)
        waiting.extendleft(reversed(skipped))

    def _send_batches(self, batches: dict) -> int:
        """Send each worker its batch, one message each; return the tasks sent.

        Small messages are signed a group at a time and then sent back to
        back, so that ZeroMQ's I/O thread is woken once for a group rather
        than once for each message; a group closes at :data:`_SEND_GROUP`
        messages or :data:`_SEND_GROUP_TASKS` tasks, so the first workers
        do not wait long for theirs.
        """
        sent = 0
        group: list = []
        tasks_in_group = 0
        for identity, tasks in batches.items():
            group.append((identity, tasks, *self._tasks_message(identity, tasks)))
            tasks_in_group += len(tasks)
            if len(group) >= _SEND_GROUP or tasks_in_group >= _SEND_GROUP_TASKS:
                sent += self._send_group(group)
                group, tasks_in_group = [], 0
        sent += self._send_group(group)
        self.stats["dispatched"] += sent
        return sent

    def _send_group(self, group: list) -> int:
        """Send prepared Tasks messages ``(identity, tasks, frames, new_fns)``; return the tasks sent."""
        return sum([self._send_tasks_message(*prepared) for prepared in group])

    def _tasks_message(self, identity: bytes, tasks: list) -> tuple[list, list]:
        """The signed frames of the :class:`~protocol.Tasks` message of ``tasks`` to worker ``identity``,
        and the hashes of the functions it carries (those the worker does not hold yet)."""
        worker = self.table.workers[identity]
        new_fns = list(dict.fromkeys(t.fn_hash for t in tasks if t.fn_hash not in worker.functions))
        payloads = [self._functions[h] for h in new_fns] + [t.args for t in tasks]
        msg = protocol.Tasks([t.wire() for t in tasks], new_fns)
        return self.endpoint.prepare(msg, payloads, peer=identity), new_fns

    def _send_tasks_message(self, identity: bytes, tasks: list, frames: list, new_fns: list) -> int:
        """Send one prepared Tasks message; return the tasks sent (0: the worker is gone, and removed)."""
        if not self.endpoint.send_frames(frames, peer=identity):
            self._remove_worker(identity, counts_as_kill=True)
            return 0
        worker = self.table.workers[identity]
        worker.functions.update(new_fns)
        if new_fns:
            self.stats["function_bytes_sent"] += sum(len(self._functions[h]) for h in new_fns)
        worker.last_sent = time.monotonic()
        return len(tasks)

    def _fail_if_too_big(self, task) -> bool:
        """Fail ``task`` if it has been larger than every worker for the grace period; return whether."""
        if self.table.could_any_fit(task):
            task.unfit_since = None
            return False
        now = time.monotonic()
        if task.unfit_since is None:
            task.unfit_since = now
        local_only_all_up = self._local_target and len(self.table.workers) >= self._local_target
        if now - task.unfit_since < self.unfit_grace_s and not local_only_all_up:
            return False
        self._fail_unfit(task)
        return True

    def _dispatch_affine(self, waiting, batches: dict) -> None:
        """Give each free worker the first waiting tasks (within the look-ahead) whose affinity key it holds."""
        if not any(t.affinity is not None for t in itertools.islice(waiting, _LOOKAHEAD)):
            return
        free = [w for w in self.table.workers.values() if w.affinity and w.free_cores > 0]
        if not free:
            return
        head = [waiting.popleft() for _ in range(min(_LOOKAHEAD, len(waiting)))]
        taken: set[int] = set()
        for worker in free:
            for task in head:
                if task.id not in taken and task.affinity in worker.affinity and worker.fits(task):
                    self.table.assign(task, worker)
                    batches.setdefault(worker.identity, []).append(task)
                    taken.add(task.id)
                    if worker.free_cores <= 0:
                        break
        waiting.extendleft(reversed([t for t in head if t.id not in taken]))

    def _fail_unfit(self, task) -> None:
        self.table.tasks.pop(task.id, None)
        cores, memory_mb = self.table.largest_worker()
        error = TaskError(
            f"task {task.id} ({task.category}) asks for {task.cores} cores and {task.memory_mb} MB, "
            f"more than the largest worker offers ({cores} cores, {memory_mb} MB) for "
            f"{self.unfit_grace_s:g} s (Manager(unfit_grace_s=...)): ask for less, or start larger workers")
        result = failed(task.id, task.category, "error", error)
        result.tag = self._tags.pop(task.id, None)
        self._deliver(task, result)
