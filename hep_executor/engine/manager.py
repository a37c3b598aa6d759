"""The Manager: submit Python calls, run them on workers, wait for results.

::

    with Manager(local_workers=2) as m:
        for i in range(1000):
            m.submit(f, i, cores=1, memory_mb=500, category="demo")
        while not m.empty():
            for result in m.wait(timeout=5):
                use(result.value, result.report)

The manager binds a ROUTER socket (port 0: any free port), starts local
workers unless ``local_workers=0``, and accepts remote workers that hold
the same key. Its dispatch loop is one short sequence of named steps
(:meth:`Manager._pass`): receive messages, dispatch waiting tasks to free
worker slots, look after workers. In ``wait_retrieve_many`` mode (the
default) :meth:`wait` repeats passes until one neither receives nor sends
anything, so idle workers are fed before results go back to the caller.
"""

from __future__ import annotations

import atexit
import collections
import hashlib
import itertools
import logging
import os
import time
import weakref
from pathlib import Path

import psutil
import zmq

from hep_executor.engine import protocol
from hep_executor.engine.keys import KEY_ENV, load_key
from hep_executor.engine.files import ShippedFiles, with_files
from hep_executor.engine.local import LocalProcesses
from hep_executor.engine.spec import WorkerSpec
from hep_executor.errors import (AuthenticationError, ConfigError, ManagerClosedError, ProtocolError,
                     ResourceExhaustedError, TaskError, VersionMismatchError,
                     WorkerLostError)
from hep_executor.engine.serialization import apply_to_payloads, dumps_function, pickle_bytes
from hep_executor.engine.results import TaskReport, TaskResult, failed
from hep_executor.engine.state import TaskTable, WorkerRecord
from hep_executor.engine.transport import Endpoint, bind_router, format_address

__all__ = ["Manager"]

log = logging.getLogger(__name__)

_PREFETCH_SECONDS = 0.05  # queue about this much work per worker when tasks are short
_MAX_PREFETCH = 64
_LOOKAHEAD = 64  # waiting tasks examined past one that fits no worker now


class Manager:
    """Runs submitted Python calls on worker processes.

    Parameters
    ----------
    local_workers : int, optional
        Workers to start on this machine (default: one per core; 0: none,
        remote workers only).
    host : str
        Address to bind (``127.0.0.1``; ``0.0.0.0`` for remote workers).
    port : int or [low, high]
        Port to bind; 0 picks a free one.
    key : bytes, optional
        The run's secret. Default: read ``key_file`` if given, else a new one.
    key_file : str, optional
        Key file for remote workers; created if missing.
    address_file : str, optional
        Write the manager's address here (for submit scripts).
    worker_cores, worker_memory_mb : int, optional
        Resources of each local worker (default 1 core, memory split evenly).
    wait_retrieve_many : bool
        :meth:`wait` returns after a pass with nothing received or sent
        (True) or as soon as one task is retrieved (False).
    heartbeat_interval, heartbeat_timeout : float
        Seconds between heartbeats; silence after which a worker is removed.
    worker_timeout : float
        Silence of the manager after which a worker leaves (default 15 min, so
        workers outlive a caller's pause between runs; local workers also leave
        as soon as this process is gone).
    max_worker_kills : int
        A task whose worker died under it this many times fails.
    restart_workers : bool
        Start a replacement when a local worker dies.
    prefetch : bool
        Queue a little extra work on workers when tasks are very short.
    worker_env : dict, optional
        Extra environment variables for local workers.
    worker_preload : tuple of str
        Modules local workers import before starting their slots.
    launcher : object, optional
        What starts local workers (``submit(spec, n)``, ``exited()``,
        ``forget(id)``, ``close()``); default :class:`LocalProcesses`.
    worker_slot_keys : int
        Affinity keys a local worker remembers per slot (the caller's warm
        cache size: the files a slot keeps open).
    files : list of str, optional
        Files (or folders) every task function carries to its workers: they
        arrive once per worker in its sandbox, which is on ``sys.path``
        (see :mod:`hep_executor.engine.files`).
    """

    def __init__(self, local_workers: int | None = None, *, host: str = "127.0.0.1",
                 port: int | tuple | list = 0, key: bytes | None = None, key_file: str | None = None,
                 address_file: str | None = None, worker_cores: int = 1,
                 worker_memory_mb: int | None = None, wait_retrieve_many: bool = True,
                 heartbeat_interval: float = 5.0, heartbeat_timeout: float = 30.0,
                 max_worker_kills: int = 3, restart_workers: bool = True, prefetch: bool = True,
                 worker_env: dict | None = None, worker_preload: tuple = (),
                 worker_timeout: float = 900.0, launcher=None, worker_slot_keys: int = 4,
                 files: list | None = None):
        if local_workers is None:
            local_workers = max(1, (os.cpu_count() or 1) // max(1, worker_cores))
        if local_workers < 0 or worker_cores < 1:
            msg = f"local_workers must be >= 0 and worker_cores >= 1 (got {local_workers}, {worker_cores})"
            raise ConfigError(msg)
        if heartbeat_timeout <= heartbeat_interval or worker_timeout <= heartbeat_interval:
            msg = "heartbeat_timeout and worker_timeout must be longer than heartbeat_interval"
            raise ConfigError(msg)
        self.key = load_key(key, key_file, from_env=False, create=True)
        self.wait_retrieve_many = wait_retrieve_many
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.worker_timeout = worker_timeout
        self.restart_workers = restart_workers
        self.prefetch = prefetch
        self.table = TaskTable(max_worker_kills)
        self.stats: collections.Counter = collections.Counter()
        self._functions: dict[str, bytes] = {}
        self._files = ShippedFiles(files) if files else None
        self._fn_by_id: dict[int, tuple[object, str]] = {}
        self._done: collections.deque[TaskResult] = collections.deque()
        self._wall_ewma: dict[str, float] = {}
        self._tags: dict[int, object] = {}
        self._last_housekeeping = 0.0
        self._closed = False

        self._ctx = zmq.Context()
        sock, self.port = bind_router(self._ctx, host, port)
        self.endpoint = Endpoint(sock, self.key, routed=True)
        self.address = format_address(host, self.port)
        self.local_address = f"tcp://127.0.0.1:{self.port}" if host in ("0.0.0.0", "*", "") else self.address
        if address_file:
            Path(address_file).write_text(self.address + "\n")
        log.info("manager listening on %s", self.address)

        self._local = launcher if launcher is not None else LocalProcesses()
        self._local.env = {**getattr(self._local, "env", {}), KEY_ENV: self.key.hex(),
                           **(worker_env or {})}
        mem = worker_memory_mb or max(256, int(psutil.virtual_memory().total / 2**20 * 0.9
                                               / max(1, local_workers)))
        self._local_spec = WorkerSpec(
            manager=self.local_address, cores=worker_cores, memory_mb=mem,
            extra_args=("--parent-pid", str(os.getpid()), "--heartbeat", str(heartbeat_interval),
                        "--manager-timeout", str(worker_timeout),
                        "--preload", ",".join(worker_preload),
                        "--slot-keys", str(worker_slot_keys)))
        self._local_target = local_workers
        self._local_restarts = 0
        if local_workers:
            self._local.submit(self._local_spec, local_workers)
        self._finalizer = weakref.finalize(self, _close_quietly, self._local, self.endpoint, self._ctx)
        atexit.register(self._finalizer)

    # ------------------------------------------------------------ public face
    def submit(self, fn, *args, kwargs: dict | None = None, cores: int = 1, memory_mb: int = 0,
               category: str = "default", retries: int = 0, tag=None, affinity: str | None = None) -> int:
        """Queue ``fn(*args, **kwargs)``; return its task id.

        ``fn`` travels once per worker (cached there by content hash);
        each task carries only its arguments. ``memory_mb`` (0: no limit)
        is the task's allocation: a task over it is stopped and comes
        back with :class:`ResourceExhaustedError`. ``retries`` re-runs a
        task that raised. ``tag`` comes back on the result. ``affinity``
        (a file path, say) is a hint: a free worker takes a waiting task
        whose key it ran recently before the next in line, so the files a
        worker's slots keep open are read again there.
        """
        self._check_open()
        fn_hash = self._function_hash(fn)
        args_bytes = pickle_bytes((args, kwargs or {}))
        task = self.table.add(fn_hash, args_bytes, cores=int(cores), memory_mb=int(memory_mb or 0),
                              category=category, retries=int(retries), affinity=affinity)
        if tag is not None:
            self._tags[task.id] = tag
        self.stats["submitted"] += 1
        return task.id

    def submit_payload(self, fn, payloads: list[tuple[bytes, bool]], *, cores: int = 1,
                       memory_mb: int = 0, category: str = "default", retries: int = 0, tag=None) -> int:
        """Queue ``fn(list_of_values)`` over serialized results, without deserializing them here.

        ``payloads`` are ``(bytes, compressed)`` pairs from :class:`TaskResult`;
        the worker deserializes them and passes the list to ``fn``.
        """
        return self.submit(apply_to_payloads, fn, payloads, cores=cores, memory_mb=memory_mb,
                           category=category, retries=retries, tag=tag)

    def wait(self, timeout: float | None = None) -> list[TaskResult]:
        """Return finished tasks (see the module docstring for when it returns).

        Blocks up to ``timeout`` seconds (None: until something finishes or
        nothing is left). Returns an empty list when nothing is submitted.
        """
        self._check_open()
        deadline = float("inf") if timeout is None else time.monotonic() + timeout
        retrieved: list[TaskResult] = []
        while True:
            if self.wait_retrieve_many:
                received, sent = self._pass()
                retrieved.extend(self._done)
                self._done.clear()
                if retrieved and received == 0 and sent == 0:
                    return retrieved
            else:  # as Work Queue's plain wait: one task, back to the caller before sending more
                received = 0 if self._done else self._process_worker_messages()
                if self._done:
                    return [self._done.popleft()]
                sent = self._dispatch_waiting_tasks()
                self._look_after_workers()
            if self.table.empty() and not self._done:
                return retrieved
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return retrieved
            if received == 0 and sent == 0:
                self.endpoint.poll(min(remaining, 0.2))

    def empty(self) -> bool:
        """Nothing waiting, running or finished-but-not-retrieved."""
        return self.table.empty() and not self._done

    def hungry(self) -> bool:
        """Whether more tasks would keep the workers busier."""
        return self.table.n_waiting < 2 * max(1, sum(w.cores for w in self.table.workers.values()))

    def cancel(self, task_id: int) -> bool:
        """Cancel a waiting or running task; return whether it was known."""
        task = self.table.cancel(task_id)
        if task is None:
            return False
        if task.worker is not None or task.dispatched:
            for worker in self.table.workers.values():
                self.endpoint.send(protocol.Cancel([task_id]), peer=worker.identity)
        self._tags.pop(task_id, None)
        self.stats["cancelled"] += 1
        return True

    def workers(self) -> list[dict]:
        """The registered workers, as plain dicts."""
        return [w.describe() for w in self.table.workers.values()]

    def wait_for_workers(self, count: int, timeout: float = 30.0) -> int:
        """Process messages until ``count`` workers have joined or ``timeout``; return the count."""
        deadline = time.monotonic() + timeout
        while len(self.table.workers) < count and time.monotonic() < deadline:
            self.endpoint.poll(0.05)
            self._pass()
        return len(self.table.workers)

    def status(self) -> dict:
        """How much work there is and how many slots are free."""
        free = sum(max(0, w.free_cores) for w in self.table.workers.values())
        return {"tasks_waiting": self.table.n_waiting, "tasks_running": self.table.n_dispatched,
                "workers": len(self.table.workers), "slots_free": free,
                "hungry": max(0, self.table.n_waiting - free), "closing": self._closed}

    def close(self) -> None:
        """Tell workers to stop, stop local workers, release the socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for worker in list(self.table.workers.values()):
            self.endpoint.send(protocol.Shutdown("manager closing"), peer=worker.identity)
        self._finalizer()

    def __enter__(self) -> Manager:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ the pass
    def _pass(self) -> tuple[int, int]:
        """One pass of the dispatch loop; return (messages received, tasks sent)."""
        received = self._process_worker_messages()
        sent = self._dispatch_waiting_tasks()
        self._look_after_workers()
        return received, sent

    def _process_worker_messages(self, limit: int = 10_000) -> int:
        count = 0
        while count < limit:
            got = self.endpoint.recv()
            if got is None:
                break
            count += 1
            peer, msg, payloads = got
            if isinstance(msg, Exception):
                self._refuse_if_registering(peer, msg, payloads)
                continue
            worker = self.table.workers.get(peer)
            if worker is not None:
                worker.last_seen = time.monotonic()
            elif isinstance(msg, (protocol.Results, protocol.Heartbeat)):
                # removed earlier (silent too long): its tasks went elsewhere; let it go
                self.endpoint.send(protocol.Shutdown("this worker was removed from the run"), peer=peer)
                continue
            if isinstance(msg, protocol.Results):
                if worker is not None:
                    self._file_results(worker, msg.items, payloads)
            elif isinstance(msg, protocol.Register):
                self._register(peer, msg)
            elif isinstance(msg, protocol.Bye):
                if worker is not None:
                    log.info("worker %s left: %s", worker.worker_id, msg.reason)
                    self._remove_worker(peer, counts_as_kill=False)
            elif isinstance(msg, protocol.StatusQuery):
                self.endpoint.send(protocol.StatusReply(self.status()), peer=peer)
        return count

    def _refuse_if_registering(self, peer: bytes, exc: Exception, frames: list) -> None:
        if isinstance(exc, VersionMismatchError):
            log.error("refused a worker: %s", exc)
            self.endpoint.send(protocol.Refuse(str(exc)), peer=peer)
            return
        if isinstance(exc, AuthenticationError) and len(frames) >= 2:
            try:
                msg = protocol.parse_header(bytes(frames[1]))
            except VersionMismatchError:
                msg = None
            except ProtocolError:
                return
            if msg is None or isinstance(msg, protocol.Register):
                where = f"{msg.host} (pid {msg.pid})" if msg is not None else "a worker"
                reason = ("authentication failed: the worker's key does not match this manager's "
                          "key; start it with the run's --key-file")
                log.error("refused %s: %s", where, reason)
                self.endpoint.send_unsigned(protocol.Refuse(reason), peer)

    def _register(self, peer: bytes, msg: protocol.Register) -> None:
        if peer in self.table.workers:
            return
        worker = WorkerRecord(peer, msg.worker_id, msg.host, msg.pid, msg.cores, msg.memory_mb, msg.disk_mb)
        self.table.add_worker(worker)
        self.endpoint.send(protocol.Welcome(self.heartbeat_interval, self.worker_timeout), peer=peer)
        worker.last_sent = time.monotonic()
        log.info("worker %s joined from %s: %d cores, %d MB", msg.worker_id, msg.host, msg.cores, msg.memory_mb)

    def _file_results(self, worker: WorkerRecord, items: list, payloads: list) -> None:
        for item, payload in zip(items, payloads):
            task = worker.tasks.get(item["id"])
            if task is None:
                continue  # cancelled, or requeued elsewhere
            status = item["status"]
            report = TaskReport(task.id, task.category, status, item["wall"], item["cpu"],
                                item["peak_mb"], task.cores, task.memory_mb, item.get("slot", ""),
                                item.get("host", worker.host), item.get("started", 0.0),
                                task.attempts, len(payload))
            if status == "lost":
                outcome, task = self.table.task_killed_worker(task.id)
                log.warning("task %d (%s) ended its process on %s: %s", task.id, task.category,
                            worker.worker_id, item["error"])
                if outcome == "failed":
                    self._fail_lost(task, item["error"])
                continue
            if status == "error" and self.table.retry(task.id):
                self.stats["retried"] += 1
                continue
            self.table.finish(task.id, ok=status == "ok")
            prev = self._wall_ewma.get(task.category, item["wall"])
            self._wall_ewma[task.category] = 0.8 * prev + 0.2 * item["wall"]
            result = TaskResult(task.id, report, payload, item["compressed"],
                                tag=self._tags.pop(task.id, None), _on_load=self._count_load)
            if status == "error":
                result.error = TaskResult.remote_error(item, payload)
                result.payload = b""
            elif status == "exhausted":
                result.error = ResourceExhaustedError(
                    f"task {task.id} ({task.category}) went over its memory allocation on "
                    f"{report.host}: {item['error']}", peak_mb=item["peak_mb"], limit_mb=task.memory_mb)
            self.stats[status] += 1
            self._done.append(result)

    def _count_load(self) -> None:
        self.stats["deserialized"] += 1

    def _fail_lost(self, task, reason: str) -> None:
        error = WorkerLostError(
            f"task {task.id} ({task.category}) killed its worker {task.worker_kills} times "
            f"(limit {self.table.max_worker_kills}); last: {reason}")
        self.stats["lost"] += 1
        result = failed(task.id, task.category, "lost", error, attempts=task.attempts)
        result.tag = self._tags.pop(task.id, None)
        self._done.append(result)

    # ------------------------------------------------------------ dispatch
    def _prefetch_depth(self, category: str) -> int:
        wall = self._wall_ewma.get(category)
        if not self.prefetch or wall is None or wall >= _PREFETCH_SECONDS:
            return 0
        return min(_MAX_PREFETCH, int(_PREFETCH_SECONDS / max(wall, 1e-4)))

    def _pick_worker(self, task, workers: list[WorkerRecord], prefetch: int) -> WorkerRecord | None:
        best = None
        for w in workers:
            if w.fits(task) or (prefetch and w.could_ever_fit(task)
                                and len(w.tasks) < w.cores * (1 + prefetch)):
                if best is None or len(w.tasks) / w.cores < len(best.tasks) / best.cores:
                    best = w
        return best

    def _dispatch_waiting_tasks(self) -> int:
        waiting = self.table.waiting
        workers = list(self.table.workers.values())
        if not waiting or not workers:
            return 0
        batches: dict[bytes, list] = {}
        self._dispatch_affine(waiting, workers, batches)
        skipped: list = []
        depth: dict[str, int] = {}  # prefetch depth per category, fixed for this pass
        most_prefetch = 0
        while waiting and len(skipped) <= _LOOKAHEAD:
            task = waiting.popleft()
            if task.category not in depth:
                depth[task.category] = self._prefetch_depth(task.category)
                most_prefetch = max(most_prefetch, depth[task.category])
            worker = self._pick_worker(task, workers, depth[task.category])
            if worker is None:
                if not any(w.could_ever_fit(task) for w in workers) and self._local_target \
                        and len(workers) >= self._local_target:
                    self._fail_unfit(task, workers)
                    continue
                skipped.append(task)
                if not any(w.free_cores > 0 or len(w.tasks) < w.cores * (1 + most_prefetch)
                           for w in workers):
                    break  # every worker is full: nothing later in the queue can go either
                continue
            self.table.assign(task, worker)
            batches.setdefault(worker.identity, []).append(task)
        waiting.extendleft(reversed(skipped))
        sent = 0
        for identity, tasks in batches.items():
            worker = self.table.workers[identity]
            new_fns = list(dict.fromkeys(t.fn_hash for t in tasks if t.fn_hash not in worker.functions))
            payloads = [self._functions[h] for h in new_fns] + [t.args for t in tasks]
            if not self.endpoint.send(protocol.Tasks([t.wire() for t in tasks], new_fns), payloads,
                                      peer=identity):
                self._remove_worker(identity, counts_as_kill=True)
                continue
            worker.functions.update(new_fns)
            self.stats["function_bytes_sent"] += sum(len(self._functions[h]) for h in new_fns)
            worker.last_sent = time.monotonic()
            sent += len(tasks)
        self.stats["dispatched"] += sent
        return sent

    def _dispatch_affine(self, waiting, workers: list[WorkerRecord], batches: dict) -> None:
        """Give each free worker the first waiting tasks (within the look-ahead) whose affinity key it holds."""
        free = [w for w in workers if w.affinity and w.free_cores > 0]
        if not free or not any(t.affinity is not None for t in itertools.islice(waiting, _LOOKAHEAD)):
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

    def _fail_unfit(self, task, workers) -> None:
        self.table.tasks.pop(task.id, None)
        biggest = max(workers, key=lambda w: (w.memory_mb, w.cores))
        error = TaskError(
            f"task {task.id} ({task.category}) asks for {task.cores} cores and {task.memory_mb} MB, "
            f"more than the largest worker offers ({biggest.cores} cores, {biggest.memory_mb} MB)")
        result = failed(task.id, task.category, "error", error)
        result.tag = self._tags.pop(task.id, None)
        self._done.append(result)

    # ------------------------------------------------------------ workers
    def _look_after_workers(self) -> None:
        now = time.monotonic()
        if now - self._last_housekeeping < 0.1:
            return
        self._last_housekeeping = now
        for identity, worker in list(self.table.workers.items()):
            if now - worker.last_seen > self.heartbeat_timeout:
                log.warning("worker %s on %s silent for %.0f s: removing it", worker.worker_id,
                            worker.host, now - worker.last_seen)
                self._remove_worker(identity, counts_as_kill=True)
            elif now - worker.last_sent > self.heartbeat_interval:
                self.endpoint.send(protocol.Heartbeat(), peer=identity)
                worker.last_sent = now
        self._replace_dead_local_workers()

    def _replace_dead_local_workers(self) -> None:
        dead = self._local.exited()
        for job in dead:
            self._local.forget(job)
            pid = int(job)
            for identity, worker in list(self.table.workers.items()):
                if worker.pid == pid:
                    log.warning("local worker %s (pid %d) died: requeueing its tasks", worker.worker_id, pid)
                    self._remove_worker(identity, counts_as_kill=True)
        if dead and self.restart_workers and not self._closed:
            self._local_restarts += len(dead)
            if self._local_restarts <= 10 * max(1, self._local_target):
                self._local.submit(self._local_spec, len(dead))
            else:
                log.error("local workers keep dying (%d restarts): not starting more", self._local_restarts)

    def _remove_worker(self, identity: bytes, *, counts_as_kill: bool) -> None:
        requeued, lost = self.table.remove_worker(identity, counts_as_kill=counts_as_kill)
        if requeued:
            self.stats["requeued"] += len(requeued)
        for task in lost:
            self._fail_lost(task, "its worker was lost")

    def _function_hash(self, fn) -> str:
        known = self._fn_by_id.get(id(fn))
        if known is not None and known[0] is fn:
            return known[1]
        data = dumps_function(with_files(fn, self._files))
        fn_hash = hashlib.blake2b(data, digest_size=16).hexdigest()
        self._functions[fn_hash] = data
        self._fn_by_id[id(fn)] = (fn, fn_hash)
        return fn_hash

    def _check_open(self) -> None:
        if self._closed:
            msg = "this Manager is closed; make a new one"
            raise ManagerClosedError(msg)


def _close_quietly(local: LocalProcesses, endpoint: Endpoint, ctx: zmq.Context) -> None:
    try:
        local.close()
    finally:
        endpoint.close()
        ctx.term()

