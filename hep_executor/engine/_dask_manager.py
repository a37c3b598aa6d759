"""The DaskManager: the Manager's face over a ``dask.distributed`` cluster.

::

    client = distributed.Client(cluster)        # LocalCluster, SLURMCluster, a gateway's
    result = hep_executor.run(fileset, processor, manager=DaskManager(client))

Each task runs on a Dask worker inside :func:`_run_measured`, which
measures its wall time, CPU time and peak memory with the same
:mod:`~hep_executor.engine._monitor` code as our own slots, stops it with
:class:`~hep_executor.errors.ResourceExhaustedError` when its resident
memory goes over its allocation, and sends the measurements to the
manager as a Dask event (a small message; the value stays on the
worker). Results stay in Dask worker memory as futures: a
:class:`TaskResult` from this manager carries a :class:`RemotePayload`
instead of bytes, and :meth:`DaskManager.submit_payload` hands those
futures to the merge task, so partial results are merged where they
lie; only a value that the caller reads is gathered (and counted in
``stats["deserialized"]``).

Memory allocations become Dask worker resources (``resources={"MEMORY":
mb}``) when the workers declare a ``MEMORY`` resource. Affinity keys
(file names) become ``workers=`` hints, loose, for the worker that ran
the key last, while that worker is not already given more than its
share. A task whose Dask workers keep dying comes back as
:class:`~hep_executor.errors.WorkerLostError` (Dask's ``KilledWorker``);
results lost with a worker are recomputed by Dask.

Per-task peaks are exact with one thread per Dask worker process (the
peak mark is the process's); with more threads they are an upper bound.
"""

from __future__ import annotations

import collections
import ctypes
import hashlib
import itertools
import logging
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
import distributed
from dask.sizeof import sizeof

from hep_executor.engine import _monitor as monitor
from hep_executor.engine._results import TaskReport, TaskResult, failed
from hep_executor.engine._serialization import dumps_function, loads
from hep_executor.errors import ManagerClosedError, ResourceExhaustedError, WorkerLostError

__all__ = ["DaskManager", "RemotePayload"]

log = logging.getLogger(__name__)

_REPORT_GRACE = 5.0  # seconds to wait for a finished task's measurements to arrive
_WORKERS_TTL = 1.0  # seconds a scheduler_info() answer is reused
_GUARD_INTERVAL = 0.05


# ------------------------------------------------------------ worker side
class _OverAllocation(BaseException):
    """Raised asynchronously in a task's thread by its memory guard."""


class _MemoryGuard:
    """Watches this process's resident memory while a task runs; interrupts the task past ``limit_mb``."""

    def __init__(self, limit_mb: float):
        self.limit_mb = limit_mb
        self.fired_at = 0.0
        self._target = threading.get_ident()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="hep-memory-guard")

    def __enter__(self) -> _MemoryGuard:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self.fired_at:  # the interrupt may still be pending if the task ended just then
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._target), None)

    def _watch(self) -> None:
        pid = os.getpid()
        while not self._stop.wait(_GUARD_INTERVAL):
            rss = monitor.rss_mb(pid)
            if rss > self.limit_mb:
                self.fired_at = rss
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._target),
                                                           ctypes.py_object(_OverAllocation))
                return


def _call(fn, args, kwargs, limit_mb: int):
    if not limit_mb:
        return fn(*args, **kwargs)
    guard = _MemoryGuard(limit_mb)
    try:
        with guard:
            return fn(*args, **kwargs)
    except _OverAllocation:
        pass
    msg = f"resident memory {guard.fired_at:.0f} MB went over the task's {limit_mb} MB allocation"
    raise ResourceExhaustedError(msg, peak_mb=guard.fired_at, limit_mb=limit_mb)


def _run_measured(topic: str, fn, args: tuple, kwargs: dict, limit_mb: int):
    """Run ``fn(*args, **kwargs)`` on a Dask worker; send its measurements to ``topic``."""
    worker = distributed.get_worker()
    monitor.reset_peak()
    cpu0 = time.thread_time()  # this task's thread: the worker's own threads do not count
    started = time.time()
    t0 = time.perf_counter()
    status, nbytes = "error", 0
    try:
        value = _call(fn, args, kwargs, limit_mb)
        status, nbytes = "ok", sizeof(value)
        return value
    except ResourceExhaustedError:
        status = "exhausted"
        raise
    finally:
        worker.log_event(topic, {
            "key": distributed.get_worker().get_current_task(), "status": status,
            "wall": time.perf_counter() - t0, "cpu": time.thread_time() - cpu0,
            "peak_mb": monitor.peak_mb(), "started": started, "nbytes": nbytes, "worker": worker.address,
            "host": worker.ip, "slot": f"{worker.name}:{threading.get_ident()}"})


def _load_function(data: bytes):
    return cloudpickle.loads(data)


@dataclass(frozen=True)
class _Raw:
    """A serialized value among a merge task's inputs."""

    data: bytes
    compressed: bool


def _apply_to_values(fn, parts: list):
    """Call ``fn`` on a merge task's inputs: values (from futures) or :class:`_Raw` bytes."""
    return fn([loads(p.data, p.compressed) if isinstance(p, _Raw) else p for p in parts])


# ------------------------------------------------------------ manager side
@dataclass(eq=False)
class RemotePayload:
    """A result that stays in Dask worker memory; ``len()`` is its size there in bytes."""

    future: distributed.Future
    nbytes: int = 0

    def __len__(self) -> int:
        return self.nbytes


@dataclass
class DaskTaskResult(TaskResult):
    """A :class:`TaskResult` whose value is gathered from the Dask worker on first access."""

    @property
    def value(self) -> Any:
        if self.error is not None:
            raise self.error
        if not self._loaded:
            self._value = self.payload.future.result()
            self._loaded = True
            if self._on_load is not None:
                self._on_load()
        return self._value


@dataclass
class _Task:
    id: int
    category: str
    fn: Any
    args: tuple
    kwargs: dict
    cores: int
    memory_mb: int
    retries: int
    tag: Any
    affinity: str | None
    future: Any = None
    hint: str | None = None
    attempts: int = 0
    submitted: float = field(default_factory=time.time)


class DaskManager:
    """Runs submitted Python calls on the workers of a Dask cluster, with the Manager's face.

    Parameters
    ----------
    client : distributed.Client
        A connected client; the caller keeps it (``close()`` does not close it, unless ``close_client``).
    memory_resource : str
        Name of the worker resource that holds memory in MB (used when workers declare it).
    affinity : bool
        Send tasks with an affinity key to the worker that ran that key last (a loose hint).
    close_client : bool
        ``close()`` closes ``client`` too (never its cluster): for a client made for this manager.
    """

    def __init__(self, client: distributed.Client, *, memory_resource: str = "MEMORY",
                 affinity: bool = True, close_client: bool = False):
        self.client = client
        self.close_client = close_client
        self.memory_resource = memory_resource
        self.use_affinity = affinity
        self.stats: collections.Counter = collections.Counter()
        self._uid = uuid.uuid4().hex[:12]
        self._topic = f"hep-executor-reports-{self._uid}"
        self._ids = itertools.count(1)
        self._tasks: dict[int, _Task] = {}
        self._by_key: dict[str, int] = {}
        self._reports: dict[str, dict] = {}
        self._finished: queue.SimpleQueue = queue.SimpleQueue()
        self._functions: dict[int, tuple[Any, distributed.Future]] = {}
        self._where: dict[str, str] = {}  # affinity key -> worker that ran it last
        self._hinted: collections.Counter = collections.Counter()
        self._workers_cache: tuple[float, list[dict]] = (0.0, [])
        self._closed = False
        client.subscribe_topic(self._topic, self._on_report)

    # ------------------------------------------------------------ public face
    def submit(self, fn, *args, kwargs: dict | None = None, cores: int = 1, memory_mb: int = 0,
               category: str = "default", retries: int = 0, tag=None, affinity: str | None = None) -> int:
        """Queue ``fn(*args, **kwargs)`` on the cluster; return its task id (see :meth:`Manager.submit`)."""
        self._check_open()
        task = _Task(next(self._ids), category, fn, args, kwargs or {}, int(cores), int(memory_mb or 0),
                     int(retries), tag, affinity)
        self._tasks[task.id] = task
        self._launch(task)
        self.stats["submitted"] += 1
        return task.id

    def submit_payload(self, fn, payloads: list, *, cores: int = 1, memory_mb: int = 0,
                       category: str = "default", retries: int = 0, tag=None) -> int:
        """Queue ``fn(list_of_values)`` over earlier results, merged where they lie.

        ``payloads`` are ``(payload, compressed)`` pairs from :class:`TaskResult`:
        a :class:`RemotePayload` travels as its future (worker to worker), bytes as bytes.
        """
        parts = [p.future if isinstance(p, RemotePayload) else _Raw(p, compressed)
                 for p, compressed in payloads]
        return self.submit(_apply_to_values, fn, parts, cores=cores, memory_mb=memory_mb,
                           category=category, retries=retries, tag=tag)

    def load_payload(self, payload: tuple) -> Any:
        """The value of a ``(payload, compressed)`` pair from this manager: gathered, or loaded from bytes."""
        data, compressed = payload
        return data.future.result() if isinstance(data, RemotePayload) else loads(data, compressed)

    def wait(self, timeout: float | None = None) -> list[TaskResult]:
        """Return every finished task, blocking up to ``timeout`` s for the first one.

        Returns an empty list when nothing is submitted or nothing finished in time.
        """
        self._check_open()
        deadline = float("inf") if timeout is None else time.monotonic() + timeout
        retrieved: list[TaskResult] = []
        while True:
            block = not retrieved
            for task_id, key in self._drain(block, deadline):
                result = self._file(task_id, key)
                if result is not None:
                    retrieved.append(result)
            if retrieved or not self._tasks or time.monotonic() >= deadline:
                return retrieved

    def empty(self) -> bool:
        """Nothing waiting, running or finished-but-not-retrieved."""
        return not self._tasks

    def hungry(self) -> bool:
        """Whether more tasks would keep the workers busier."""
        return len(self._tasks) < 3 * self._cores()

    def cancel(self, task_id: int) -> bool:
        """Cancel a waiting or running task; return whether it was known."""
        task = self._tasks.pop(task_id, None)
        if task is None:
            return False
        self._forget(task)
        task.future.cancel()
        self.stats["cancelled"] += 1
        return True

    def workers(self) -> list[dict]:
        """The cluster's workers, as plain dicts (``worker_id``, ``host``, ``cores``, ``memory_mb``)."""
        when, cached = self._workers_cache
        if time.monotonic() - when < _WORKERS_TTL:
            return cached
        info = self.client.scheduler_info(n_workers=-1).get("workers", {})
        out = []
        for address, w in info.items():
            resources = w.get("resources") or {}
            memory = resources.get(self.memory_resource, (w.get("memory_limit") or 0) / 2**20)
            out.append({"worker_id": address, "host": w.get("host", ""), "cores": int(w.get("nthreads", 1)),
                        "memory_mb": int(memory), "resources": dict(resources), "name": w.get("name")})
        self._workers_cache = (time.monotonic(), out)
        return out

    def wait_for_workers(self, count: int, timeout: float = 30.0) -> int:
        """Wait until ``count`` Dask workers are connected or ``timeout``; return the count."""
        try:
            self.client.wait_for_workers(count, timeout=timeout)
        except (TimeoutError, distributed.TimeoutError):
            pass
        self._workers_cache = (0.0, [])
        return len(self.workers())

    def status(self) -> dict:
        """How much work there is and how many slots are free (running = at most the cores)."""
        cores = self._cores()
        running = min(len(self._tasks), cores)
        return {"tasks_waiting": len(self._tasks) - running, "tasks_running": running,
                "workers": len(self.workers()), "slots_free": cores - running,
                "hungry": max(0, len(self._tasks) - cores), "closing": self._closed,
                "scheduler": self.client.scheduler.address}

    def close(self) -> None:
        """Cancel unfinished tasks and stop listening for reports. Idempotent.

        The client stays open unless the manager was made with ``close_client``.
        """
        if self._closed:
            return
        self._closed = True
        futures = [t.future for t in self._tasks.values() if t.future is not None]
        futures += [f for _, f in self._functions.values()]
        self._tasks.clear()
        self._functions.clear()
        if futures and self.client.status == "running":
            self.client.cancel(futures)
        try:
            self.client.unsubscribe_topic(self._topic)
        except Exception:  # the client may be closing already
            log.debug("could not unsubscribe %s", self._topic, exc_info=True)
        if self.close_client:
            self.client.close()

    def __enter__(self) -> DaskManager:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ submitting
    def _launch(self, task: _Task) -> None:
        """Submit (or resubmit) ``task``'s call to the cluster."""
        task.attempts += 1
        key = f"hep-{task.category.split(':')[0]}-{self._uid}-{task.id}-{task.attempts}"
        options: dict[str, Any] = {"key": key, "pure": False}
        resources = self._resources(task)
        if resources:
            options["resources"] = resources
        task.hint = self._hint(task)
        if task.hint is not None:
            options.update(workers=[task.hint], allow_other_workers=True)
            self._hinted[task.hint] += 1
        fn = self._function_future(task.fn)
        self._by_key[key] = task.id  # before submitting: its report may come back at once
        task.future = self.client.submit(_run_measured, self._topic, fn, task.args, task.kwargs,
                                         task.memory_mb, **options)
        task.future.add_done_callback(lambda fut, tid=task.id: self._finished.put((tid, fut.key)))

    def _resources(self, task: _Task) -> dict:
        if not task.memory_mb:
            return {}
        declared = [w["resources"][self.memory_resource] for w in self.workers()
                    if self.memory_resource in w["resources"]]
        return {self.memory_resource: min(task.memory_mb, max(declared))} if declared else {}

    def _hint(self, task: _Task) -> str | None:
        """The worker that ran ``task``'s affinity key last, unless it already has its share of hints."""
        where = self._where.get(task.affinity) if self.use_affinity and task.affinity else None
        if where is None:
            return None
        cores = next((w["cores"] for w in self.workers() if w["worker_id"] == where), 0)
        return where if self._hinted[where] < 2 * cores else None

    def _function_future(self, fn) -> distributed.Future:
        """A future holding ``fn``, loaded once on a worker and copied to the others as they need it.

        It is a task, not scattered data, so Dask recomputes it if its worker is lost.
        """
        known = self._functions.get(id(fn))
        if known is not None and known[0] is fn:
            return known[1]
        data = dumps_function(fn)
        key = f"hep-function-{self._uid}-{hashlib.blake2b(data, digest_size=8).hexdigest()}"
        future = self.client.submit(_load_function, data, key=key, pure=False)
        self._functions[id(fn)] = (fn, future)
        return future

    # ------------------------------------------------------------ results
    def _on_report(self, event) -> None:
        """Topic handler (Dask's event loop): keep a task's measurements until its result is filed."""
        _, report = event
        if report.get("key") in self._by_key:
            self._reports[report["key"]] = report

    def _drain(self, block: bool, deadline: float) -> list[tuple[int, str]]:
        got = []
        if block:
            try:
                got.append(self._finished.get(timeout=max(0.0, min(deadline - time.monotonic(), 3600))))
            except queue.Empty:
                return got
        while True:
            try:
                got.append(self._finished.get_nowait())
            except queue.Empty:
                return got

    def _file(self, task_id: int, key: str) -> TaskResult | None:
        """Turn a finished future into a :class:`TaskResult` (None: stale, cancelled or retried)."""
        task = self._tasks.get(task_id)
        if task is None or task.future is None or task.future.key != key:
            return None
        future = task.future
        if future.status == "cancelled":
            return None
        error = future.exception() if future.status == "error" else None
        if isinstance(error, distributed.KilledWorker):
            return self._finish(task, self._lost(task, error), {})
        report = self._report(key)
        if error is not None and not isinstance(error, ResourceExhaustedError) \
                and task.attempts <= task.retries:
            self._forget(task)
            self.stats["retried"] += 1
            self._launch(task)
            return None
        result = self._result(task, report, error)
        if task.affinity and report.get("worker") and result.ok:
            self._where[task.affinity] = report["worker"]
        return self._finish(task, result, report)

    def _report(self, key: str) -> dict:
        """The measurements of the task ``key``; they travel apart from the result, so allow them a moment."""
        give_up = time.monotonic() + _REPORT_GRACE
        while key not in self._reports and time.monotonic() < give_up:
            time.sleep(0.001)
        report = self._reports.pop(key, None)
        if report is None:
            log.warning("no measurements arrived for Dask task %s", key)
            self.stats["reports_missing"] += 1
            return {}
        return report

    def _result(self, task: _Task, report: dict, error: BaseException | None) -> TaskResult:
        status = "ok" if error is None else "exhausted" if isinstance(error, ResourceExhaustedError) else "error"
        nbytes = int(report.get("nbytes", 0))
        summary = TaskReport(task.id, task.category, status, report.get("wall", 0.0), report.get("cpu", 0.0),
                             report.get("peak_mb", 0.0), task.cores, task.memory_mb, report.get("slot", ""),
                             report.get("host", ""), report.get("started", 0.0), task.attempts, nbytes)
        if error is None:
            return DaskTaskResult(task.id, summary, RemotePayload(task.future, nbytes), _on_load=self._count_load)
        if status == "exhausted":
            error = ResourceExhaustedError(
                f"task {task.id} ({task.category}) went over its memory allocation on "
                f"{summary.host or 'a Dask worker'}: {error}", peak_mb=error.peak_mb, limit_mb=task.memory_mb)
        else:
            _attach_traceback(error, task.future)
        return TaskResult(task.id, summary, error=error)

    def _lost(self, task: _Task, error: BaseException) -> TaskResult:
        self.stats["lost"] += 1
        lost = WorkerLostError(f"task {task.id} ({task.category}) killed its Dask worker too many times "
                               f"(the scheduler's allowed-failures): {error}")
        return failed(task.id, task.category, "lost", lost, attempts=task.attempts)

    def _finish(self, task: _Task, result: TaskResult, report: dict) -> TaskResult:
        self._tasks.pop(task.id, None)
        self._forget(task)
        result.tag = task.tag
        self.stats[result.report.status] += 1
        return result

    def _forget(self, task: _Task) -> None:
        if task.future is not None:
            self._by_key.pop(task.future.key, None)
            self._reports.pop(task.future.key, None)
        if task.hint is not None:
            self._hinted[task.hint] -= 1
            task.hint = None

    def _count_load(self) -> None:
        self.stats["deserialized"] += 1

    def _cores(self) -> int:
        return max(1, sum(w["cores"] for w in self.workers()))

    def _check_open(self) -> None:
        if self._closed:
            msg = "this DaskManager is closed; make a new one"
            raise ManagerClosedError(msg)


def _attach_traceback(error: BaseException, future) -> None:
    """Add the Dask worker's traceback to ``error`` as a note."""
    try:
        import traceback

        tb = "".join(traceback.format_tb(future.traceback()))
    except Exception:
        return
    error.remote_traceback = tb
    if hasattr(error, "add_note") and tb:
        error.add_note(f"Traceback on the Dask worker:\n{tb}")
