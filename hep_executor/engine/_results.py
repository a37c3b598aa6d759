"""What a finished task gives back: :class:`TaskResult` and its :class:`TaskReport`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from hep_executor.errors import RemoteTaskError, TaskError
from hep_executor.engine._serialization import loads

__all__ = ["TaskReport", "TaskResult"]


@dataclass(frozen=True)
class TaskReport:
    """Measurements of one task on its worker.

    Attributes
    ----------
    wall, cpu : float
        Wall-clock and CPU seconds of the task alone.
    peak_mb : float
        Peak resident memory of the task (per task, not process lifetime;
        see ``peak_is_lifetime``), less its slot's warm memory, plus what
        its child processes held.
    warm_mb : float
        What the task's slot held from task to task when the task started
        (imported modules, its loaded function, caches): kept out of
        ``peak_mb`` and of the task's allocation.
    peak_is_lifetime : bool
        True where the worker could not reset the kernel's peak mark
        (``/proc/self/clear_refs`` denied): ``peak_mb`` is then the slot
        process's peak so far, an upper bound of the task's.
    status : str
        ``ok``, ``error``, ``exhausted`` (over its memory allocation) or ``lost``.
    """

    task_id: int
    category: str
    status: str
    wall: float = 0.0
    cpu: float = 0.0
    peak_mb: float = 0.0
    cores: int = 1
    memory_mb: int = 0
    slot: str = ""
    host: str = ""
    started: float = 0.0
    attempts: int = 1
    result_bytes: int = 0
    peak_is_lifetime: bool = False
    warm_mb: float = 0.0

    def as_dict(self) -> dict:
        """Plain-data form for run reports."""
        return dict(self.__dict__)


@dataclass
class TaskResult:
    """A finished task.

    ``value`` deserializes the task's return value on first access (and
    raises the task's error if it failed); ``payload`` keeps the
    serialized bytes, so a result can be handed on to another task
    without being deserialized here.
    """

    id: int
    report: TaskReport
    payload: bytes = b""
    compressed: bool = False
    error: BaseException | None = None
    tag: Any = None
    _on_load: Callable[[], None] | None = field(default=None, repr=False)
    _value: Any = field(default=None, repr=False)
    _loaded: bool = field(default=False, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the task returned a value."""
        return self.error is None

    @property
    def value(self) -> Any:
        """The task's return value; raises its error if it failed."""
        if self.error is not None:
            raise self.error
        if not self._loaded:
            self._value = loads(self.payload, self.compressed)
            self._loaded = True
            if self._on_load is not None:
                self._on_load()
        return self._value

    @staticmethod
    def remote_error(item: dict, payload: bytes) -> BaseException:
        """Rebuild a task's exception from a worker's result item."""
        tb = item.get("traceback", "")
        exc: BaseException | None = None
        if payload:
            try:
                exc = loads(payload, False)
            except Exception:
                exc = None
        if not isinstance(exc, BaseException):
            return RemoteTaskError(item.get("error", "task failed"), tb)
        exc.remote_traceback = tb
        if hasattr(exc, "add_note") and tb:
            exc.add_note(f"Traceback on the worker ({item.get('slot', '?')}):\n{tb}")
        return exc


def failed(task_id: int, category: str, status: str, error: TaskError, **report) -> TaskResult:
    """A result for a task that ended without running to completion."""
    return TaskResult(task_id, TaskReport(task_id, category, status, **report), error=error)
