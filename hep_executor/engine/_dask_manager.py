"""The DaskManager: the Manager's face over a ``dask.distributed`` cluster.

::

    client = distributed.Client(cluster)        # LocalCluster, SLURMCluster, a gateway's
    result = hep_executor.run(fileset, processor, manager=DaskManager(client))

Each task runs on a Dask worker inside
:func:`~hep_executor.engine._dask_tasks.run_measured`, which measures it
with the same monitor code as our own slots, stops it past its memory
allocation and sends the measurements here as a Dask event. Results stay
in Dask worker memory as futures: a :class:`TaskResult` from this manager
carries a :class:`~hep_executor.engine._dask_results.RemotePayload` instead
of bytes, and :meth:`DaskManager.submit_payload` hands those futures to the
merge task, so partial results are merged where they lie; only a value
that the caller reads is gathered (and counted in ``stats["deserialized"]``).

Memory allocations become Dask worker resources (``resources={"MEMORY":
mb}``) when the workers declare a ``MEMORY`` resource. Affinity keys
(file names) become loose ``workers=`` hints
(:mod:`~hep_executor.engine._dask_affinity`). A task whose Dask workers
keep dying comes back as :class:`~hep_executor.errors.WorkerLostError`
(Dask's ``KilledWorker``); results lost with a worker are recomputed by Dask.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import logging
import time
import uuid
from typing import Any

import distributed

from hep_executor.engine._dask_affinity import AffinityHints
from hep_executor.engine._dask_inbox import Inbox
from hep_executor.engine._dask_results import DaskTask, RemotePayload, build_result, lost_result
from hep_executor.engine._dask_tasks import Raw, apply_to_values, load_function, run_measured
from hep_executor.engine._results import TaskResult
from hep_executor.engine._serialization import dumps_function, loads
from hep_executor.errors import ManagerClosedError, ResourceExhaustedError

__all__ = ["DaskManager", "RemotePayload"]

log = logging.getLogger(__name__)

_WORKERS_TTL = 1.0  # seconds a scheduler_info() answer is reused


class DaskManager:
    """Runs submitted Python calls on the workers of a Dask cluster, with the Manager's face.

    Parameters
    ----------
    client : distributed.Client
        A connected client; the caller keeps it (``close()`` does not close it, unless ``close_client``).
    memory_resource : str
        Name of the worker resource that holds memory in MB (used when workers declare it).
    affinity : bool
        Send tasks with an affinity key where that key is warm (a loose hint; see
        :class:`~hep_executor.engine._dask_affinity.AffinityHints`).
    worker_keys : int
        Affinity keys a Dask worker process keeps warm: the size of the caller's per-process
        cache (the analysis passes its open-file cache's, ``WORKER_SETUP["worker_slot_keys"]``).
    close_client : bool
        ``close()`` closes ``client`` too (never its cluster): for a client made for this manager.
    cluster : object, optional
        A cluster object made for this manager (a dask-gateway's ``GatewayCluster``): ``close()``
        calls its ``close()`` after the client's (a gateway's cluster shuts down only if started here).
    """

    def __init__(self, client: distributed.Client, *, memory_resource: str = "MEMORY",
                 affinity: bool = True, worker_keys: int = 4, close_client: bool = False, cluster=None):
        self.client = client
        self.close_client = close_client
        self.cluster = cluster
        self.memory_resource = memory_resource
        self.use_affinity = affinity
        self.worker_keys = worker_keys
        self.stats: collections.Counter = collections.Counter()
        self._uid = uuid.uuid4().hex[:12]
        self._topic = f"hep-executor-reports-{self._uid}"
        self._ids = itertools.count(1)
        self._tasks: dict[int, DaskTask] = {}
        self._functions: dict[int, tuple[Any, distributed.Future]] = {}
        self._affinity = AffinityHints(keys_per_worker=worker_keys)
        self._workers_cache: tuple[float, list[dict]] = (0.0, [])
        self._closed = False
        self._inbox = Inbox(client, self._topic)

    # ------------------------------------------------------------ public face
    def submit(self, fn, *args, kwargs: dict | None = None, cores: int = 1, memory_mb: int = 0,
               category: str = "default", retries: int = 0, tag=None, affinity: str | None = None) -> int:
        """Queue ``fn(*args, **kwargs)`` on the cluster; return its task id (see :meth:`Manager.submit`)."""
        self._check_open()
        task = DaskTask(next(self._ids), category, fn, args, kwargs or {}, int(cores), int(memory_mb or 0),
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
        parts = [p.future if isinstance(p, RemotePayload) else Raw(p, compressed)
                 for p, compressed in payloads]
        return self.submit(apply_to_values, fn, parts, cores=cores, memory_mb=memory_mb,
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
            for task_id, key in self._inbox.drain(block, deadline):
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
        self._inbox.close()
        if self.close_client:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> DaskManager:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ submitting
    def _launch(self, task: DaskTask) -> None:
        """Submit (or resubmit) ``task``'s call to the cluster."""
        task.attempts += 1
        key = f"hep-{task.category.split(':')[0]}-{self._uid}-{task.id}-{task.attempts}"
        options: dict[str, Any] = {"key": key, "pure": False}
        resources = self._resources(task)
        if resources:
            options["resources"] = resources
        task.hint = self._affinity.hint(task.affinity, self._worker_cores()) if self.use_affinity else None
        if task.hint is not None:
            options.update(workers=[task.hint], allow_other_workers=True)
        fn = self._function_future(task.fn)
        self._inbox.expect(key, task.id)
        task.future = self.client.submit(run_measured, self._topic, fn, task.args, task.kwargs,
                                         task.memory_mb, **options)
        self._inbox.watch(task.future, task.id)

    def _resources(self, task: DaskTask) -> dict:
        if not task.memory_mb:
            return {}
        declared = [w["resources"][self.memory_resource] for w in self.workers()
                    if self.memory_resource in w["resources"]]
        return {self.memory_resource: min(task.memory_mb, max(declared))} if declared else {}

    def _worker_cores(self) -> dict[str, int]:
        return {w["worker_id"]: w["cores"] for w in self.workers()}

    def _function_future(self, fn) -> distributed.Future:
        """A future holding ``fn``, loaded once on a worker and copied to the others as they need it.

        It is a task, not scattered data, so Dask recomputes it if its worker is lost.
        """
        known = self._functions.get(id(fn))
        if known is not None and known[0] is fn:
            return known[1]
        data = dumps_function(fn)
        key = f"hep-function-{self._uid}-{hashlib.blake2b(data, digest_size=8).hexdigest()}"
        future = self.client.submit(load_function, data, key=key, pure=False)
        self._functions[id(fn)] = (fn, future)
        return future

    # ------------------------------------------------------------ results
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
            self.stats["lost"] += 1
            return self._finish(task, lost_result(task, error), {})
        report = self._report(key)
        if error is not None and not isinstance(error, ResourceExhaustedError) \
                and task.attempts <= task.retries:
            self._forget(task)
            self.stats["retried"] += 1
            self._launch(task)
            return None
        result = build_result(task, report, error, on_load=self._count_load)
        if result.ok:
            self._affinity.ran(task.affinity, report.get("worker"))
        return self._finish(task, result, report)

    def _report(self, key: str) -> dict:
        report = self._inbox.report(key)
        if report is None:
            log.warning("no measurements arrived for Dask task %s", key)
            self.stats["reports_missing"] += 1
        return report or {}

    def _finish(self, task: DaskTask, result: TaskResult, report: dict) -> TaskResult:
        self._tasks.pop(task.id, None)
        self._forget(task)
        result.tag = task.tag
        self.stats[result.report.status] += 1
        return result

    def _forget(self, task: DaskTask) -> None:
        if task.future is not None:
            self._inbox.forget(task.future.key)
        if task.hint is not None:
            self._affinity.release(task.hint)
            task.hint = None

    def _count_load(self) -> None:
        self.stats["deserialized"] += 1

    def _cores(self) -> int:
        return max(1, sum(w["cores"] for w in self.workers()))

    def _check_open(self) -> None:
        if self._closed:
            msg = "this DaskManager is closed; make a new one"
            raise ManagerClosedError(msg)
