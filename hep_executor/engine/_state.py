"""The manager's bookkeeping: tasks and workers, with explicit transitions.

Nothing here touches a socket. :class:`TaskTable` holds every task from
``submit`` to its end and every worker from registration to removal:

    waiting --assign--> dispatched --finish--> done
       ^                    |
       +----requeue---------+   (worker lost: kill count +1 if it was running)
                            |
                            +--> failed (kill count reached, or retries spent)

A worker's free resources are its advertised ones less those of the
tasks dispatched to it. A worker reports which of its tasks are running
(:attr:`WorkerRecord.running`); when it dies only those count a kill,
and the ones queued behind them go back to waiting without blame.
"""

from __future__ import annotations

import collections
import enum
import time
from dataclasses import dataclass, field

from hep_executor.engine._dispatch import FreeIndex
from hep_executor.engine._worker_state import remember_key

__all__ = ["TaskRecord", "TaskState", "TaskTable", "WorkerRecord", "remember_key"]


class TaskState(enum.Enum):
    """Where a task stands."""

    WAITING = "waiting"
    DISPATCHED = "dispatched"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(eq=False)
class TaskRecord:
    """One submitted task."""

    id: int
    fn_hash: str
    args: bytes
    cores: int
    memory_mb: int
    category: str
    retries: int
    state: TaskState = TaskState.WAITING
    worker: bytes | None = None
    attempts: int = 0
    worker_kills: int = 0
    dispatched_at: float = 0.0  # time.monotonic() of the last assign
    unfit_since: float | None = None  # time.monotonic() when it was first seen larger than every worker
    affinity: str | None = None
    max_wall_s: float = 0.0  # stopped on its worker after this long (0: no limit)
    copy_on: bytes | None = None  # the worker running a second copy of this straggler, if any
    copied: bool = False  # a straggler gets one copy, ever

    def holders(self) -> list[bytes]:
        """The workers running this task: its own, and the one with its copy."""
        return [w for w in (self.worker, self.copy_on) if w is not None]

    def wire(self) -> dict:
        """The task as it travels in a :class:`~hep_executor.engine._protocol.Tasks` item."""
        item = {"id": self.id, "fn": self.fn_hash, "cores": self.cores,
                "memory_mb": self.memory_mb, "category": self.category}
        if self.affinity is not None:
            item["affinity"] = self.affinity
        if self.max_wall_s:
            item["max_wall_s"] = self.max_wall_s
        return item


@dataclass(eq=False)
class WorkerRecord:
    """One registered worker and what is dispatched to it."""

    identity: bytes
    worker_id: str
    host: str
    pid: int
    cores: int
    memory_mb: int
    disk_mb: int
    last_seen: float = field(default_factory=time.monotonic)
    last_sent: float = field(default_factory=time.monotonic)
    tasks: dict = field(default_factory=dict)  # task id -> TaskRecord
    functions: set = field(default_factory=set)  # function hashes it holds
    used_cores: int = 0
    used_memory_mb: int = 0
    completed: int = 0
    running: set = field(default_factory=set)  # task ids the worker last said were running
    progress_at: float = field(default_factory=time.monotonic)  # its last result or running change
    affinity: collections.OrderedDict = field(default_factory=collections.OrderedDict)  # recent keys
    warm_mb: int = 0  # what its slots hold from task to task, as it last said: kept free

    @property
    def free_cores(self) -> int:
        return self.cores - self.used_cores

    def fits(self, task: TaskRecord) -> bool:
        """Whether ``task`` fits in what is free now.

        Memory is free when the worker's memory less its slots' warm memory
        holds it beside the tasks there; an idle worker takes any task its
        memory holds (the worker then keeps the task under what the warm
        slots leave).
        """
        if self.used_cores + task.cores > self.cores:
            return False
        if not self.tasks:
            return task.memory_mb <= self.memory_mb
        return self.used_memory_mb + self.warm_mb + task.memory_mb <= self.memory_mb

    def could_ever_fit(self, task: TaskRecord) -> bool:
        """Whether ``task`` fits in this worker when it is empty."""
        return task.cores <= self.cores and task.memory_mb <= self.memory_mb

    def describe(self) -> dict:
        """Plain-data view for :meth:`Manager.workers`."""
        return {"id": self.worker_id, "host": self.host, "pid": self.pid,
                "cores": self.cores, "memory_mb": self.memory_mb, "disk_mb": self.disk_mb,
                "running": len(self.tasks), "completed": self.completed, "warm_mb": self.warm_mb}


class TaskTable:
    """Tasks and workers of one manager.

    Parameters
    ----------
    max_worker_kills : int
        A task whose worker died under it this many times fails.
    affinity_keys : int
        Affinity keys remembered per worker core (the most recent).
    """

    def __init__(self, max_worker_kills: int = 3, affinity_keys: int = 4):
        self.max_worker_kills = max_worker_kills
        self.affinity_keys = affinity_keys
        self.tasks: dict[int, TaskRecord] = {}
        self.waiting: collections.deque[TaskRecord] = collections.deque()
        self.workers: dict[bytes, WorkerRecord] = {}
        self.index = FreeIndex()
        self.total_cores = 0
        self._shapes: collections.Counter = collections.Counter()  # (cores, memory_mb) of workers
        self._next_id = 1

    # -- tasks
    def add(self, fn_hash: str, args: bytes, *, cores: int = 1, memory_mb: int = 0,
            category: str = "default", retries: int = 0, affinity: str | None = None,
            max_wall_s: float = 0.0) -> TaskRecord:
        """Register a new waiting task and return it."""
        task = TaskRecord(self._next_id, fn_hash, args, cores, memory_mb, category, retries,
                          affinity=affinity, max_wall_s=max_wall_s)
        self._next_id += 1
        self.tasks[task.id] = task
        self.waiting.append(task)
        return task

    def assign(self, task: TaskRecord, worker: WorkerRecord) -> None:
        """Move a waiting task to ``worker``."""
        assert task.state is TaskState.WAITING
        task.state = TaskState.DISPATCHED
        task.worker = worker.identity
        task.attempts += 1
        task.dispatched_at = time.monotonic()
        if not worker.tasks:
            worker.progress_at = task.dispatched_at  # an idle worker's stall clock starts with its work
        worker.tasks[task.id] = task
        worker.used_cores += task.cores
        worker.used_memory_mb += task.memory_mb
        self.index.touch(worker)
        if task.affinity is not None:
            remember_key(worker.affinity, task.affinity, self.affinity_keys * worker.cores)

    def add_copy(self, task: TaskRecord, worker: WorkerRecord) -> None:
        """Run a second copy of the dispatched ``task`` on ``worker`` (a straggler's)."""
        task.copy_on = worker.identity
        task.copied = True
        worker.tasks[task.id] = task
        worker.used_cores += task.cores
        worker.used_memory_mb += task.memory_mb
        self.index.touch(worker)

    def drop_holder(self, task: TaskRecord, identity: bytes) -> bool:
        """``identity``'s run of ``task`` ended without a result; return True if another copy runs on."""
        if task.copy_on is None:
            return False
        other = task.copy_on if task.worker == identity else task.worker
        self._release_from(task, identity)
        task.worker, task.copy_on = other, None
        return True

    def _release_from(self, task: TaskRecord, identity: bytes) -> WorkerRecord | None:
        worker = self.workers.get(identity)
        if worker is not None and worker.tasks.pop(task.id, None) is not None:
            worker.used_cores -= task.cores
            worker.used_memory_mb -= task.memory_mb
            self.index.touch(worker)
        return worker

    def _release(self, task: TaskRecord) -> WorkerRecord | None:
        worker = self.workers.get(task.worker) if task.worker is not None else None
        for identity in task.holders():
            self._release_from(task, identity)
        task.worker = task.copy_on = None
        return worker

    def finish(self, task_id: int, ok: bool = True) -> TaskRecord | None:
        """A dispatched task came back; return it (None if unknown or no longer dispatched)."""
        task = self.tasks.get(task_id)
        if task is None or task.state is not TaskState.DISPATCHED:
            return None
        worker = self._release(task)
        if worker is not None:
            worker.completed += 1
        task.state = TaskState.DONE if ok else TaskState.FAILED
        del self.tasks[task_id]
        return task

    def retry(self, task_id: int) -> bool:
        """Send a dispatched task back to waiting if it has retries left."""
        task = self.tasks.get(task_id)
        if task is None or task.state is not TaskState.DISPATCHED or task.retries <= 0:
            return False
        task.retries -= 1
        self._release(task)
        task.state = TaskState.WAITING
        self.waiting.appendleft(task)
        return True

    def cancel(self, task_id: int) -> TaskRecord | None:
        """Cancel a waiting or dispatched task; return it, or None if unknown."""
        task = self.tasks.pop(task_id, None)
        if task is None:
            return None
        if task.state is TaskState.WAITING:
            try:
                self.waiting.remove(task)
            except ValueError:
                pass
        else:
            self._release(task)
        task.state = TaskState.CANCELLED
        return task

    # -- workers
    def add_worker(self, worker: WorkerRecord) -> None:
        self.workers[worker.identity] = worker
        self._shapes[(worker.cores, worker.memory_mb)] += 1
        self.total_cores += worker.cores
        self.index.touch(worker)

    def could_any_fit(self, task: TaskRecord) -> bool:
        """Whether some registered worker could hold ``task`` when empty."""
        return any(c >= task.cores and m >= task.memory_mb for c, m in self._shapes)

    def largest_worker(self) -> tuple[int, int]:
        """``(cores, memory_mb)`` of the worker with the most memory (then cores); (0, 0) if none."""
        return max(self._shapes, key=lambda s: (s[1], s[0]), default=(0, 0))

    def remove_worker(self, identity: bytes, *, counts_as_kill: bool = True
                      ) -> tuple[list[TaskRecord], list[TaskRecord]]:
        """Remove a worker; requeue its tasks.

        Returns ``(requeued, failed)``: a task whose kill count reaches
        ``max_worker_kills`` fails instead of going back to waiting.
        """
        worker = self.workers.pop(identity, None)
        if worker is None:
            return [], []
        self.index.remove(worker)
        self.total_cores -= worker.cores
        self._shapes[(worker.cores, worker.memory_mb)] -= 1
        if not self._shapes[(worker.cores, worker.memory_mb)]:
            del self._shapes[(worker.cores, worker.memory_mb)]
        requeued, failed = [], []
        suspects = _suspects(worker) if counts_as_kill else set()
        for task in sorted(worker.tasks.values(), key=lambda t: t.id, reverse=True):
            if task.copy_on is not None:  # its other copy runs on: nothing to requeue or blame
                task.worker = task.copy_on if task.worker == identity else task.worker
                task.copy_on = None
                continue
            task.worker = None
            if task.id in suspects:
                task.worker_kills += 1
            if task.worker_kills >= self.max_worker_kills:
                task.state = TaskState.FAILED
                del self.tasks[task.id]
                failed.append(task)
            else:
                task.state = TaskState.WAITING
                self.waiting.appendleft(task)
                requeued.append(task)
        worker.tasks.clear()
        return requeued, failed

    def note_running(self, worker: WorkerRecord, ids) -> None:
        """Record the tasks ``worker`` says are running now."""
        worker.running = set(ids)

    def task_killed_worker(self, task_id: int) -> tuple[str, TaskRecord | None]:
        """A task's process died on a worker that lives on.

        Returns ``("requeued", task)`` or ``("failed", task)`` by its kill count.
        """
        task = self.tasks.get(task_id)
        if task is None or task.state is not TaskState.DISPATCHED:
            return "unknown", None
        self._release(task)
        task.worker_kills += 1
        if task.worker_kills >= self.max_worker_kills:
            task.state = TaskState.FAILED
            del self.tasks[task_id]
            return "failed", task
        task.state = TaskState.WAITING
        self.waiting.appendleft(task)
        return "requeued", task

    # -- views
    @property
    def n_waiting(self) -> int:
        return len(self.waiting)

    @property
    def n_dispatched(self) -> int:
        return len(self.tasks) - len(self.waiting)

    def empty(self) -> bool:
        """No task waiting or dispatched."""
        return not self.tasks


def _suspects(worker: WorkerRecord) -> set:
    """Ids of the tasks that were running when ``worker`` died.

    Those it last reported running; if it reported none of the tasks it
    holds (it died before saying so), the oldest ``cores`` dispatched to it.
    """
    running = worker.running & worker.tasks.keys()
    if running:
        return running
    return set(list(worker.tasks)[:worker.cores])
