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
(:meth:`Manager._pass`): receive messages (:mod:`hep_executor.engine._inbox`),
dispatch waiting tasks to free worker slots (:mod:`hep_executor.engine._dispatch`),
look after workers. In ``wait_retrieve_many`` mode (the
default) :meth:`wait` repeats passes until one neither receives nor sends
anything, so idle workers are fed before results go back to the caller.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import time
import weakref
from pathlib import Path

import psutil
import zmq

from hep_executor.engine import _protocol as protocol
from hep_executor.engine._keeper import Keeper, held
from hep_executor.engine._keys import KEY_ENV, load_key
from hep_executor.engine._files import ShippedFiles
from hep_executor.engine._ledger import FunctionStore, ReportLog
from hep_executor.engine._local import BackgroundStarts, LocalProcesses
from hep_executor.engine._spec import WorkerSpec
from hep_executor.engine._dispatch import DispatchSteps
from hep_executor.engine._inbox import MessageSteps
from hep_executor.engine._stragglers import StragglerSteps
from hep_executor.errors import ConfigError, ManagerClosedError, NoWorkersError
from hep_executor.engine._serialization import apply_to_payloads, pickle_bytes
from hep_executor.engine._results import TaskResult
from hep_executor.engine._state import TaskState, TaskTable
from hep_executor.engine._transport import Endpoint, bind_router, format_address

__all__ = ["Manager"]

log = logging.getLogger(__name__)

#: local workers that die before finishing a task (or within EARLY_DEATH_S of their start), more than
#: 10 times per worker within RESTART_WINDOW_S: a crash loop, and no more are started (a worker
#: killed after it worked is always replaced)
RESTART_WINDOW_S = 300.0
EARLY_DEATH_S = 60.0


class Manager(MessageSteps, DispatchSteps, StragglerSteps):
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
    worker_stall_s : float
        A worker that holds tasks, runs none of them and returns nothing for
        this long (while it heartbeats) is removed and its tasks requeued,
        unblamed.
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
    unfit_grace_s : float
        A task larger than every connected worker fails after waiting this
        long for a larger one to join (at once when all local workers are up).
    journal : str, optional
        Append every task report to this file as a JSON line; the manager
        itself keeps per-category totals only (:attr:`reports`).
    files : list of str, optional
        Files (or folders) every task function carries to its workers: they
        arrive once per worker in its sandbox, which is on ``sys.path``
        (see :mod:`hep_executor.engine._files`).
    max_message_mb : int
        Largest frame (one task result, serialized and compressed) the
        manager accepts, MB (0: no limit). A peer that sends more is
        dropped by ZeroMQ before the bytes are held; a worker whose result
        is larger reports the task as failed, naming this setting. The
        default (2048) leaves room for the largest merged coffea outputs;
        lower it when the manager listens on an open network.
    straggler_factor, straggler_min_s : float
        When nothing waits and only a few tasks run, a task running this
        many times longer than its category's mean, and at least
        ``straggler_min_s`` seconds, gets a copy on another worker; the
        first back wins and the other is stopped (0: no copies; see
        :mod:`hep_executor.engine._stragglers`). Tasks must be safe to run
        twice, as for ``retries``.
    curve : bool
        Encrypt the transport with ZeroMQ CURVE, for workers across an
        untrusted network. Messages are signed either way; workers (and
        ``hep-executor status``, the factory) then need ``--curve`` too.
    """

    def __init__(self, local_workers: int | None = None, *, host: str = "127.0.0.1",
                 port: int | tuple | list = 0, key: bytes | None = None, key_file: str | None = None,
                 address_file: str | None = None, worker_cores: int = 1,
                 worker_memory_mb: int | None = None, wait_retrieve_many: bool = True,
                 heartbeat_interval: float = 5.0, heartbeat_timeout: float = 30.0,
                 worker_stall_s: float = 300.0, max_worker_kills: int = 3, restart_workers: bool = True,
                 prefetch: bool = True,
                 worker_env: dict | None = None, worker_preload: tuple = (),
                 worker_timeout: float = 900.0, launcher=None, worker_slot_keys: int = 4,
                 unfit_grace_s: float = 60.0, journal: str | None = None, files: list | None = None,
                 max_message_mb: int = 2048, straggler_factor: float = 3.0,
                 straggler_min_s: float = 5.0, curve: bool = False):
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
        self.worker_stall_s = float(worker_stall_s)
        self.worker_timeout = worker_timeout
        self.restart_workers = restart_workers
        self.unfit_grace_s = unfit_grace_s
        self.max_message_mb = max(0, int(max_message_mb))
        self.curve = bool(curve)
        self.straggler_factor, self.straggler_min_s = float(straggler_factor), float(straggler_min_s)
        self.prefetch = prefetch
        self.table = TaskTable(max_worker_kills)
        self.stats: collections.Counter = collections.Counter()
        self._functions = FunctionStore(ShippedFiles(files) if files else None)
        self.reports = ReportLog(journal)
        self._done: collections.deque[TaskResult] = collections.deque()
        self._wall_ewma: dict[str, float] = {}
        self._tags: dict[int, object] = {}
        self._last_housekeeping = 0.0
        self._closed = False
        self._no_more_workers: str | None = None  # why no local worker will be started again

        self._bind(host, port, address_file)
        self._start_local_workers(local_workers, launcher, worker_env, worker_cores, worker_memory_mb,
                                  worker_timeout, worker_preload, worker_slot_keys)
        self._keeper = Keeper(self, heartbeat_interval)  # answers workers while the caller is away
        self._finalizer = weakref.finalize(self, _close_quietly, self._local, self.endpoint, self._ctx)
        atexit.register(self._finalizer)

    def _bind(self, host: str, port, address_file: str | None) -> None:
        """Bind the ROUTER socket, open this run's session and publish the address."""
        self._ctx = zmq.Context()
        sock, self.port = bind_router(self._ctx, host, port, self.max_message_mb * 2**20 or -1,
                                      curve_key=self.key if self.curve else None)
        self.session = protocol.new_session()  # fresh for every run: messages of other runs fail
        self.endpoint = Endpoint(sock, self.key, routed=True, session=self.session)
        self.address = format_address(host, self.port)
        self.local_address = f"tcp://127.0.0.1:{self.port}" if host in ("0.0.0.0", "*", "") else self.address
        if address_file:
            Path(address_file).write_text(self.address + "\n")
        log.info("manager listening on %s", self.address)

    def _start_local_workers(self, count: int, launcher, env: dict | None, cores: int, memory_mb: int | None,
                             worker_timeout: float, preload: tuple, slot_keys: int) -> None:
        """Start ``count`` workers on this machine (through ``launcher``, default :class:`LocalProcesses`)."""
        self._local = launcher if launcher is not None else LocalProcesses()
        self._local.env = {**getattr(self._local, "env", {}), KEY_ENV: self.key.hex(),
                           **(env or {})}
        mem = memory_mb or max(256, int(psutil.virtual_memory().total / 2**20 * 0.9
                                               / max(1, count)))
        self._local_spec = WorkerSpec(
            manager=self.local_address, cores=cores, memory_mb=mem,
            extra_args=("--parent-pid", str(os.getpid()), "--heartbeat", str(self.heartbeat_interval),
                        "--manager-timeout", str(worker_timeout),
                        "--preload", ",".join(preload),
                        "--slot-keys", str(slot_keys), *(("--curve",) if self.curve else ())))
        self._local_target = count
        self._early_deaths: collections.deque = collections.deque()  # when local workers died young
        self._starts = BackgroundStarts(self._local)  # replacements start off the dispatch pass
        if count:
            self._starts.start_now(self._local_spec, count)

    # ------------------------------------------------------------ public face
    @held
    def submit(self, fn, *args, kwargs: dict | None = None, cores: int = 1, memory_mb: int = 0,
               category: str = "default", retries: int = 0, tag=None, affinity: str | None = None,
               max_wall_s: float | None = None) -> int:
        """Queue ``fn(*args, **kwargs)``; return its task id.

        ``fn`` travels once per worker (cached there by content hash);
        each task carries only its arguments. ``memory_mb`` (0: no limit)
        is the task's allocation: what it adds to its slot's warm memory
        (see :class:`TaskReport`), with its child processes; a task over
        it is stopped and comes back with :class:`ResourceExhaustedError`. ``retries`` re-runs a
        task that raised. ``tag`` comes back on the result. ``affinity``
        (a file path, say) is a hint: a free worker takes a waiting task
        whose key it ran recently before the next in line, so the files a
        worker's slots keep open are read again there. ``max_wall_s``
        stops a task that runs longer (a hung read, a stopped process) and
        fails it with :class:`TaskTimeoutError` (after its ``retries``).
        """
        self._check_open()
        fn_hash = self._functions.add(fn)
        args_bytes = pickle_bytes((args, kwargs or {}))
        task = self.table.add(fn_hash, args_bytes, cores=int(cores), memory_mb=int(memory_mb or 0),
                              category=category, retries=int(retries), affinity=affinity,
                              max_wall_s=float(max_wall_s or 0.0))
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

    @held
    def wait(self, timeout: float | None = None, max_results: int | None = None) -> list[TaskResult]:
        """Return finished tasks (see the module docstring for when it returns).

        Blocks up to ``timeout`` seconds (None: until something finishes or
        nothing is left). Returns an empty list when nothing is submitted.
        At most ``max_results`` come back from one call (the rest wait for
        the next), which bounds what a caller holds at once.
        """
        self._check_open()
        deadline = float("inf") if timeout is None else time.monotonic() + timeout
        limit = float("inf") if max_results is None else max(1, int(max_results))
        retrieved: list[TaskResult] = []
        while True:
            if self.wait_retrieve_many:
                received, sent = self._pass()
                while self._done and len(retrieved) < limit:
                    retrieved.append(self._done.popleft())
                if len(retrieved) >= limit or (retrieved and received == 0 and sent == 0):
                    return retrieved
            else:  # as Work Queue's plain wait: one task, back to the caller before sending more
                received = 0 if self._done else self._process_worker_messages()
                if self._done:
                    return [self._done.popleft()]
                sent = self._dispatch_waiting_tasks()
                self._look_after_workers()
            if self.table.empty() and not self._done:
                return retrieved
            if retrieved == [] and not self._done:
                self._check_workers_left()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return retrieved
            if received == 0 and sent == 0:
                self.endpoint.poll(min(remaining, 0.2))

    def _check_workers_left(self) -> None:
        if self._no_more_workers and not self.table.workers and self.table.n_waiting:
            msg = (f"{self.table.n_waiting} tasks wait and no worker is left: {self._no_more_workers} "
                   "(see the workers' log, or the tasks that end them)")
            raise NoWorkersError(msg)

    def empty(self) -> bool:
        """Nothing waiting, running or finished-but-not-retrieved."""
        return self.table.empty() and not self._done

    def hungry(self) -> bool:
        """Whether more tasks would keep the workers busier."""
        return self.table.n_waiting < 2 * max(1, self.table.total_cores)

    @held
    def cancel(self, task_id: int) -> bool:
        """Cancel a waiting or running task; return whether it was known.

        A waiting task is dropped here; a dispatched one is cancelled on
        its own worker only, which stops it without touching its other tasks.
        """
        task = self.table.tasks.get(task_id)
        if task is None:
            return False
        holders = task.holders() if task.state is TaskState.DISPATCHED else []
        self.table.cancel(task_id)
        self._functions.release(task.fn_hash)
        for holder in holders:
            self.endpoint.send(protocol.Cancel([task_id]), peer=holder)
        self._tags.pop(task_id, None)
        self.stats["cancelled"] += 1
        return True

    @held
    def workers(self) -> list[dict]:
        """The registered workers, as plain dicts."""
        return [w.describe() for w in self.table.workers.values()]

    @held
    def wait_for_workers(self, count: int, timeout: float = 30.0) -> int:
        """Process messages until ``count`` workers have joined or ``timeout``; return the count."""
        deadline = time.monotonic() + timeout
        while len(self.table.workers) < count and time.monotonic() < deadline:
            self.endpoint.poll(0.05)
            self._pass()
        return len(self.table.workers)

    @held
    def status(self) -> dict:
        """How much work there is and how many slots are free."""
        free = sum(max(0, w.free_cores) for w in self.table.workers.values())
        return {"tasks_waiting": self.table.n_waiting, "tasks_running": self.table.n_dispatched,
                "workers": len(self.table.workers), "slots_free": free,
                "tasks_unplaced": max(0, self.table.n_waiting - free), "closing": self._closed}

    @held
    def close(self) -> None:
        """Tell workers to stop, stop local workers, release the socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._keeper.stop()
        for worker in list(self.table.workers.values()):
            self.endpoint.send(protocol.Shutdown("manager closing"), peer=worker.identity)
        self.reports.close()
        self._starts.close()
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
            elif worker.tasks and not worker.running and now - worker.progress_at > self.worker_stall_s:
                self._remove_stalled(identity, worker, now)
            elif now - worker.last_sent > self.heartbeat_interval:
                self.endpoint.send(protocol.Heartbeat(), peer=identity)
                worker.last_sent = now
        self._copy_stragglers()
        self._replace_dead_local_workers()

    def _remove_stalled(self, identity: bytes, worker, now: float) -> None:
        """``worker`` heartbeats but has started none of its tasks for too long: requeue them elsewhere."""
        log.warning("worker %s on %s holds %d tasks but has run none and returned nothing for %.0f s "
                    "(Manager(worker_stall_s=%g)): removing it, its tasks go to other workers",
                    worker.worker_id, ascii(worker.host)[:80], len(worker.tasks), now - worker.progress_at,
                    self.worker_stall_s)
        self.stats["stalled_workers"] += 1
        self.endpoint.send(protocol.Shutdown("removed: it held tasks and ran none of them"), peer=identity)
        self._remove_worker(identity, counts_as_kill=False)

    def _replace_dead_local_workers(self) -> None:
        dead = self._local.exited()
        worked = set()
        for job in dead:
            self._local.forget(job)
            pid = int(job)
            for identity, worker in list(self.table.workers.items()):
                if worker.pid == pid:
                    log.warning("local worker %s (pid %d) died: requeueing its tasks", worker.worker_id, pid)
                    if worker.completed:
                        worked.add(job)
                    self._remove_worker(identity, counts_as_kill=True)
        if dead and self.restart_workers and not self._closed:
            self._restart_local(dead, worked)

    def _restart_local(self, dead: list, worked: set) -> None:
        """Replace dead local workers, unless they keep dying young, without work done (a crash loop)."""
        now = time.monotonic()
        for job in dead:
            started = self._starts.started.pop(job, None)
            if job not in worked and (started is None or now - started < EARLY_DEATH_S):
                self._early_deaths.append(now)
        while self._early_deaths and self._early_deaths[0] < now - RESTART_WINDOW_S:
            self._early_deaths.popleft()
        early = len(self._early_deaths)
        if early <= 10 * max(1, self._local_target):
            self._starts.start_later(self._local_spec, len(dead))
            return
        self._no_more_workers = (f"local workers keep dying ({early} died within {EARLY_DEATH_S:.0f} s of "
                                 f"their start without finishing a task, in the last {RESTART_WINDOW_S:.0f} s): "
                                 "not starting more")
        log.error("%s", self._no_more_workers)

    def _remove_worker(self, identity: bytes, *, counts_as_kill: bool) -> None:
        requeued, lost = self.table.remove_worker(identity, counts_as_kill=counts_as_kill)
        if requeued:
            self.stats["requeued"] += len(requeued)
        for task in lost:
            self._fail_lost(task, "its worker was lost")

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

