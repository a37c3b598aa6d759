"""The manager's inbox: what it does with each message from a worker.

:class:`MessageSteps` is a part of :class:`~hep_executor.engine._manager.Manager`
(its ``_process_worker_messages`` step and what follows from it: a
registration, results filed or retried, a worker leaving, a refusal with
its reason). It works on the manager's ``endpoint``, ``table``, ``stats``,
``reports``, ``_functions``, ``_done``, ``_tags`` and ``_wall_ewma``.
"""

from __future__ import annotations

import logging
import time

from hep_executor.engine import _protocol as protocol
from hep_executor.engine._results import TaskReport, TaskResult, failed
from hep_executor.engine._state import WorkerRecord
from hep_executor.errors import (AuthenticationError, ProtocolError, ReplayError, ResourceExhaustedError,
                                 SessionMismatchError, TaskTimeoutError, VersionMismatchError,
                                 WorkerLostError)

__all__ = ["MessageSteps"]

log = logging.getLogger(__name__)


class MessageSteps:
    """The manager's handling of worker messages (a part of the Manager class)."""

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
                    worker.progress_at = worker.last_seen
                    if msg.running is not None:
                        self.table.note_running(worker, msg.running)
                    if msg.warm_mb is not None:
                        worker.warm_mb = int(msg.warm_mb)
                    self._file_results(worker, msg.items, payloads)
            elif isinstance(msg, protocol.Register):
                self._register(peer, msg)
            elif isinstance(msg, protocol.Bye):
                if worker is not None:
                    log.info("worker %s left: %s", worker.worker_id, msg.reason)
                    self._remove_worker(peer, counts_as_kill=False)
            elif isinstance(msg, protocol.Hello):
                self.endpoint.send(protocol.Session(self.session.hex()), peer=peer,
                                   session=protocol.NO_SESSION)
            elif isinstance(msg, protocol.StatusQuery):
                self.endpoint.send(protocol.StatusReply(self.status()), peer=peer,
                                   session=protocol.NO_SESSION)
                if worker is None:
                    self.endpoint.forget(peer)  # a status client: one question, one identity
        return count

    def _refuse_if_registering(self, peer: bytes, exc: Exception, frames: list) -> None:
        """Answer a dropped message where the sender deserves a reason: another version, run or key."""
        if isinstance(exc, VersionMismatchError):
            log.error("refused a worker: %s", ascii(str(exc)[:300]))
            self.endpoint.send(protocol.Refuse(str(exc)), peer=peer, session=protocol.NO_SESSION)
        elif isinstance(exc, SessionMismatchError):
            reason = (f"{exc}; this manager started a new run: start a new worker for it")
            self.endpoint.send(protocol.Refuse(reason), peer=peer, session=exc.session)
        elif isinstance(exc, AuthenticationError) and not isinstance(exc, ReplayError) and len(frames) >= 3:
            try:
                msg = protocol.parse_header(bytes(frames[2]))
            except VersionMismatchError:
                msg = None
            except ProtocolError:
                return
            if msg is None or isinstance(msg, (protocol.Hello, protocol.Register)):
                reason = ("authentication failed: the worker's key does not match this manager's "
                          "key; start it with the run's --key-file")
                self._log_refusal(ascii(getattr(msg, "worker_id", "?"))[:40], reason)
                self.endpoint.send_unsigned(protocol.Refuse(reason), peer)

    def _log_refusal(self, who: str, reason: str) -> None:
        """Log a refused worker, at most once a second (a flood of bad registrations is one line)."""
        self.stats["refused"] += 1
        now = time.monotonic()
        if now - getattr(self, "_last_refusal_log", 0.0) >= 1.0:
            self._last_refusal_log = now
            log.error("refused worker %s: %s (%d refused so far)", who, reason, self.stats["refused"])

    def _register(self, peer: bytes, msg: protocol.Register) -> None:
        if peer in self.table.workers:
            return
        cores, memory_mb = _within_the_host(msg)
        worker = WorkerRecord(peer, msg.worker_id, msg.host, msg.pid, cores, memory_mb, msg.disk_mb)
        self.table.add_worker(worker)
        self.endpoint.send(protocol.Welcome(self.heartbeat_interval, self.worker_timeout, self.max_message_mb),
                           peer=peer)
        worker.last_sent = time.monotonic()
        log.info("worker %s joined from %s: %d cores, %d MB", msg.worker_id, msg.host, cores, memory_mb)

    def _file_results(self, worker: WorkerRecord, items: list, payloads: list) -> None:
        for item, payload in zip(items, payloads):
            task = worker.tasks.get(item["id"])
            if task is None:
                continue  # cancelled, or requeued elsewhere
            status = item["status"]
            if status != "ok" and self.table.drop_holder(task, worker.identity):
                continue  # one copy of a straggler failed; the other may still succeed
            others = [h for h in task.holders() if h != worker.identity]
            report = TaskReport(task.id, task.category, status, item["wall"], item["cpu"],
                                item["peak_mb"], task.cores, task.memory_mb, item.get("slot", ""),
                                item.get("host", worker.host), item.get("started", 0.0),
                                task.attempts, len(payload), bool(item.get("lifetime_peak")),
                                item.get("warm_mb", 0.0))
            if status == "lost":
                outcome, task = self.table.task_killed_worker(task.id)
                log.warning("task %d (%s) ended its process on %s: %s", task.id, task.category,
                            worker.worker_id, item["error"])
                if outcome == "failed":
                    self._fail_lost(task, item["error"])
                continue
            if status in ("error", "timeout") and self.table.retry(task.id):
                self.stats["retried"] += 1
                continue
            self.table.finish(task.id, ok=status == "ok")
            for identity in others:  # the first copy back wins; the other is stopped
                self.endpoint.send(protocol.Cancel([task.id]), peer=identity)
                self.stats["copies_cancelled"] += 1
            prev = self._wall_ewma.get(task.category, item["wall"])
            self._wall_ewma[task.category] = 0.8 * prev + 0.2 * item["wall"]
            result = TaskResult(task.id, report, payload, item["compressed"],
                                tag=self._tags.pop(task.id, None), _on_load=self._count_load)
            if status == "error":
                result.error = TaskResult.remote_error(item, payload)
                result.payload = b""
            elif status == "timeout":
                result.error = TaskTimeoutError(
                    f"task {task.id} ({task.category}) ran {item['wall']:.1f} s on {report.host}, over its "
                    f"max_wall_s of {task.max_wall_s:g} s: stopped", wall_s=item["wall"], limit_s=task.max_wall_s)
            elif status == "exhausted":
                result.error = ResourceExhaustedError(
                    f"task {task.id} ({task.category}) went over its memory allocation on "
                    f"{report.host}: {item['error']}", peak_mb=item["peak_mb"], limit_mb=task.memory_mb)
            self.stats[status] += 1
            self._deliver(task, result)

    def _deliver(self, task, result: TaskResult) -> None:
        """``task`` ended: hand its result on, add its report to the totals, release its function."""
        self._functions.release(task.fn_hash)
        self.reports.record(result.report)
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
        self._deliver(task, result)


def _within_the_host(msg: protocol.Register) -> tuple[int, int]:
    """The worker's cores and memory, capped (with a warning) at what its machine says it has."""
    cores, memory_mb = msg.cores, msg.memory_mb
    if msg.host_cores and cores > msg.host_cores:
        log.warning("worker %s on %s offers %d cores, its machine has %d: taking %d", msg.worker_id,
                    ascii(msg.host)[:80], cores, msg.host_cores, msg.host_cores)
        cores = msg.host_cores
    if msg.host_memory_mb and memory_mb > msg.host_memory_mb:
        log.warning("worker %s on %s offers %d MB, its machine has %d MB: taking %d MB", msg.worker_id,
                    ascii(msg.host)[:80], memory_mb, msg.host_memory_mb, msg.host_memory_mb)
        memory_mb = msg.host_memory_mb
    return cores, memory_mb
