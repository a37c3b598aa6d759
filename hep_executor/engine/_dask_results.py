"""What the :class:`~hep_executor.engine._dask_manager.DaskManager` keeps per task, and what it hands back.

A :class:`DaskTask` is one submitted call (with its Dask future and
attempts). A finished one becomes a :class:`TaskResult` here
(:func:`build_result`, :func:`lost_result`): its value stays in Dask worker
memory as a :class:`RemotePayload`, and :class:`DaskTaskResult` gathers it
only when the caller reads it.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import distributed

from hep_executor.engine._results import TaskReport, TaskResult, failed
from hep_executor.errors import ResourceExhaustedError, WorkerLostError

__all__ = ["DaskTask", "DaskTaskResult", "RemotePayload", "attach_traceback", "build_result", "lost_result"]


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
class DaskTask:
    """One submitted call: what to run, with what resources, and its current Dask future."""

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


def build_result(task: DaskTask, report: dict, error: BaseException | None,
                 on_load: Callable[[], None] | None = None) -> TaskResult:
    """The :class:`TaskResult` of a finished ``task`` from its worker's measurements ``report``."""
    status = "ok" if error is None else "exhausted" if isinstance(error, ResourceExhaustedError) else "error"
    nbytes = int(report.get("nbytes", 0))
    summary = TaskReport(task.id, task.category, status, report.get("wall", 0.0), report.get("cpu", 0.0),
                         report.get("peak_mb", 0.0), task.cores, task.memory_mb, report.get("slot", ""),
                         report.get("host", ""), report.get("started", 0.0), task.attempts, nbytes)
    if error is None:
        return DaskTaskResult(task.id, summary, RemotePayload(task.future, nbytes), _on_load=on_load)
    if status == "exhausted":
        error = ResourceExhaustedError(
            f"task {task.id} ({task.category}) went over its memory allocation on "
            f"{summary.host or 'a Dask worker'}: {error}", peak_mb=error.peak_mb, limit_mb=task.memory_mb)
    else:
        attach_traceback(error, task.future)
    return TaskResult(task.id, summary, error=error)


def lost_result(task: DaskTask, error: BaseException) -> TaskResult:
    """The result of a task whose Dask workers kept dying (Dask's ``KilledWorker``)."""
    lost = WorkerLostError(f"task {task.id} ({task.category}) killed its Dask worker too many times "
                           f"(the scheduler's allowed-failures): {error}")
    return failed(task.id, task.category, "lost", lost, attempts=task.attempts)


def attach_traceback(error: BaseException, future) -> None:
    """Add the Dask worker's traceback to ``error`` as a note."""
    try:
        tb = "".join(traceback.format_tb(future.traceback()))
    except Exception:
        return
    error.remote_traceback = tb
    if hasattr(error, "add_note") and tb:
        error.add_note(f"Traceback on the Dask worker:\n{tb}")
